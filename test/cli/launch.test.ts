/**
 * The bytecode bundle of `generate` (api/cli/build-cli.ts) and the launcher that runs it only while it
 * matches its sources (api/cli/launch.ts): the bundle draws the same PNG bytes as the source CLI; a
 * stamp naming a changed file, another Bun, another format, or a bundle without its bytecode or
 * stamp is not run; and `bun run generate`'s command line works.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildCli, type SourcesStamp } from "../../api/cli/build-cli.ts";
import { freshBundle } from "../../api/cli/launch.ts";

const base = mkdtempSync(join(tmpdir(), "dg-launch-"));
// Builds and child processes: seconds on a busy 2-core machine, more than bun test's 5 s default.
setDefaultTimeout(60_000);
afterAll(() => rmSync(base, { recursive: true, force: true }));

const ARGS = ["--pipeline", "pipelines/tiny-sd.json", "--prompt", "red heart", "--steps", "3", "--seed", "5"];

describe("generate's bytecode bundle", () => {
  const out = join(base, "cli");
  let built: Awaited<ReturnType<typeof buildCli>>;

  test("builds, lists its sources, and draws the same bytes as the source CLI", async () => {
    built = await buildCli("generate", out);
    const stamp = JSON.parse(readFileSync(join(out, "generate.sources.json"), "utf8")) as SourcesStamp;
    const files = stamp.inputs.map(([f]) => f);
    expect(files).toContain("api/cli/generate.ts");
    expect(files).toContain("core/denoise.ts");
    expect(files.some((f) => f.startsWith("node_modules/zod/"))).toBe(true);
    expect(files.some((f) => f.includes("onnxruntime-node"))).toBe(false); // external: a native addon
    for (const f of ["package.json", "tsconfig.json"]) expect(files).toContain(f); // resolution and installed versions
    expect(freshBundle("generate", out)).toBe(built.bundle);

    // The bundle's main, required as the launcher does, against the source's main, in child processes.
    const viaBundle = join(base, "bundle.png");
    const viaSource = join(base, "source.png");
    const script = join(base, "run-bundle.ts");
    writeFileSync(script, `const { main } = require(${JSON.stringify(built.bundle)});\nprocess.exit(await main(process.argv.slice(2)));\n`);
    const a = Bun.spawnSync([process.execPath, script, ...ARGS, "--out", viaBundle], { stdout: "pipe", stderr: "pipe" });
    const b = Bun.spawnSync([process.execPath, "api/cli/generate.ts", ...ARGS, "--out", viaSource], { stdout: "pipe", stderr: "pipe" });
    expect(a.exitCode, a.stderr.toString()).toBe(0);
    expect(b.exitCode, b.stderr.toString()).toBe(0);
    expect(Buffer.compare(readFileSync(viaBundle), readFileSync(viaSource))).toBe(0);
  });

  test("a stamp that no longer matches is not run: a changed file, another Bun, another format, no bytecode, no stamp", () => {
    const stampFile = join(out, "generate.sources.json");
    const good = readFileSync(stampFile, "utf8");
    const stamp = JSON.parse(good) as SourcesStamp;
    const variants: [string, string | undefined][] = [
      ["a file of another size", JSON.stringify({ ...stamp, inputs: stamp.inputs.map(([f, s, m], i) => [f, i === 0 ? s + 1 : s, m]) })],
      ["a file of another mtime", JSON.stringify({ ...stamp, inputs: stamp.inputs.map(([f, s, m], i) => [f, s, i === 3 ? m - 1 : m]) })],
      ["a file gone", JSON.stringify({ ...stamp, inputs: [...stamp.inputs, ["core/no-such-file.ts", 1, 1]] })],
      ["another Bun", JSON.stringify({ ...stamp, bun: "0.0.1" })],
      ["built in another folder (the tree copied or moved since)", JSON.stringify({ ...stamp, root: "/elsewhere/diffgraph" })],
      ["another format", JSON.stringify({ ...stamp, format: "diffgraph-cli-bundle/0" })],
      ["no inputs", JSON.stringify({ ...stamp, inputs: [] })],
      ["not JSON", "{"],
      ["no stamp", undefined],
    ];
    try {
      for (const [why, text] of variants) {
        if (text === undefined) rmSync(stampFile);
        else writeFileSync(stampFile, text);
        expect(freshBundle("generate", out), why).toBeUndefined();
      }
      writeFileSync(stampFile, good);
      expect(freshBundle("generate", out)).toBe(built.bundle);
      rmSync(`${built.bundle}.jsc`);
      expect(freshBundle("generate", out), "no bytecode").toBeUndefined();
    } finally {
      writeFileSync(stampFile, good);
    }
  });

  test("`bun api/cli/launch.ts generate` (what `bun run generate` runs) passes the CLI its arguments; a bad name is refused", () => {
    const png = join(base, "launch.png");
    const p = Bun.spawnSync([process.execPath, "api/cli/launch.ts", "generate", ...ARGS, "--out", png], { stdout: "pipe", stderr: "pipe" });
    expect(p.exitCode, p.stderr.toString()).toBe(0);
    expect(p.stdout.toString()).toMatch(/wrote .*launch\.png: 1× 64×64 .*"red heart" — tiny-sd, .*3 steps, .*seed 5/);
    expect(Buffer.compare(readFileSync(png), readFileSync(join(base, "source.png")))).toBe(0);
    const launch = (name: string) => Bun.spawnSync([process.execPath, "api/cli/launch.ts", name], { stdout: "pipe", stderr: "pipe" });
    for (const [name, says] of [["../x", "usage: bun api/cli/launch.ts NAME"], ["nosuch", "launch: no CLI api/cli/nosuch.ts"], ["build-cli", "is not a CLI (it exports no main(argv))"]] as const) {
      const bad = launch(name);
      expect(bad.exitCode, name).toBe(2);
      expect(bad.stderr.toString(), name).toContain(says);
    }
    expect(JSON.parse(readFileSync("package.json", "utf8")).scripts.generate).toBe("bun api/cli/launch.ts generate");
  });
});
