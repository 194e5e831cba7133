import { describe, expect, test } from "bun:test";
import { PredictBatcher } from "../../core/batcher.ts";
import { PluginRegistry } from "../../core/registry.ts";
import { definePlugin, type NoisePredictorInput, type NoisePredictorInstance } from "../../core/plugin.ts";
import { slice0, tensor, type Tensor } from "../../core/tensor.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { NodeCache } from "../../core/node-cache.ts";
import { fileSource } from "../../core/adapters/node.ts";
import onnxUnet from "../../plugins/noise-predictors/onnx-unet.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { maxAbsDiff, testRuntime, tinyDoc } from "../helpers.ts";

/**
 * A row-wise model: out = 2·sample + timestep[row] + ehs[row, 0]; calls can be held until released.
 * `perRow` false: a model with one timestep for the whole batch (it fails on differing ones).
 */
function fakeModel(maxBatch = Infinity, perRow = true) {
  const calls: { rows: number; timestep: number | number[] }[] = [];
  const held: (() => void)[] = [];
  let auto = true;
  let fail: Error | null = null;
  const model: NoisePredictorInstance = {
    maxBatch,
    perRowTimesteps: perRow,
    latentShape: () => [1, 1, 2],
    async predict({ sample, timestep, encoderHiddenStates }) {
      calls.push({ rows: sample.dims[0]!, timestep: typeof timestep === "number" ? timestep : [...timestep] });
      if (!perRow && typeof timestep !== "number") throw new Error("this model takes one timestep per batch");
      const tOf = (row: number) => (typeof timestep === "number" ? timestep : timestep[row]!);
      if (!auto) await new Promise<void>((r) => held.push(r));
      if (fail) throw fail;
      const per = sample.data.length / sample.dims[0]!;
      const eper = encoderHiddenStates.data.length / encoderHiddenStates.dims[0]!;
      const out = new Float32Array(sample.data.length);
      for (let i = 0; i < out.length; i++) out[i] = 2 * sample.data[i]! + tOf(Math.floor(i / per)) + encoderHiddenStates.data[Math.floor(i / per) * eper]!;
      return { dims: sample.dims, data: out };
    },
  };
  return {
    model,
    calls,
    hold: () => void (auto = false),
    release: () => {
      auto = true;
      for (const r of held.splice(0)) r();
    },
    failWith: (e: Error | null) => void (fail = e),
  };
}

function input(rows: number, value: number, timestep: number): NoisePredictorInput {
  const sample = tensor([rows, 1, 1, 2]);
  sample.data.fill(value);
  const ehs = tensor([rows, 3, 4]);
  for (let r = 0; r < rows; r++) ehs.data[r * 12] = 100 * (r + 1);
  return { sample, timestep, encoderHiddenStates: ehs };
}

/** What the fake model returns for `input(rows, value, t)`, computed directly. */
function expected(rows: number, value: number, t: number): number[] {
  return Array.from({ length: rows * 2 }, (_, i) => 2 * value + t + 100 * (Math.floor(i / 2) + 1));
}

const flushMicrotasks = () => new Promise<void>((r) => setTimeout(r, 0));

