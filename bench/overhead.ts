/**
 * `bun run bench [--pipeline FILE] [--steps N] [--providers cpu,wasm] [--runs R] [--blocks K]
 *   [--pause-ms MS] [--cold N] [--thread-rounds N] [--skip accounting,abba,roofline,cold,threads] [--json FILE]`
 *
 * What the framework costs per denoising step, and where a cold `generate` spends its time:
 *  (a) accounting inside a run: the denoise node's time outside the UNet's `session.run`, per part
 *      (the loop's `StepProfile`: setup, scheduler, guidance, events; the noise-predictor call split
 *      into batcher + onnx-unet feeds, the ONNX wrapper's conversions, and `session.run` itself),
 *      and, paired per run, the same run unprofiled against a bare loop: what the framework adds;
 *  (b) framework vs a bare `session.run` loop on the same session, as ABBA blocks (framework, bare,
 *      bare, framework) with a pause before each arm so the previous arm's spinning ORT threads
 *      are asleep; the per-block ratio's median with a seeded bootstrap 95 % interval;
 *  (d) the UNet's GFLOP/s (FLOPs counted from its ONNX graph, bench/lib/onnx-flops.ts) against a
 *      roofline measured in the same process: a MatMul model of comparable size through the same
 *      session options (loaded by the same OnnxRuntime); and the UNet's session as `generate` makes
 *      it (`pinShapes`: made for batch 2 and the prompt's tokens), timed in alternation with the
 *      bare loop's;
 *  (c) the cold CLI: `bun api/cli/launch.ts generate --timings` (`bun run generate`) spawned N times, its phases, and denoising's
 *      share of the process's wall time; interleaved with it, the floor (`bench/lib/cold-floor.ts`:
 *      the same work with no framework) and its share, and the CLI's wall time over the floor's;
 *  (e) two creations of the UNet's session at once, on two threads of one process and in two
 *      processes (`bench/lib/ort-threads.ts`), against one after the other: how much of a session's
 *      creation another thread can overlap, which bounds any cold start that spreads its sessions
 *      over threads (N rounds, default 6).
 * Prints markdown tables; asserts nothing (the numbers go in the README).
 */
import { parseArgs } from "node:util";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { createDiffgraph } from "../core/diffgraph.ts";
import { modelFolderOf } from "../core/diffgraph-core.ts";
import { graphCacheKey, OnnxRuntime, type ExecutionProvider, type OnnxModel, type OrtModuleLike, type OrtSessionLike, type OrtTensorLike } from "../core/onnx.ts";
import type { ModelSource } from "../core/model-source.ts";
import { emptyStepProfile, type StepProfile } from "../core/node.ts";
import type { Tensor } from "../core/tensor.ts";
import { builtinRegistry } from "../plugins/index.ts";
import { fileSource } from "../core/adapters/node.ts";
import type { CliTimings } from "../api/cli/phase-timings.ts";
import { freshBundle } from "../api/cli/launch.ts";
import { bootstrapInterval, median } from "./lib/stats.ts";
import { matmulModel, planFlops } from "./lib/onnx-flops.ts";
import { spansOf } from "./lib/ort-threads.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    pipeline: { type: "string" }, steps: { type: "string" }, providers: { type: "string" }, runs: { type: "string" },
    blocks: { type: "string" }, "pause-ms": { type: "string" }, cold: { type: "string" }, "thread-rounds": { type: "string" }, skip: { type: "string" }, json: { type: "string" },
  },
});
const pipelinePath = values.pipeline ?? (existsSync("models/emoji-64/unet/model.onnx") ? "pipelines/emoji-64.json" : "pipelines/tiny-sd.json");
const steps = Number(values.steps ?? 20);
const providers = (values.providers ?? "cpu,wasm").split(",") as ExecutionProvider[];
const runs = Number(values.runs ?? 24); // more pairs for the extra's interval (12 runs read [0.82, 1.04] and [0.69, 1.21] % here, 24 [0.57, 0.93] and [0.64, 0.89] %)
const blocks = Number(values.blocks ?? 16);
const pauseMs = Number(values["pause-ms"] ?? 250);
const coldRuns = Number(values.cold ?? 5);
const threadRounds = Number(values["thread-rounds"] ?? 6);
const skip = new Set((values.skip ?? "").split(",").filter(Boolean));
const report: Record<string, unknown> = { pipeline: pipelinePath, steps, startedAt: new Date().toISOString() };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const pct = (x: number, d = 2) => `${(100 * x).toFixed(d)} %`;

/**
 * OnnxModel's session and ORT module: the bare loop must call the very session the pipeline uses.
 * Private fields: OnnxModel keeps them as `session` and `ort`, or (sessions created on first use)
 * as `session: { session, ort }` once `ready()`.
 */
