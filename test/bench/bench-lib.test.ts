/** The benchmark's statistics and FLOP counting (bench/lib): deterministic, exact where it can be. */
import { describe, expect, test } from "bun:test";
import * as ort from "onnxruntime-node";
import { bootstrapInterval, median } from "../../bench/lib/stats.ts";
import { matmulModel, planFlops } from "../../bench/lib/onnx-flops.ts";
import { spansOf } from "../../bench/lib/ort-threads.ts";

describe("bench/lib", () => {
  test("median, and a seeded bootstrap interval that repeats and brackets the median", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    const xs = [1.01, 1.03, 0.99, 1.02, 1.05, 1.0, 1.04, 0.98, 1.01, 1.02];
    const a = bootstrapInterval(xs, median, { seed: 7 });
    expect(bootstrapInterval(xs, median, { seed: 7 })).toEqual(a);
    expect(a[0]).toBeLessThanOrEqual(median(xs));
    expect(a[1]).toBeGreaterThanOrEqual(median(xs));
    expect(a[0]).toBeGreaterThanOrEqual(Math.min(...xs));
  });

  test("the sgemm model runs in onnxruntime, and its FLOPs are counted as 2·m·k·n from a probed run", async () => {
    const [m, k, n] = [3, 5, 4];
    const bytes = matmulModel(m, k, n);
    const s = await ort.InferenceSession.create(bytes);
    const a = new ort.Tensor("float32", new Float32Array(m * k).fill(1), [m, k]);
    const out = (await s.run({ A: a })).C!;
    expect(out.dims).toEqual([m, n]);
    const plan = planFlops(bytes);
    expect(plan.counted).toEqual({ MatMul: 1 });
    const probe = await ort.InferenceSession.create(plan.probe);
    const probed = await probe.run({ A: a });
    expect(plan.flops((name) => (name === "A" ? a.dims : probed[name]!.dims))).toBe(2 * m * k * n);
  });

  test("the tiny-sd UNet's Conv/MatMul/Gemm FLOPs grow with the batch (shapes from the run, not the file)", async () => {
    const { readFileSync } = await import("node:fs");
    const plan = planFlops(new Uint8Array(readFileSync("models/tiny-sd/unet/model.onnx")));
    expect(plan.counted.Conv).toBeGreaterThan(0);
    const probe = await ort.InferenceSession.create(plan.probe, { graphOptimizationLevel: "disabled" });
    const ehsDim = (probe.inputMetadata.find((i) => i.name === "encoder_hidden_states") as unknown as { shape: readonly (number | string)[] }).shape[2] as number;
    const flops = async (b: number) => {
      const feeds = {
        sample: new ort.Tensor("float32", new Float32Array(b * 4 * 8 * 8), [b, 4, 8, 8]),
        timestep: new ort.Tensor("float32", new Float32Array(b).fill(10), [b]),
        encoder_hidden_states: new ort.Tensor("float32", new Float32Array(b * 77 * ehsDim), [b, 77, ehsDim]),
      };
      const out = await probe.run(feeds);
      return plan.flops((name) => ((feeds as Record<string, ort.Tensor>)[name] ?? out[name]!).dims as number[]);
    };
    const one = await flops(1);
    expect(one).toBeGreaterThan(0);
    expect(await flops(2)).toBeCloseTo(2 * one, 0);
  });
});

describe("bench/lib/ort-threads.ts (the overhead bench's two-sessions-at-once probe)", () => {
  const te = "models/tiny-sd/text_encoder/model.onnx";
  const unet = "models/tiny-sd/unet/model.onnx";
  const run = async (...args: string[]) => {
    const p = Bun.spawn([process.execPath, "bench/lib/ort-threads.ts", ...args], { env: { ...process.env, ORT_DISABLE_TELEMETRY: "1" }, stdout: "pipe", stderr: "pipe", timeout: 30_000 });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { code, out, err };
  };

  test("serial: two creations, the second after the first", async () => {
    const r = await run("serial", te, unet);
    expect(r.code).toBe(0);
    const [a, b] = spansOf(r.out) as [[number, number], [number, number]];
    expect(a[1]).toBeGreaterThan(a[0]);
    expect(b[0]).toBeGreaterThanOrEqual(a[1]);
    expect(b[1]).toBeGreaterThan(b[0]);
  }, 60_000);

  test("threads: one creation on each thread", async () => {
    const r = await run("threads", te, unet);
    expect(r.code).toBe(0);
    const s = spansOf(r.out);
    expect(s).toHaveLength(2);
    for (const [start, end] of s) expect(end).toBeGreaterThan(start);
  }, 60_000);

  test("process: waits for the agreed instant, then starts at once", async () => {
    const at = Date.now() + 2000; // well after its start (Bun, onnxruntime, the text encoder's session)
    const r = await run("process", te, unet, String(at));
    expect(r.code).toBe(0);
    const [[start]] = spansOf(r.out) as [[number, number]];
    // performance.timeOrigin + now() and Date.now() may differ by a millisecond or so.
    expect(start).toBeGreaterThanOrEqual(at - 5);
    expect(start - at).toBeLessThan(200);
  }, 60_000);

  test("a wrong mode or a missing instant is a usage error, exit 2", async () => {
    expect((await run("both", te, unet)).code).toBe(2);
    const r = await run("process", te, unet);
    expect(r.code).toBe(2);
    expect(r.err).toContain("usage:");
  }, 60_000);
});