describe("PredictBatcher", () => {
  test("a run alone is never held back (even with a one-minute wait bound)", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const lane = b.join();
    const out = await lane.predict(input(2, 1, 5));
    expect([...out.data]).toEqual(expected(2, 1, 5));
    expect(m.calls).toEqual([{ rows: 2, timestep: 5 }]);
  });

  test("calls of several runs at the same timestep become one model call; each run gets its own rows", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const lanes = [b.join(), b.join(), b.join()];
    const outs = await Promise.all(lanes.map((l, k) => l.predict(input(2, k + 1, 7))));
    expect(m.calls).toEqual([{ rows: 6, timestep: 7 }]);
    outs.forEach((o, k) => {
      expect(o.dims).toEqual([2, 1, 1, 2]);
      expect([...o.data]).toEqual(expected(2, k + 1, 7));
    });
    expect(b.stats).toMatchObject({ calls: 3, modelCalls: 1, rows: 6, maxMerged: 3, merging: 1 });
  });

  test("runs at different timesteps share a call when the model takes one timestep per row", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const [a, c, d] = [b.join(), b.join(), b.join()];
    const outs = await Promise.all([a.predict(input(2, 1, 10)), c.predict(input(2, 2, 20)), d.predict(input(1, 3, 10))]);
    expect(m.calls).toEqual([{ rows: 5, timestep: [10, 10, 20, 20, 10] }]);
    expect([...outs[0]!.data]).toEqual(expected(2, 1, 10));
    expect([...outs[1]!.data]).toEqual(expected(2, 2, 20));
    // d's single row was row 4 of the merged call: its conditioning row and timestep went with it
    expect([...outs[2]!.data]).toEqual(expected(1, 3, 10));
  });

  test("with one timestep per batch, only equal timesteps (and shapes) merge; the rest run in the same flush", async () => {
    const m = fakeModel(Infinity, false);
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const [a, c, d, e] = [b.join(), b.join(), b.join(), b.join()];
    const wide = input(1, 4, 10);
    const outs = await Promise.all([
      a.predict(input(2, 1, 10)),
      c.predict(input(2, 2, 20)),
      d.predict(input(1, 3, 10)),
      e.predict({ ...wide, sample: tensor([1, 1, 2, 1], wide.sample.data) }),
    ]);
    expect(m.calls.map((x) => `${x.rows}@${x.timestep}`).sort()).toEqual(["1@10", "2@20", "3@10"]);
    expect([...outs[0]!.data]).toEqual(expected(2, 1, 10));
    expect([...outs[1]!.data]).toEqual(expected(2, 2, 20));
    expect([...outs[2]!.data]).toEqual(expected(1, 3, 10));
    expect(outs[3]!.dims).toEqual([1, 1, 2, 1]);
  });

  test("maxRows and the model's maxBatch split a flush into several calls", async () => {
    for (const [opts, maxBatch] of [[{ maxRows: 4 }, Infinity], [{ maxRows: 64 }, 4]] as const) {
      const m = fakeModel(maxBatch);
      // the third run waits for the first two to come back, up to maxWaitMs
      const b = new PredictBatcher(m.model, { ...opts, maxWaitMs: 5, adaptive: false });
      const lanes = [b.join(), b.join(), b.join()];
      const outs = await Promise.all(lanes.map((l, k) => l.predict(input(2, k, 3))));
      expect(m.calls.map((c) => c.rows)).toEqual([4, 2]);
      outs.forEach((o, k) => expect([...o.data]).toEqual(expected(2, k, 3)));
    }
  });

  test("a run that is busy elsewhere is waited for only up to maxWaitMs", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 5, adaptive: false });
    const a = b.join();
    b.join(); // joined, never calls
    expect([...(await a.predict(input(1, 1, 1))).data]).toEqual(expected(1, 1, 1));
    expect(m.calls).toHaveLength(1);
  });

  test("runs whose calls cannot merge (another image size) are not waited for", async () => {
    const held: (() => void)[] = [];
    const model: NoisePredictorInstance = {
      maxBatch: Infinity,
      perRowTimesteps: true,
      latentShape: () => [1, 1, 2],
      async predict({ sample }) {
        if (sample.dims[2] === 2) await new Promise<void>((r) => held.push(r)); // the big run's calls hang
        return { dims: sample.dims, data: new Float32Array(sample.data.length) };
      },
    };
    const b = new PredictBatcher(model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const small = b.join();
    const big = b.join();
    const bigInput = input(1, 0, 5);
    const first = small.predict(input(1, 0, 5)); // waits: the big run has made no call yet
    void big.predict({ ...bigInput, sample: tensor([1, 1, 2, 2]) });
    await first;
    // the big run's call is in flight with another shape: the small run goes on alone, at once
    for (let i = 0; i < 3; i++) await small.predict(input(1, 0, 4 - i));
    expect(b.stats.modelCalls).toBe(5);
    held.forEach((r) => r());
  });

  test("a fast run waits at most 1.5 of its own step periods for a slow one", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, adaptive: false });
    const fast = b.join();
    const slow = b.join();
    const order: string[] = [];
    const slowRun = (async () => {
      await slow.predict(input(1, 2, 9));
      await new Promise((r) => setTimeout(r, 1000)); // its own work between calls: 1 s
      order.push("slow step 2");
      await slow.predict(input(1, 2, 8));
      slow.leave();
    })();
    for (let t = 40; t > 0; t--) await fast.predict(input(1, 1, t));
    order.push("fast done");
    fast.leave();
    await slowRun;
    // 40 steps of a ~0 ms model finish long before the slow run's second step (before the fix the
    // wait grew with every step it spent waiting, and these 40 steps took seconds)
    expect(order).toEqual(["fast done", "slow step 2"]);
  });

  test("a run leaving its loop releases the others at once", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const a = b.join();
    const gone = b.join();
    const p = a.predict(input(1, 1, 1));
    await flushMicrotasks();
    expect(m.calls).toHaveLength(0); // held for the other run
    gone.leave();
    await p;
    expect(m.calls).toHaveLength(1);
  });

  test("cancelling a waiting call rejects it alone; it never reaches the model", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const [a, c, d] = [b.join(), b.join(), b.join()];
    const ac = new AbortController();
    const pa = a.predict(input(1, 1, 9), ac.signal);
    const pc = c.predict(input(1, 2, 9));
    await flushMicrotasks();
    ac.abort(new DOMException("cancelled by a client", "AbortError"));
    await expect(pa).rejects.toThrow("cancelled by a client");
    a.leave();
    const pd = d.predict(input(1, 3, 9));
    const [oc, od] = await Promise.all([pc, pd]);
    expect(m.calls).toEqual([{ rows: 2, timestep: 9 }]);
    expect([...oc.data]).toEqual(expected(1, 2, 9));
    expect([...od.data]).toEqual(expected(1, 3, 9));
    // an already-aborted signal fails before queueing
    await expect(d.predict(input(1, 1, 9), AbortSignal.abort())).rejects.toThrow();
  });

  test("a model error reaches every run of that call; the batcher keeps working", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const [a, c] = [b.join(), b.join()];
    m.failWith(new Error("bad model"));
    const r = await Promise.allSettled([a.predict(input(1, 1, 2)), c.predict(input(1, 2, 2))]);
    expect(r.map((x) => x.status)).toEqual(["rejected", "rejected"]);
    expect(r.map((x) => (x as PromiseRejectedResult).reason.message)).toEqual(["bad model", "bad model"]);
    m.failWith(null);
    const outs = await Promise.all([a.predict(input(1, 1, 2)), c.predict(input(1, 2, 2))]);
    expect([...outs[1]!.data]).toEqual(expected(1, 2, 2));
  });

  for (const perRow of [true, false]) {
    test(`runs that start out of phase: ${perRow ? "N steps each take N + 1 model calls, not 2N" : "one timestep per batch cannot merge them: 2N calls"}`, async () => {
      const m = fakeModel(Infinity, perRow);
      const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
      const N = 6;
      const loop = async (lane: ReturnType<PredictBatcher["join"]>, v: number) => {
        const seen: number[] = [];
        for (let t = N; t > 0; t--) seen.push((await lane.predict(input(2, v, t))).data[0]!);
        lane.leave();
        return seen;
      };
      m.hold();
      const a = b.join();
      const pa = loop(a, 1);
      await flushMicrotasks();
      expect(m.calls).toHaveLength(1); // A's first call is in flight
      const pb = loop(b.join(), 2); // B joins mid-call, at the first timestep
      await flushMicrotasks();
      m.release();
      const [sa, sb] = await Promise.all([pa, pb]);
      expect(m.calls).toHaveLength(perRow ? N + 1 : 2 * N);
      expect(b.stats.maxMerged).toBe(perRow ? 2 : 1);
      expect(sa).toEqual(Array.from({ length: N }, (_, i) => 2 + (N - i) + 100));
      expect(sb).toEqual(Array.from({ length: N }, (_, i) => 4 + (N - i) + 100));
    });
  }

  /** A model whose call takes `fixed + perRow·rows` ms; `serial`: one call at a time (one device). */
  function timedModel(fixed: number, perRow: number, serial: boolean): NoisePredictorInstance {
    let busy: Promise<void> = Promise.resolve();
    const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
    return {
      maxBatch: Infinity,
      perRowTimesteps: true,
      latentShape: () => [1, 1, 2],
      async predict({ sample }) {
        const ms = fixed + perRow * sample.dims[0]!;
        if (serial) {
          const prev = busy;
          let done!: () => void;
          busy = new Promise<void>((r) => (done = r));
          await prev;
          await sleep(ms);
          done();
        } else await sleep(ms);
        return { dims: sample.dims, data: new Float32Array(sample.data.length) };
      },
    };
  }

  async function runLanes(b: PredictBatcher, lanes: number, steps: number) {
    await Promise.all(
      Array.from({ length: lanes }, async (_, k) => {
        const lane = b.join();
        for (let t = steps; t > 0; t--) await lane.predict(input(2, k, t));
        lane.leave();
      }),
    );
  }

  test("adaptive: keeps merging when one device runs the calls one at a time (merging 4× faster here)", async () => {
    const b = new PredictBatcher(timedModel(12, 0.5, true), { maxRows: 64 });
    await runLanes(b, 4, 20);
    expect(b.stats.mergeStepsPerSecond).toBeGreaterThan(b.stats.separateStepsPerSecond);
    expect(b.stats.separateStepsPerSecond).toBeGreaterThan(0); // it did measure the other mode
    expect(b.currentMode).toBe("merge");
  });

  test("adaptive: calls separately when separate calls overlap and merged rows cost more (≈3× here)", async () => {
    const b = new PredictBatcher(timedModel(1, 3, false), { maxRows: 64 });
    await runLanes(b, 4, 20);
    expect(b.stats.separateStepsPerSecond).toBeGreaterThan(b.stats.mergeStepsPerSecond);
    expect(b.currentMode).toBe("separate");
    expect(b.stats.merging).toBe(0);
  });

  test("rejects a nonsensical row limit", () => {
    expect(() => new PredictBatcher(fakeModel().model, { maxRows: 0 })).toThrow(/maxRows/);
  });
});