async function internals(model: OnnxModel): Promise<{ session: OrtSessionLike; ort: OrtModuleLike }> {
  await (model as { ready?: () => Promise<unknown> }).ready?.();
  const m = model as unknown as { session?: OrtSessionLike | { session: OrtSessionLike; ort: OrtModuleLike }; ort?: OrtModuleLike };
  const s = m.session;
  if (s && "ort" in s && "session" in s) return { session: s.session, ort: s.ort };
  if (!s || !m.ort) throw new Error("bench: OnnxModel keeps its session elsewhere now; update internals() in bench/overhead.ts");
  return { session: s as OrtSessionLike, ort: m.ort };
}

/** Replace `obj.run` by a timed wrapper adding to `acc.ms`; returns the undo (the prototype's run again). */
function timeRuns(obj: object, acc: { ms: number; calls: number }): () => void {
  const target = obj as { run: (...a: unknown[]) => Promise<unknown> };
  const run = target.run;
  target.run = async function (this: unknown, ...a: unknown[]) {
    const t0 = performance.now();
    try {
      return await run.apply(target, a);
    } finally {
      acc.ms += performance.now() - t0;
      acc.calls++;
    }
  };
  return () => void delete (target as { run?: unknown }).run;
}

const memorySource = (files: Record<string, Uint8Array>): ModelSource => {
  const src: ModelSource = {
    root: "bench:memory",
    read: async (p) => files[p] ?? Promise.reject(new Error(`${p}: not in memory`)),
    exists: async (p) => p in files,
    sub: () => src,
  };
  return src;
};

console.log(`diffgraph overhead benchmark — ${pipelinePath}, ${steps} steps, guidance 4 (batch 2 per UNet call)`);
console.log(`host ${"Bun" in globalThis ? `bun ${Bun.version}` : `node ${process.version}`}; ${navigator.hardwareConcurrency} cores; load average ${(await loadAverage()).join(" ")}\n`);

let flopsPerCall: number | undefined;
const perProvider: Record<string, unknown> = {};

