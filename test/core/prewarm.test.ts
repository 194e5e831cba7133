/**
 * onnxruntime-node's environment made off the main thread (issue 13; `OnnxBackends.prewarm`,
 * core/adapters/ort-prewarm-node.ts): which runtimes start it, and that sessions created on the main
 * thread afterwards, in a fresh process, work and compute what they compute without it.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onnxBackends, prewarmNative } from "../../core/adapters/node.ts";
import { OnnxRuntime, type OnnxBackends, type OrtModuleLike } from "../../core/onnx.ts";

// Child processes that create real sessions: seconds on a busy 2-core machine.
setDefaultTimeout(60_000);

function counting(native = true): { backends: OnnxBackends; starts: () => number } {
  let n = 0;
  const fake = {} as OrtModuleLike;
  return {
    backends: { host: "bun", ...(native ? { native: async () => fake } : {}), web: async () => fake, prewarm: () => void n++ },
    starts: () => n,
  };
}

describe("prewarm: which runtimes start it", () => {
  test("a runtime that may use onnxruntime-node starts it (auto, cpu, webgpu); wasm, prewarm: false and a host without the native backend do not", () => {
    for (const executionProvider of ["auto", "cpu", "webgpu"] as const) {
      const c = counting();
      new OnnxRuntime({ backends: c.backends, executionProvider });
      expect(c.starts(), executionProvider).toBe(1);
    }
    const wasm = counting();
    new OnnxRuntime({ backends: wasm.backends, executionProvider: "wasm" });
    expect(wasm.starts()).toBe(0);
    const off = counting();
    new OnnxRuntime({ backends: off.backends, executionProvider: "cpu", prewarm: false });
    expect(off.starts()).toBe(0);
    const web = counting(false);
    new OnnxRuntime({ backends: web.backends, executionProvider: "auto" });
    expect(web.starts()).toBe(0);
  });

  test("the Bun adapter has it, and starts one worker per process (every call shares its promise)", async () => {
    expect(typeof onnxBackends.prewarm).toBe("function");
    const p = prewarmNative();
    expect(prewarmNative()).toBe(p);
    expect(await p).toBe(true);
  });
});

describe("prewarm: sessions after it", () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-prewarm-"));
  const child = join(dir, "child.ts");
  const root = process.cwd();
  // A fresh process, so the environment does not exist yet: with the worker first (it must make it and
  // leave it usable after it ends), or without; then the tiny-sd UNet on the main thread.
  writeFileSync(
    child,
    `import { fileSource, prewarmNative } from ${JSON.stringify(join(root, "core/adapters/node.ts"))};
import { onnxBackends } from ${JSON.stringify(join(root, "core/adapters/node.ts"))};
import { OnnxRuntime } from ${JSON.stringify(join(root, "core/onnx.ts"))};
const mode = process.argv[2];
// "warm": the worker first; "race": started, not waited for (the main thread's session meets its environment being made).
const started = mode === "cold" ? null : prewarmNative();
const ready = mode === "warm" ? await started : null;
const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", graphCache: false, prewarm: false, threads: 1 });
const m = await (await rt.load(fileSource(${JSON.stringify(join(root, "models/tiny-sd"))}), "unet/model.onnx", { role: "noise-predictor" })).ready();
const out = await m.run({
  sample: { dims: [1, 4, 8, 8], data: Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)) },
  timestep: { dims: [1], data: Float32Array.of(500) },
  encoder_hidden_states: { dims: [1, 77, 32], data: Float32Array.from({ length: 77 * 32 }, (_, i) => Math.cos(i / 7)) },
});
console.log(JSON.stringify({ ready: mode === "race" ? await started : ready, out: Array.from(out.out_sample!.data) }));
`,
  );
  const run = (arg: string) => {
    const r = Bun.spawnSync([process.execPath, child, arg], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    return JSON.parse(r.stdout.toString().trim().split("\n").at(-1)!) as { ready: boolean | null; out: number[] };
  };

  test("a main-thread session made after the worker made the environment and ended, or while it is making it, computes the same outputs as one without it", () => {
    try {
      const warm = run("warm");
      const race = run("race");
      const cold = run("cold");
      expect(warm.ready).toBe(true);
      expect(race.ready).toBe(true);
      expect(cold.ready).toBeNull();
      expect(warm.out.length).toBe(256);
      expect(warm.out).toEqual(cold.out);
      expect(race.out).toEqual(cold.out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