/**
 * The tiny-sd pipeline (ddim) with its onnx-unet wrapped: `wrap` gets each call's input and the
 * inner predictor's call; `batching` and a node cache as given.
 */
async function wrappedTiny(
  wrap: (i: NoisePredictorInput, inner: (i: NoisePredictorInput) => Promise<Tensor>) => Promise<Tensor>,
  opts: { batching?: unknown; model?: string; cache?: NodeCache } = {},
) {
  const registry = new PluginRegistry([...builtinRegistry().list()]);
  registry.register(
    definePlugin({
      name: "wrapped-unet",
      kind: "noise-predictor",
      description: "onnx-unet with a test's wrapper around each call",
      configSchema: onnxUnet.configSchema,
      async create(config, ctx) {
        const inner = await onnxUnet.create(config, ctx);
        return {
          maxBatch: inner.maxBatch,
          perRowTimesteps: inner.perRowTimesteps,
          latentShape: inner.latentShape.bind(inner),
          predict: (i: NoisePredictorInput) => wrap(i, (x) => inner.predict(x)),
        };
      },
    }),
  );
  const doc = tinyDoc();
  doc.nodes.denoise.config.scheduler.use = "ddim"; // one call per step
  doc.nodes.denoise.config.noisePredictor.use = "wrapped-unet";
  if (opts.batching !== undefined) doc.nodes.denoise.config.batching = opts.batching;
  return Pipeline.load(doc, { registry, onnx: testRuntime(), models: fileSource(opts.model ?? "models/tiny-sd"), ...(opts.cache ? { cache: opts.cache } : {}) });
}