for (const provider of providers) {
  const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: provider, log: () => {} });
  let pipeline;
  try {
    pipeline = await dg.openPipeline(pipelinePath);
  } catch (err) {
    console.log(`## ${provider}: unavailable (${(err as Error).message.slice(0, 160)})\n`);
    continue;
  }
  const modelDir = pipeline.doc.model ? modelFolderOf(pipelinePath, pipeline.doc.model) : pipelinePath;
  // The cached model the pipeline runs (the role is part of the cache key where sessions have thread roles).
  const unet = await dg.onnx.load(fileSource(modelDir), "unet/model.onnx", { role: "noise-predictor" });
  const { session, ort } = await internals(unet);
  const params = { prompt: "red heart", steps, seed: 7, guidanceScale: 4, scheduler: "ddim" };
  const first = await pipeline.run(params); // warm-up; encodes the prompt once (the node cache serves it after)
  await pipeline.run(params);
  const [, c, h, w] = (first.outputs.denoise!.latents as Tensor).dims as [number, number, number, number];
  const ehs = first.outputs.prompt!.embeddings as Tensor;
  const ehs2 = new Float32Array(ehs.data.length * 2);
  ehs2.set(ehs.data, 0);
  ehs2.set(ehs.data, ehs.data.length);
  const ehsT = new ort.Tensor("float32", ehs2, [2, ...ehs.dims.slice(1)]);
  const sampleData = new Float32Array(2 * c * h * w).fill(0.1);
  const ts = unet.input("timestep");
  const tsDims = ts.shape.length === 0 ? [] : ts.shape[0] === 1 ? [1] : [2];
  const tsLen = tsDims.length === 0 ? 1 : tsDims[0]!;
  const timestepT = (t: number): OrtTensorLike =>
    ts.type === "int64" ? new ort.Tensor("int64", new BigInt64Array(tsLen).fill(BigInt(t)), tsDims) : new ort.Tensor("float32", new Float32Array(tsLen).fill(t), tsDims);
  const bareFeeds = (t: number) => ({ sample: new ort.Tensor("float32", sampleData, [2, c, h, w]), timestep: timestepT(t), encoder_hidden_states: ehsT });
  /** The bare loop: what a hand-written program does, one session.run per step. ms per step. */
  const bare = async () => {
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await session.run(bareFeeds(999 - i * Math.floor(1000 / steps)));
    return (performance.now() - t0) / steps;
  };
  const framework = async (profile?: StepProfile, listen = false) => {
    const r = await pipeline.run(params, { ...(profile ? { profile } : {}), ...(listen ? { onEvent: () => {} } : {}) });
    return r.timings.denoise! / steps;
  };
  const result: Record<string, unknown> = { backend: unet.backend };
  perProvider[provider] = result;
  console.log(`## ${provider} (${unet.backend})\n`);

  // (a) Accounting inside one run.
  if (!skip.has("accounting")) {
    const rows: Record<string, number>[] = [];
    for (let r = 0; r < runs; r++) {
      await sleep(pauseMs);
      const sess = { ms: 0, calls: 0 };
      const wrapped = { ms: 0, calls: 0 };
      const undo = [timeRuns(session, sess), timeRuns(unet, wrapped)];
      const prof = emptyStepProfile();
      let denoise: number;
      try {
        denoise = (await framework(prof)) * steps;
      } finally {
        for (const u of undo) u();
      }
      // The same run unprofiled (no StepProfile laps, no wrapper on OnnxModel.run: only session.run
      // timed), and the bare loop with the same wrapper on the same session, in alternating order:
      // the framework's extra is its time outside session.run less the bare loop's, which a
      // hand-written program pays too (its await, its feeds' ORT tensors); paired per run.
      let plain = 0;
      let plainSess = 0;
      let bareStep = 0;
      let bareSessMs = 0;
      for (const arm of r % 2 ? ["bare", "plain"] : ["plain", "bare"]) {
        await sleep(pauseMs);
        const acc = { ms: 0, calls: 0 };
        const undoArm = timeRuns(session, acc);
        try {
          if (arm === "plain") {
            plain = (await framework()) * steps;
            plainSess = acc.ms;
          } else {
            bareStep = await bare();
            bareSessMs = acc.ms;
          }
        } finally {
          undoArm();
        }
      }
      const n = prof.steps;
      const us = (ms: number) => (1000 * ms) / n;
      const bareOutside = (1000 * (bareStep * steps - bareSessMs)) / steps;
      rows.push({
        bareStep: 1000 * bareStep,
        bareOutside,
        plainOutside: us(plain - plainSess),
        extra: us(plain - plainSess) - bareOutside,
        step: us(denoise),
        sessionRun: us(sess.ms),
        outside: us(denoise - sess.ms),
        setup: us(prof.setup),
        scheduler: us(prof.scheduler),
        guidance: us(prof.guidance),
        events: us(prof.events),
        yielding: us(prof.yielding),
        batcher: us(prof.predict - wrapped.ms),
        onnxWrapper: us(wrapped.ms - sess.ms),
        unaccounted: us(denoise - prof.setup - prof.scheduler - prof.guidance - prof.events - prof.yielding - prof.predict),
      });
    }
    // Step events are built only when something receives them: time them with a listener too.
    const listened: number[] = [];
    for (let r = 0; r < Math.ceil(runs / 2); r++) {
      await sleep(pauseMs);
      const prof = emptyStepProfile();
      await framework(prof, true);
      listened.push((1000 * prof.events) / prof.steps);
    }
    const col = (k: string) => rows.map((r) => r[k]!);
    const outside = col("outside");
    const ci = bootstrapInterval(outside);
    const fr = rows.map((r) => r.outside! / r.step!);
    const frCi = bootstrapInterval(fr);
    const parts: [string, string][] = [
      ["setup", "before the first step (timesteps, start noise, conditioning batch), per step"],
      ["scheduler", "abort check, scaleModelInput, scheduler.step"],
      ["guidance", "the 2-row batch, ε_u + w·(ε_c − ε_u)"],
      ["events", "step event (not built: no listener)"],
      ["yielding", "setTimeout(0) after each step of a blocking predictor (WASM), so the event loop serves I/O"],
      ["batcher", "batcher + onnx-unet's feeds (predict − OnnxModel.run)"],
      ["onnxWrapper", "OnnxModel.run around session.run (feeds to ORT tensors, outputs back)"],
      ["unaccounted", "the loop itself between the laps"],
    ];
    console.log(`(a) one run accounted (median of ${runs} runs, ${pauseMs} ms pause before each; µs per step)\n`);
    console.log("part | µs/step | what");
    console.log("---|---|---");
    for (const [k, what] of parts) console.log(`${k} | ${fmt(median(col(k)), 1)} | ${what}`);
    console.log(`(events with an onEvent listener) | ${fmt(median(listened), 1)} | the same run with a listener (the CLI's progress bar, the API): ${listened.length} runs`);
    console.log(`**outside session.run** | **${fmt(median(outside), 1)}** [${fmt(ci[0], 1)}, ${fmt(ci[1], 1)}] | denoise node − Σ UNet session.run; ${pct(median(fr))} [${pct(frCi[0])}, ${pct(frCi[1])}] of a step`);
    console.log(`session.run | ${fmt(median(col("sessionRun")), 1)} | the UNet (batch 2)`);
    const extra = col("extra");
    const exCi = bootstrapInterval(extra);
    const exFr = rows.map((r) => r.extra! / r.bareStep!);
    const exFrCi = bootstrapInterval(exFr);
    console.log(`\nthe same run without the profile's clocks (only session.run timed), against the bare loop (same wrapper, same session), paired per run, µs per step:\n`);
    console.log("measure | µs/step | what");
    console.log("---|---|---");
    console.log(`framework outside session.run | ${fmt(median(col("plainOutside")), 1)} | denoise node − Σ UNet session.run, unprofiled`);
    console.log(`bare loop outside session.run | ${fmt(median(col("bareOutside")), 1)} | its await and its feeds' ORT tensors, as a hand-written program pays them`);
    console.log(`**the framework's extra** | **${fmt(median(extra), 1)}** [${fmt(exCi[0], 1)}, ${fmt(exCi[1], 1)}] | the difference: **${pct(median(exFr))}** [${pct(exFrCi[0])}, ${pct(exFrCi[1])}] of a bare step\n`);
    result.accounting = { runs: rows, eventsWithListenerUs: listened, outsideMedianUs: median(outside), outsideCi: ci, outsideFraction: median(fr), outsideFractionCi: frCi, plainOutsideMedianUs: median(col("plainOutside")), extraMedianUs: median(extra), extraCi: exCi, extraFraction: median(exFr), extraFractionCi: exFrCi };
  }

  // (b) Framework vs bare, ABBA.
  let bareMs: number[] = [];
  if (!skip.has("abba")) {
    const ratios: number[] = [];
    const fw: number[] = [];
    for (let b = 0; b < blocks; b++) {
      const arm = async (f: () => Promise<number>) => {
        await sleep(pauseMs);
        return f();
      };
      const f1 = await arm(() => framework());
      const b1 = await arm(bare);
      const b2 = await arm(bare);
      const f2 = await arm(() => framework());
      ratios.push((f1 + f2) / (b1 + b2));
      fw.push(f1, f2);
      bareMs.push(b1, b2);
    }
    const ci = bootstrapInterval(ratios);
    const med = median(ratios);
    console.log(`(b) framework vs bare session.run loop: ${blocks} ABBA blocks, ${pauseMs} ms pause before each arm\n`);
    console.log("framework ms/step | bare ms/step | median ratio − 1 | 95 % bootstrap interval | steps/s");
    console.log("---|---|---|---|---");
    console.log(`${fmt(median(fw))} | ${fmt(median(bareMs))} | **${pct(med - 1)}** | [${pct(ci[0] - 1)}, ${pct(ci[1] - 1)}] | ${fmt(1000 / median(fw), 1)}\n`);
    result.abba = { ratios, frameworkMs: fw, bareMs, overhead: med - 1, interval: [ci[0] - 1, ci[1] - 1] };
  }

  // (d) GFLOP/s against the roofline.
  if (!skip.has("roofline")) {
    if (flopsPerCall === undefined) {
      const bytes = await fileSource(modelDir).read("unet/model.onnx");
      const plan = planFlops(bytes);
      const probe = await ort.InferenceSession.create(plan.probe, { executionProviders: [unet.provider], graphOptimizationLevel: "disabled" });
      const feeds = bareFeeds(500);
      const out = await probe.run(feeds);
      await probe.release();
      flopsPerCall = plan.flops((name) => ((feeds as Record<string, OrtTensorLike>)[name] ?? out[name]!).dims);
      report.unetGraph = { nodes: plan.nodes, counted: plan.counted, gflopPerCall: flopsPerCall / 1e9 };
    }
    if (bareMs.length === 0) {
      for (let i = 0; i < 6; i++) {
        await sleep(pauseMs);
        bareMs.push(await bare());
      }
    }
    const unetMs = median(bareMs);
    const n0 = Math.max(64, Math.round(Math.cbrt(flopsPerCall / 2) / 64) * 64);
    const roof: { n: number; ms: number; gflops: number }[] = [];
    for (const n of [n0, 1024]) {
      // The noise predictor's role: the same threads as the UNet under the thread policy.
      const mm = await dg.onnx.load(memorySource({ [`sgemm-${n}.onnx`]: matmulModel(n, n, n) }), `sgemm-${n}.onnx`, { role: "noise-predictor" });
      const a = { dims: [n, n], data: new Float32Array(n * n).fill(0.5) };
      for (let i = 0; i < 3; i++) await mm.run({ A: a });
      await sleep(pauseMs);
      const times: number[] = [];
      const { session: s } = await internals(mm);
      const feed = { A: new ort.Tensor("float32", a.data, a.dims) };
      for (let i = 0; i < 15; i++) {
        const t0 = performance.now();
        await s.run(feed);
        times.push(performance.now() - t0);
      }
      const ms = median(times);
      roof.push({ n, ms, gflops: (2 * n ** 3) / ms / 1e6 });
    }
    const best = Math.max(...roof.map((r) => r.gflops));
    const unetGflops = flopsPerCall / unetMs / 1e6;
    // The UNet's session as generate makes it (pinShapes: its symbolic axes fixed to this call's
    // sizes), its bare loop in alternation with the unpinned session's, so the machine's drift hits both.
    const pinnedRt = new OnnxRuntime({ backends: dg.adapter.onnxBackends, executionProvider: provider, pinShapes: true, log: () => {} });
    const pinnedModel = await pinnedRt.load(fileSource(modelDir), "unet/model.onnx", { role: "noise-predictor" });
    const int = ts.type === "int64" || ts.type === "int32";
    await pinnedModel.run({
      sample: { dims: [2, c, h, w], data: sampleData },
      timestep: int ? { dims: tsDims, ints: new Array<number>(tsLen).fill(500) } : { dims: tsDims, data: new Float32Array(tsLen).fill(500) },
      encoder_hidden_states: { dims: [2, ...ehs.dims.slice(1)], data: ehs2 },
    }); // its first run makes the session, for these sizes
    const { session: pinnedSession } = await internals(pinnedModel);
    const loop = async (s: OrtSessionLike) => {
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) await s.run(bareFeeds(999 - i * Math.floor(1000 / steps)));
      return (performance.now() - t0) / steps;
    };
    const pinnedRatios: number[] = [];
    const pinnedMs: number[] = [];
    const unpinnedMs: number[] = [];
    for (let i = 0; i < 16; i++) {
      await sleep(pauseMs);
      const [a, b] = i % 2 ? [await loop(pinnedSession), await loop(session)] : [await loop(session), await loop(pinnedSession)].reverse();
      pinnedMs.push(a!);
      unpinnedMs.push(b!);
      pinnedRatios.push(a! / b!);
    }
    await pinnedRt.dispose();
    const pinnedCi = bootstrapInterval(pinnedRatios);
    console.log(`(d) UNet ${fmt(flopsPerCall / 1e9, 3)} GFLOP per call (batch 2; 2 × MACs of Conv/MatMul/Gemm from the graph) in ${fmt(unetMs)} ms (bare loop median)\n`);
    console.log("model | ms | GFLOP/s | of roofline");
    console.log("---|---|---|---");
    for (const r of roof) console.log(`sgemm ${r.n}×${r.n}×${r.n} | ${fmt(r.ms)} | ${fmt(r.gflops, 1)} | ${pct(r.gflops / best, 0)}`);
    console.log(`**UNet** | ${fmt(unetMs)} | **${fmt(unetGflops, 1)}** | **${pct(unetGflops / best, 0)}**`);
    const pinnedGflops = flopsPerCall / median(pinnedMs) / 1e6;
    console.log(`**UNet, its session made for batch 2** (\`pinShapes\`, as \`generate\` makes it) | ${fmt(median(pinnedMs))} | **${fmt(pinnedGflops, 1)}** | **${pct(pinnedGflops / best, 0)}**\n`);
    console.log(`the session made for batch 2 against the unpinned one, ${pinnedRatios.length} alternating loops of ${steps} calls (medians ${fmt(median(pinnedMs))} and ${fmt(median(unpinnedMs))} ms): ×${fmt(median(pinnedRatios), 3)} [${fmt(pinnedCi[0], 3)}, ${fmt(pinnedCi[1], 3)}] per call\n`);
    result.roofline = { sgemm: roof, unetMs, unetGflops, fraction: unetGflops / best, pinned: { ms: pinnedMs, unpinnedMs, ratios: pinnedRatios, ratio: median(pinnedRatios), interval: pinnedCi, gflops: pinnedGflops, fraction: pinnedGflops / best } };
  }
  await dg.dispose();
}
report.providers = perProvider;

