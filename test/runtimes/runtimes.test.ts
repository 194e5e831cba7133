/**
 * The same pipeline on Node (bundled by Bun, run by node), Deno + onnxruntime-web WASM, and Deno +
 * onnxruntime-web WebGPU (Deno finds a CPU adapter on machines without a GPU) must give Bun/CPU's
 * image within 1e-3 per pixel (providers differ in kernel order, not in maths).
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { maxAbsDiff } from "../helpers.ts";
import { reportRow, TABLE } from "./determinism.ts";

interface Out { host: string; provider: string; steps: number; dims: number[]; data: number[]; logs: string[] }

function runJson(cmd: string[]): Out {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const line = p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
  if (p.exitCode !== 0 || !line) throw new Error(`${cmd.join(" ")} exited ${p.exitCode}: ${p.stderr.toString().slice(-2000)}`);
  return JSON.parse(line) as Out;
}

const bunRef = () => runJson([process.execPath, "test/runtimes/e2e-run.ts", "cpu"]);
const deno = "node_modules/.bin/deno";

describe("one pipeline, every runtime", () => {
  let ref: Out;
  test("Bun, native CPU (reference)", () => {
    ref = bunRef();
    expect(ref.host).toBe("bun");
    expect(ref.steps).toBe(4);
    expect(ref.dims).toEqual([1, 3, 64, 64]);
  });

  test("Node, native CPU", () => {
    const dir = mkdtempSync(join(tmpdir(), "diffgraph-node-"));
    const bundle = join(dir, "e2e.mjs");
    const externals = ["onnxruntime-node", "onnxruntime-web", "sharp", "@huggingface/tokenizers", "zod"].flatMap((e) => ["--external", e]);
    const b = Bun.spawnSync([process.execPath, "build", "test/runtimes/e2e-run.ts", "--target=node", "--format=esm", "--outfile", bundle, ...externals]);
    expect(b.exitCode).toBe(0);
    // Resolve the externals from this checkout's node_modules: run the bundle from inside the repo.
    const local = "test/runtimes/.e2e-node.mjs";
    Bun.spawnSync(["cp", bundle, local]);
    try {
      const out = runJson(["node", local, "cpu"]);
      expect(out.host).toBe("node");
      expect(maxAbsDiff(out.data, ref.data)).toBeLessThan(1e-3);
    } finally {
      Bun.spawnSync(["rm", "-f", local]);
    }
  }, 60_000);

  test.skipIf(!existsSync(deno))("Deno, onnxruntime-web WASM", () => {
    const out = runJson([deno, "run", "-A", "test/runtimes/e2e-run.ts", "wasm"]);
    expect(out.host).toBe("deno");
    expect(maxAbsDiff(out.data, ref.data)).toBeLessThan(1e-3);
  }, 120_000);

  test.skipIf(!existsSync(deno))("Deno, onnxruntime-web WebGPU", () => {
    const out = runJson([deno, "run", "-A", "test/runtimes/e2e-run.ts", "webgpu"]);
    expect(out.provider).toBe("webgpu");
    expect(maxAbsDiff(out.data, ref.data)).toBeLessThan(1e-3);
  }, 180_000);
});

describe("determinism table: emoji-64, one seed, every runtime (README)", () => {
  const env = { E2E_PIPELINE: TABLE.pipeline, E2E_INPUT: JSON.stringify(TABLE.input) };
  const runWith = (cmd: string[]) => {
    const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env, NO_COLOR: "1" } });
    const line = p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
    if (p.exitCode !== 0 || !line) throw new Error(`${cmd.join(" ")} exited ${p.exitCode}: ${p.stderr.toString().slice(-2000)}`);
    return JSON.parse(line) as Out & { ms: number; providersInUse: string[] };
  };
  let ref: Out & { ms: number };
  const row = (runtime: string, out: Out & { ms: number; providersInUse: string[] }, provider: string) => {
    expect(out.providersInUse).toEqual([provider]);
    const d = maxAbsDiff(out.data, ref.data);
    reportRow(runtime, provider.split("/")[1]!, d, out.ms / TABLE.input.steps);
    expect(d).toBeLessThan(TABLE.bound);
  };

  test("Bun, onnxruntime-node CPU (the reference) and onnxruntime-web WASM", () => {
    ref = runWith([process.execPath, "test/runtimes/e2e-run.ts", "cpu"]);
    expect(ref.steps).toBe(TABLE.input.steps);
    reportRow("bun", "cpu", 0, ref.ms / TABLE.input.steps);
    row("bun", runWith([process.execPath, "test/runtimes/e2e-run.ts", "wasm"]), "onnxruntime-web/wasm");
  }, 60_000);

  test("Node, onnxruntime-node CPU", () => {
    const local = "test/runtimes/.e2e-node.mjs";
    const externals = ["onnxruntime-node", "onnxruntime-web", "sharp", "@huggingface/tokenizers", "zod"].flatMap((e) => ["--external", e]);
    expect(Bun.spawnSync([process.execPath, "build", "test/runtimes/e2e-run.ts", "--target=node", "--format=esm", "--outfile", local, ...externals]).exitCode).toBe(0);
    try {
      const out = runWith(["node", local, "cpu"]);
      expect(out.host).toBe("node");
      row("node", out, "onnxruntime-node/cpu");
    } finally {
      Bun.spawnSync(["rm", "-f", local]);
    }
  }, 60_000);

  for (const provider of ["wasm", "webgpu"]) {
    test.skipIf(!existsSync(deno))(`Deno, onnxruntime-web ${provider}`, () => {
      const out = runWith([deno, "run", "-A", "test/runtimes/e2e-run.ts", provider]);
      expect(out.host).toBe("deno");
      row("deno", out, `onnxruntime-web/${provider}`);
    }, 180_000);
  }
});