/** The tiny-sd pipeline with its UNet wrapped to count model calls and rows. */
async function countingTiny(batching: unknown, model = "models/tiny-sd") {
  const counts = { calls: 0, rows: 0 };
  const pipeline = await wrappedTiny(
    async (i, inner) => {
      counts.calls++;
      counts.rows += i.sample.dims[0]!;
      return inner(i);
    },
    { batching, model },
  );
  return { pipeline, counts };
}

describe("cross-run batching in the denoising loop (tiny-sd)", () => {
  const STEPS = 5;
  const jobs = [
    { prompt: "red heart", seed: 1 },
    { prompt: "blue star", seed: 2, guidanceScale: 3 },
    { prompt: "green tree", seed: 3, batchSize: 2 },
    { prompt: "a cat", seed: 4 },
  ];

  // A long wait bound makes the merging independent of machine speed: runs wait for each other.
  const PATIENT = { maxRows: 64, maxWaitMs: 10_000, adaptive: false };

  test("concurrent runs share model calls and give the images they give alone", async () => {
    const { pipeline, counts } = await countingTiny(PATIENT);
    const alone: Tensor[] = [];
    for (const j of jobs) alone.push((await pipeline.run({ ...j, steps: STEPS })).images);
    expect(counts.calls).toBe(jobs.length * STEPS);
    counts.calls = 0;
    const together = await Promise.all(jobs.map((j) => pipeline.run({ ...j, steps: STEPS })));
    // all four runs reach the loop at about the same time: far fewer model calls than 4 × steps
    expect(counts.calls).toBeLessThan(jobs.length * STEPS);
    expect(counts.calls).toBeGreaterThanOrEqual(STEPS);
    together.forEach((r, k) => {
      expect(r.images.dims).toEqual(alone[k]!.dims);
      expect(maxAbsDiff(r.images.data, alone[k]!.data)).toBeLessThan(1e-4);
    });
  });

  test("runs at different steps share calls through per-row timesteps (float [batch] timestep input)", async () => {
    const { pipeline, counts } = await countingTiny(PATIENT);
    const a = { prompt: "red heart", seed: 1, steps: 8 };
    const b = { prompt: "blue star", seed: 2, steps: 5, scheduler: "euler" };
    const alone = [(await pipeline.run(a)).images, (await pipeline.run(b)).images];
    counts.calls = 0;
    const together = await Promise.all([pipeline.run(a), pipeline.run(b)]);
    expect(counts.calls).toBeLessThan(8 + 5); // b's steps ride along a's
    together.forEach((r, k) => expect(maxAbsDiff(r.images.data, alone[k]!.data)).toBeLessThan(1e-4));
  });

  test("a model with one int64 timestep per batch (float16 export) still gives each run its own result", async () => {
    const { pipeline } = await countingTiny(undefined, "models/tiny-sd-fp16");
    const a = { prompt: "red heart", seed: 1, steps: 4 };
    const b = { prompt: "blue star", seed: 2, steps: 3 };
    const alone = [(await pipeline.run(a)).images, (await pipeline.run(b)).images];
    const together = await Promise.all([pipeline.run(a), pipeline.run(b)]);
    together.forEach((r, k) => expect(maxAbsDiff(r.images.data, alone[k]!.data)).toBeLessThan(1e-3));
  });

  test("with batching: false every run makes its own calls", async () => {
    const { pipeline, counts } = await countingTiny(false);
    await Promise.all(jobs.map((j) => pipeline.run({ ...j, steps: STEPS })));
    expect(counts.calls).toBe(jobs.length * STEPS);
  });

  test("cancelling one of several batched runs stops it alone", async () => {
    const { pipeline } = await countingTiny(undefined);
    const ac = new AbortController();
    let seen = 0;
    const runs = jobs.map((j, k) =>
      pipeline.run({ ...j, steps: STEPS }, k === 1 ? { signal: ac.signal, onEvent: (e) => e.type === "step" && ++seen === 2 && ac.abort() } : {}),
    );
    const settled = await Promise.allSettled(runs);
    expect(settled.map((s) => s.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    expect(seen).toBe(2);
    const again = await pipeline.run({ ...jobs[0]!, steps: STEPS });
    expect(maxAbsDiff(again.images.data, (settled[0] as PromiseFulfilledResult<any>).value.images.data)).toBeLessThan(1e-4);
  });

  test("a noise predictor that returns the wrong rows fails the run naming both shapes, guided or not; the pipeline still runs", async () => {
    let broken = true;
    // Drops its last row while broken.
    const pipeline = await wrappedTiny(async (i, inner) => {
      const out = await inner(i);
      return broken ? slice0(out, 0, out.dims[0]! - 1) : out;
    });
    await expect(pipeline.run({ prompt: "red heart", steps: 2, guidanceScale: 4 })).rejects.toThrow(/denoise: the noise predictor returned \[1,4,8,8\] for \[2,4,8,8\]/);
    await expect(pipeline.run({ prompt: "red heart", steps: 2, guidanceScale: 1, batchSize: 2 })).rejects.toThrow(/denoise: the noise predictor returned \[1,4,8,8\] for \[2,4,8,8\]/);
    broken = false;
    expect((await pipeline.run({ prompt: "red heart", steps: 2, guidanceScale: 4 })).images.dims[0]).toBe(1);
  });

  test("the loop feeds one sample buffer per run, refilled each step, and the same [uncond; cond] array to every run of one prompt", async () => {
    const calls: { sample: Float32Array; first: number; ehs: Float32Array }[] = [];
    const pipeline = await wrappedTiny(
      async (i, inner) => {
        calls.push({ sample: i.sample.data, first: i.sample.data[0]!, ehs: i.encoderHiddenStates.data });
        return inner(i);
      },
      { batching: false, cache: new NodeCache() },
    );
    const job = { prompt: "red heart", steps: 4, guidanceScale: 4, seed: 3 };
    calls.length = 0;
    const a = await pipeline.run(job);
    const first = calls.splice(0);
    expect(first).toHaveLength(4);
    expect(new Set(first.map((c) => c.sample)).size).toBe(1); // one buffer for the run's 4 steps
    expect(new Set(first.map((c) => c.first)).size).toBe(4); // refilled: each step's latents differ
    const b = await pipeline.run(job);
    const second = calls.splice(0);
    expect(second[0]!.sample).not.toBe(first[0]!.sample); // a new run, a new buffer
    expect(second[0]!.ehs).toBe(first[0]!.ehs); // the prompt's encodings came from the node cache: the same batch
    expect(maxAbsDiff(a.images.data, b.images.data)).toBe(0);
    await pipeline.run({ ...job, prompt: "blue star" });
    expect(calls[0]!.ehs).not.toBe(first[0]!.ehs);
    // Two runs at once: each has its own buffer, and each gets the images it gets alone.
    calls.length = 0;
    const [c, d] = await Promise.all([pipeline.run(job), pipeline.run({ ...job, seed: 4 })]);
    expect(new Set(calls.map((x) => x.sample)).size).toBe(2);
    expect(maxAbsDiff(c.images.data, a.images.data)).toBe(0);
    expect(maxAbsDiff(d.images.data, (await pipeline.run({ ...job, seed: 4 })).images.data)).toBe(0);
  });

  test("a bad batching config is refused naming the field", async () => {
    await expect(countingTiny({ maxRows: 0 })).rejects.toThrow(/batching\.maxRows/);
    await expect(countingTiny({ maxRows: 8, wait: 3 })).rejects.toThrow(/batching/);
  });
});

describe("PredictBatcher, a lone run (sent straight to the model, without the queue)", () => {
  test("counts its calls as any other; an aborted signal and a model error still reject; the model's output is handed on as it is", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, adaptive: true });
    const lane = b.join();
    for (let t = 0; t < 3; t++) expect([...(await lane.predict(input(2, 1, t))).data]).toEqual(expected(2, 1, t));
    expect(b.stats).toMatchObject({ calls: 3, modelCalls: 3, rows: 6, maxMerged: 1, merging: 1 });
    const ac = new AbortController();
    ac.abort(new Error("stop"));
    await expect(lane.predict(input(2, 1, 9), ac.signal)).rejects.toThrow("stop");
    m.failWith(new Error("model broke"));
    await expect(lane.predict(input(2, 1, 9))).rejects.toThrow("model broke");
    m.failWith(null);
    // No check of its own on this path (the denoising loop checks what it gets: the test below); the
    // merged path checks the rows it must split.
    const made: Tensor = { dims: [1, 1, 1, 2], data: Float32Array.of(3, 4) };
    const short: NoisePredictorInstance = { ...m.model, predict: async () => made };
    expect(await new PredictBatcher(short, { maxRows: 64 }).join().predict(input(2, 1, 1))).toBe(made);
    // A predictor that throws instead of rejecting still gives the lane a rejected promise.
    const throwing: NoisePredictorInstance = { ...m.model, predict: () => { throw new Error("sync fail"); } };
    const call = new PredictBatcher(throwing, { maxRows: 64 }).join().predict(input(2, 1, 1));
    await expect(call).rejects.toThrow("sync fail");
    lane.leave();
  });

  test("a run that joins while the lone run's call is in flight merges with its next call", async () => {
    const m = fakeModel();
    const b = new PredictBatcher(m.model, { maxRows: 64, maxWaitMs: 60_000, adaptive: false });
    const a = b.join();
    m.hold();
    const first = a.predict(input(2, 1, 5)); // alone: sent at once
    await flushMicrotasks();
    const c = b.join();
    const waiting = c.predict(input(2, 2, 6)); // waits for a, whose shape matches
    await flushMicrotasks();
    expect(m.calls).toEqual([{ rows: 2, timestep: 5 }]);
    m.release();
    expect([...(await first).data]).toEqual(expected(2, 1, 5));
    const next = a.predict(input(2, 3, 7));
    const [o1, o2] = await Promise.all([waiting, next]);
    expect(m.calls).toEqual([{ rows: 2, timestep: 5 }, { rows: 4, timestep: [6, 6, 7, 7] }]);
    expect([...o1.data]).toEqual(expected(2, 2, 6));
    expect([...o2.data]).toEqual(expected(2, 3, 7));
  });
});