/**
 * The optimized graphs of emoji-64's text encoder, UNet and VAE decoder in diffgraph's graph cache
 * (after the CLI has run once), for the floor program; undefined for another model or an empty cache.
 */
async function floorGraphs(pipelineFile: string): Promise<string[] | undefined> {
  const { defaultGraphCacheDir, graphCacheId } = await import("../core/adapters/graph-cache-node.ts");
  const modelDir = join(pipelineFile, "..", (JSON.parse(readFileSync(pipelineFile, "utf8")) as { model?: string }).model ?? "");
  const cache = defaultGraphCacheDir();
  if (!cache || !modelDir.endsWith("emoji-64") || !existsSync(join(modelDir, "manifest.sha256.json"))) return undefined;
  const files = (JSON.parse(readFileSync(join(modelDir, "manifest.sha256.json"), "utf8")) as { files: Record<string, { sha256: string }> }).files;
  const ort = (await import("onnxruntime-node")) as unknown as OrtModuleLike;
  const out = [modelDir];
  // The graphs the CLI's sessions store (CPU provider, optimization "all"), each made for the sizes of
  // its first run (`pinShapes`): one prompt of 16 tokens, the 2-row guidance batch, one latent.
  const sizes: Record<string, Record<string, number>> = {
    "text_encoder/model.onnx": { batch: 1, sequence: 16 },
    "unet/model.onnx": { batch: 2, sequence: 16 },
    "vae_decoder/model.onnx": { batch: 1 },
  };
  for (const f of ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]) {
    const id = await graphCacheId(files[f]!.sha256, graphCacheKey(ort, "cpu", { graphOptimizationLevel: "all", freeDimensionOverrides: sizes[f] }));
    const path = join(cache, `${id}.onnx`);
    if (!existsSync(path)) return undefined;
    out.push(path);
  }
  return out;
}

