/**
 * onnxruntime's telemetry is off unless the user chose (core/adapters/ort-telemetry-node.ts): a Bun
 * process that creates a session through diffgraph's node adapter leaves no telemetry database in its
 * home folder and no `/tmp/mat-debug-<pid>.log`; the same process with `ORT_DISABLE_TELEMETRY=0` (the
 * user keeps telemetry on) writes both, which shows the check can see them. Linux only: that is where
 * onnxruntime-node 1.30 keeps them.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ortTelemetryOff } from "../../core/adapters/ort-telemetry-node.ts";

const base = mkdtempSync(join(tmpdir(), "dg-telemetry-"));
// Builds and child processes: seconds on a busy 2-core machine, more than bun test's 5 s default.
setDefaultTimeout(60_000);
afterAll(() => rmSync(base, { recursive: true, force: true }));

const script = join(base, "create.ts");
writeFileSync(
  script,
  `import { onnxBackends } from ${JSON.stringify(resolve("core/adapters/node.ts"))};
const ort = await onnxBackends.native();
await ort.InferenceSession.create(${JSON.stringify(resolve("models/tiny-sd/vae_decoder/model.onnx"))});
console.log(JSON.stringify({ pid: process.pid, variable: process.env.ORT_DISABLE_TELEMETRY ?? null }));
`,
);

const scriptJs = join(base, "create-js-env.ts");
writeFileSync(scriptJs, `process.env.ORT_DISABLE_TELEMETRY = "1"; // set from JavaScript, as a Bun user might
await import(${JSON.stringify(script)});
`);

function run(home: string, variable?: string, entry = script) {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "", HOME: home };
  if (variable !== undefined) env.ORT_DISABLE_TELEMETRY = variable;
  const p = Bun.spawnSync([process.execPath, entry], { env, stdout: "pipe", stderr: "pipe" });
  if (p.exitCode !== 0) throw new Error(`child failed: ${p.stderr.toString()}`);
  const out = JSON.parse(p.stdout.toString().trim().split("\n").at(-1)!) as { pid: number; variable: string | null };
  const db = join(home, ".cache", "Microsoft", "DeveloperTools", ".onnxruntime", "onnxruntime.db");
  const log = `/tmp/mat-debug-${out.pid}.log`;
  const seen = { db: existsSync(db), log: existsSync(log), variable: out.variable };
  rmSync(log, { force: true });
  return seen;
}

describe.skipIf(process.platform !== "linux")("onnxruntime telemetry", () => {
  test("off by default: no telemetry database, no /tmp/mat-debug log; the variable is set to 1", () => {
    const seen = run(mkdtempSync(join(base, "home-")));
    expect(seen).toEqual({ db: false, log: false, variable: "1" });
  });

  test("ORT_DISABLE_TELEMETRY=0 is the user's choice and is kept (and then onnxruntime writes both)", () => {
    const seen = run(mkdtempSync(join(base, "home-")), "0");
    expect(seen).toEqual({ db: true, log: true, variable: "0" });
  });

  test("a value the user set from JavaScript (Bun's process.env, which getenv does not see) still reaches onnxruntime", () => {
    const seen = run(mkdtempSync(join(base, "home-")), undefined, scriptJs);
    expect(seen).toEqual({ db: false, log: false, variable: "1" });
  });

  test("the rule on an environment object: a value already set is kept, an unset one becomes 1", async () => {
    const chosen: Record<string, string | undefined> = { ORT_DISABLE_TELEMETRY: "yes" };
    expect(await ortTelemetryOff(chosen)).toBe("user");
    expect(chosen.ORT_DISABLE_TELEMETRY).toBe("yes");
    const unset: Record<string, string | undefined> = {};
    expect(await ortTelemetryOff(unset)).toBe("set");
    expect(unset.ORT_DISABLE_TELEMETRY).toBe("1");
  });
});