/** Spawn `args` under this Bun; its stdout, and the epoch times of spawn and exit (ms). */
async function spawnRun(args: string[], env?: Record<string, string>): Promise<{ stdout: string; start: number; end: number }> {
  const start = performance.timeOrigin + performance.now();
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], ...(env ? { env: { ...process.env, ...env } } : {}) });
    let so = "";
    let se = "";
    p.stdout.on("data", (d) => (so += d));
    p.stderr.on("data", (d) => (se += d));
    p.on("close", (code) => resolve({ code, stdout: so, stderr: se }));
  });
  const end = performance.timeOrigin + performance.now();
  if (code !== 0) throw new Error(`${args[0]} failed (${code}): ${stderr.slice(-400)}`);
  return { stdout, start, end };
}

// (c) The cold CLI.
if (!skip.has("cold") && coldRuns > 0) {
  const dir = mkdtempSync(join(tmpdir(), "diffgraph-bench-"));
  const spawns: { wall: number; before: number; exit: number; t: CliTimings }[] = [];
  const floors: { wall: number; denoise: number; marks: Record<string, number> }[] = [];
  const bundled = freshBundle("generate") !== undefined;
  try {
    const cli = async (counted: boolean) => {
      const { stdout, start, end } = await spawnRun(["api/cli/launch.ts", "generate", "--prompt", "red heart", "--steps", String(steps), "--seed", "7", "--pipeline", pipelinePath, "--out", join(dir, "cold.png"), "--timings"]);
      const line = stdout.split("\n").find((l) => l.startsWith('{"timings"'));
      if (!line) throw new Error("generate --timings printed no timings");
      const t = (JSON.parse(line) as { timings: CliTimings }).timings;
      if (counted) spawns.push({ wall: end - start, before: t.timeOrigin - start, exit: end - (t.timeOrigin + t.marks.done!), t });
    };
    // One spawn first, not counted: it fills the optimized-graph cache and the OS file cache, as any
    // earlier use on this machine would have.
    await sleep(1000);
    await cli(false);
    const graphs = await floorGraphs(pipelinePath);
    // The floor turns onnxruntime's telemetry off as the CLI does (it imports onnxruntime-node directly).
    const runFloor = () => spawnRun(["bench/lib/cold-floor.ts", ...graphs!, String(steps), "4", String(navigator.hardwareConcurrency), join(dir, "floor.png")], { ORT_DISABLE_TELEMETRY: "1" });
    if (graphs) await runFloor(); // its file cache warm too
    for (let i = 0; i < coldRuns; i++) {
      // Interleaved, the order alternating, so a slow spell of the machine hits both alike.
      for (const arm of graphs && i % 2 === 1 ? ["floor", "cli"] : ["cli", "floor"]) {
        await sleep(1000);
        if (arm === "cli") await cli(true);
        else if (graphs) {
          const { stdout, start, end } = await runFloor();
          const marks = (JSON.parse(stdout.trim().split("\n").at(-1)!) as { floor: { marks: Record<string, number> } }).floor.marks;
          floors.push({ wall: end - start, denoise: marks.denoiseEnd! - marks.denoiseStart!, marks });
        }
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const phase = (f: (s: (typeof spawns)[number]) => number) => median(spawns.map(f));
  const unetSession = (s: (typeof spawns)[number]) => s.t.sessions.find((x) => x.file.endsWith("unet/model.onnx"));
  /** Session creation inside an interval (lazy loading moves it into the nodes that use the session). */
  const createdWithin = (s: (typeof spawns)[number], [a, b]: readonly [number, number]) => {
    // The union of the creation intervals clipped to [a, b] (sessions may be created concurrently).
    const ivs = s.t.sessions.map((x) => [Math.max(a, x.created[0]), Math.min(b, x.created[1])] as const).filter(([x, y]) => y > x).sort((p, q) => p[0] - q[0]);
    let total = 0;
    let end = -Infinity;
    for (const [x, y] of ivs) {
      if (y <= end) continue;
      total += y - Math.max(x, end);
      end = y;
    }
    return total;
  };
  const m = (s: (typeof spawns)[number]) => s.t.marks as Record<string, number>;
  const dn = (s: (typeof spawns)[number]) => s.t.nodes.denoise!;
  /** An interval's time less the sessions created in it (sessions are created on first use, inside the nodes). */
  const net = (s: (typeof spawns)[number], iv: readonly [number, number]) => iv[1] - iv[0] - createdWithin(s, iv);
  const denoise = (s: (typeof spawns)[number]) => net(s, dn(s));
  const after = (s: (typeof spawns)[number]) => Object.keys(s.t.nodes).filter((k) => s.t.nodes[k]![0] >= dn(s)[1]);
  const rows: [string, (s: (typeof spawns)[number]) => number][] = [
    ["process start (spawn → bun's time origin)", (s) => s.before],
    ["imports (→ main)", (s) => m(s).main!],
    ["createDiffgraph", (s) => m(s).created! - m(s).main!],
    ["open pipeline (read and check the files)", (s) => net(s, [m(s).created!, m(s).opened!])],
    ["model load (ONNX sessions created, wherever; list below)", (s) => createdWithin(s, [0, Infinity])],
    ["text encoding (run start → denoise start)", (s) => net(s, [m(s).runStart!, dn(s)[0]])],
    ["**denoising (the denoise node)**", denoise],
    ["decode (→ run end)", (s) => net(s, [dn(s)[1], m(s).ran!])],
    ["PNG encode + write", (s) => m(s).png! - m(s).ran!],
    ["the rest of main (→ it returns)", (s) => m(s).done! - m(s).png!],
    ["exit (→ process gone; the sessions are left to it)", (s) => s.exit],
  ];
  console.log(`(c) cold CLI: \`bun api/cli/launch.ts generate --prompt "red heart" --steps ${steps} --seed 7 --timings\` (what \`bun run generate\` runs; ${bundled ? "from its bytecode bundle" : "from source: dist/cli is missing or stale, \`bun run build:cli\`"}), ${coldRuns} spawns after one uncounted (graph and file caches warm), 1 s apart, median ms\n`);
  console.log("phase | ms | of wall");
  console.log("---|---|---");
  const wall = phase((s) => s.wall);
  for (const [name, f] of rows) console.log(`${name} | ${fmt(phase(f), 1)} | ${pct(phase(f) / wall, 1)}`);
  const frac = spawns.map((s) => denoise(s) / s.wall);
  const fracCi = bootstrapInterval(frac);
  console.log(`**wall** | **${fmt(wall, 1)}** | 100 %\n`);
  console.log(`denoising's share of the wall time: **${pct(median(frac), 1)}** [${pct(fracCi[0], 1)}, ${pct(fracCi[1], 1)}] (UNet session.run alone: ${pct(median(spawns.map((s) => (unetSession(s)?.runMs ?? 0) / s.wall)), 1)})`);
  console.log(`nodes after denoising: ${[...new Set(spawns.flatMap(after))].join(", ") || "none"}\n`);
  console.log("session created | ms (median) | where");
  console.log("---|---|---");
  const files = [...new Set(spawns.flatMap((s) => s.t.sessions.map((x) => x.file)))];
  for (const f of files) {
    const xs = spawns.flatMap((s) => s.t.sessions.filter((x) => x.file === f).map((x) => ({ ms: x.created[1] - x.created[0], at: x.created[0], s })));
    const where = (x: (typeof xs)[number]) =>
      x.at < m(x.s).opened! ? "open pipeline" : x.at < dn(x.s)[0] ? "text encoding" : x.at < dn(x.s)[1] ? "denoise node" : x.at < m(x.s).ran! ? "decode" : "after the run";
    console.log(`${f} | ${fmt(median(xs.map((x) => x.ms)), 1)} | ${[...new Set(xs.map(where))].join(", ")} (${xs.length}/${coldRuns} spawns)`);
  }
  console.log();
  let floor: Record<string, unknown> | undefined;
  if (floors.length) {
    const ff = floors.map((f) => f.denoise / f.wall);
    const fCi = bootstrapInterval(ff);
    const over = spawns.map((s, i) => s.wall - floors[i]!.wall);
    const overCi = bootstrapInterval(over);
    const fm = (k: string) => median(floors.map((f) => f.marks[k]!));
    console.log(`the floor (\`bench/lib/cold-floor.ts\`: the same work written straight against onnxruntime-node, same optimized graphs and threads, no framework), ${floors.length} spawns interleaved with the CLI's, median ms:\n`);
    console.log("floor phase | ms");
    console.log("---|---");
    for (const [name, a, b] of [["imports (→ main)", "", "main"], ["tokenizer + text encoder session + onnxruntime start", "main", "teLoaded"], ["text encoding", "teLoaded", "encoded"], ["UNet session", "encoded", "unetLoaded"], ["**denoising**", "denoiseStart", "denoiseEnd"], ["VAE session + decode", "denoiseEnd", "decoded"], ["PNG", "decoded", "png"]] as const)
      console.log(`${name} | ${fmt(median(floors.map((f) => f.marks[b]! - (a ? f.marks[a]! : 0))), 1)}`);
    console.log(`exit and process start | ${fmt(median(floors.map((f) => f.wall - f.marks.png!)), 1)}`);
    console.log(`**wall** | **${fmt(median(floors.map((f) => f.wall)), 1)}**\n`);
    console.log(`the floor's denoising share: **${pct(median(ff), 1)}** [${pct(fCi[0], 1)}, ${pct(fCi[1], 1)}]; the CLI's wall time over the floor's (paired): ${fmt(median(over), 1)} ms [${fmt(overCi[0], 1)}, ${fmt(overCi[1], 1)}]\n`);
    floor = { spawns: floors, denoiseFraction: median(ff), denoiseFractionCi: fCi, overMs: median(over), overMsCi: overCi, unetLoadMs: fm("unetLoaded") - fm("encoded") };
  } else console.log("(no floor: bench/lib/cold-floor.ts is written for emoji-64's shapes, and its optimized graphs must be in the graph cache)\n");
  report.cold = { bundled, spawns: spawns.map((s) => ({ wall: s.wall, before: s.before, exit: s.exit, timings: s.t })), denoiseFraction: median(frac), denoiseFractionCi: fracCi, wallMs: wall, ...(floor ? { floor } : {}) };
}

// (e) Two ONNX sessions created at once: on two threads of this process's kind, and in two processes.
if (!skip.has("threads") && threadRounds > 0) {
  const graphs = await floorGraphs(pipelinePath);
  if (!graphs) console.log("(e) skipped: it times emoji-64's optimized graphs from the graph cache (another pipeline has none it knows; for emoji-64, run (c) or `bun run generate` first)\n");
  else {
    const [, te, unet] = graphs as [string, string, string];
    const script = "bench/lib/ort-threads.ts";
    const env = { ORT_DISABLE_TELEMETRY: "1" };
    const makespan = (s: [number, number][]) => Math.max(...s.map((x) => x[1])) - Math.min(...s.map((x) => x[0]));
    const rows: { alone: number; serial: number; threads: number; threadEach: number; processes: number; processEach: number }[] = [];
    let late = 0;
    for (let r = 0; r <= threadRounds; r++) {
      const got: Record<string, [number, number][]> = {};
      let lateRound = false;
      // The three ways in a rotating order, so a slow spell of the machine does not always hit the same one.
      const order = ["serial", "threads", "process"];
      for (const how of [...order.slice(r % 3), ...order.slice(0, r % 3)]) {
        await sleep(500);
        if (how !== "process") got[how] = spansOf((await spawnRun([script, how, te, unet], env)).stdout);
        else {
          // Both processes start creating at the same epoch instant, well after either has started;
          // a round where one was not ready by then is not counted.
          const at = Date.now() + 1500;
          got.process = (await Promise.all([0, 1].map(() => spawnRun([script, "process", te, unet, String(at)], env)))).flatMap((p) => spansOf(p.stdout));
          lateRound = got.process.some(([start]) => start - at > 5);
        }
      }
      if (r === 0) continue; // the first round fills the OS file cache; not counted
      if (lateRound) {
        late++;
        continue;
      }
      const [serial, threads, procs] = [got.serial!, got.threads!, got.process!];
      rows.push({
        alone: serial[0]![1] - serial[0]![0],
        serial: makespan(serial),
        threads: makespan(threads),
        threadEach: median(threads.map((x) => x[1] - x[0])),
        processes: makespan(procs),
        processEach: median(procs.map((x) => x[1] - x[0])),
      });
    }
    const col = (k: keyof (typeof rows)[number]) => rows.map((x) => x[k]);
    const ratio = (k: "threads" | "processes") => {
      const rs = rows.map((x) => x[k] / x.serial);
      return { median: median(rs), ci: bootstrapInterval(rs) };
    };
    const th = ratio("threads");
    const pr = ratio("processes");
    console.log(`(e) the UNet's session created twice (its optimized graph from the cache, one intra-op thread, onnxruntime's environment made first), ${rows.length} rounds${late ? ` (${late} more left out: a process started late)` : ""}, median ms:\n`);
    console.log("how | each creation | both done (makespan) | makespan ÷ one after the other");
    console.log("---|---|---|---");
    console.log(`one after the other, one thread | ${fmt(median(col("alone")), 1)} (the first) | ${fmt(median(col("serial")), 1)} | 1`);
    console.log(`at once, two threads of one process (main + Worker) | ${fmt(median(col("threadEach")), 1)} | ${fmt(median(col("threads")), 1)} | **${fmt(th.median, 2)}** [${fmt(th.ci[0], 2)}, ${fmt(th.ci[1], 2)}]`);
    console.log(`at once, two processes | ${fmt(median(col("processEach")), 1)} | ${fmt(median(col("processes")), 1)} | **${fmt(pr.median, 2)}** [${fmt(pr.ci[0], 2)}, ${fmt(pr.ci[1], 2)}]`);
    console.log("\n(0.5 would be two cores fully used; 1 is no overlap at all)\n");
    report.threads = { rounds: rows, lateRounds: late, threadsOverSerial: th, processesOverSerial: pr };
  }
}

report.loadAverage = await loadAverage();
if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 1)}\n`);

async function loadAverage(): Promise<string[]> {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3);
  } catch {
    return ["?"];
  }
}
