/**
 * `bun bench/api.ts [--pipeline NAME] [--steps N] [--size PX] [--clients K] [--jobs J] [--concurrency C]`
 *
 * The API's live path, measured against a real server on a loopback port (same process, so the
 * server's step-end clock and the client's receive clock are the same `performance.now()`):
 *   1. frames/s delivered to one client and the added latency from a step's end in the pipeline to
 *      its event at the client (p50/p95/max), over SSE (graphql-sse) and WebSocket (graphql-ws);
 *   2. the same with K clients watching one job (fan-out);
 *   3. generation time of a job with no subscriber vs. with K subscribers that never read
 *      (a slow client must not slow generation);
 *   4. cross-job batching: jobs/s for J jobs submitted at once at concurrency 1 (baseline), at
 *      concurrency C with batching off, and at concurrency C with batching on (core/batcher.ts);
 *      beside it the ceiling, the same images as batchSize-4 jobs.
 * Writes bench/results/api.json; asserts nothing.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { GENERATE, PROGRESS, pipelineFolderWithBatching, sseTransport, startTestServer, wsTransport, type TestServer, type Transport } from "../test/api/helpers.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { pipeline: { type: "string" }, steps: { type: "string" }, clients: { type: "string" }, jobs: { type: "string" }, size: { type: "string" }, concurrency: { type: "string" } },
});
const steps = Number(values.steps ?? 50);
const clients = Number(values.clients ?? 8);
const jobsN = Number(values.jobs ?? 16);
const batchConcurrency = Number(values.concurrency ?? 4);
const pipeline = values.pipeline;
/** Larger images make slower steps: closer to a real model's pace than tiny-sd at 64×64. */
const size = values.size ? Number(values.size) : undefined;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");

const STEP_ONLY = PROGRESS.replace("jobId step", "jobId serverTime step");

async function generate(server: TestServer, input: Record<string, unknown> = {}): Promise<string> {
  const r = await server.gql(GENERATE, { input: { prompt: "benchmark", steps, scheduler: "ddim", ...(size ? { height: size, width: size } : {}), ...(pipeline ? { pipeline } : {}), ...input } });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.generate.id;
}

/** Hold the single slot with a long job until `fn` has subscribed, so the watched job's every step is seen. */
async function whileBusy<T>(server: TestServer, fn: (release: () => Promise<void>) => Promise<T>): Promise<T> {
  const blocker = await generate(server, { steps: 500 });
  const release = async () => void (await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: blocker }));
  try {
    return await fn(release);
  } finally {
    await release();
    await server.service.jobs.idle();
  }
}

interface LiveResult {
  transport: string;
  clients: number;
  framesPerClient: number;
  framesPerSecond: number;
  latencyMs: { p50: number; p95: number; max: number };
  dropped: number;
}

async function live(server: TestServer, make: () => Transport, k: number): Promise<LiveResult> {
  const transport = make();
  try {
    return await whileBusy(server, async (release) => {
      const id = await generate(server);
      const lat: number[] = [];
      const firstLast: [number, number][] = [];
      let frames = 0;
      let dropped = 0;
      let subscribed = 0;
      const all = Array.from({ length: k }, async () => {
        let first = 0;
        let last = 0;
        await transport.subscribe(server, STEP_ONLY, { id }, async (d) => {
          const e = d.jobProgress;
          const now = performance.now();
          if (e.__typename === "JobSnapshot" && ++subscribed === k) await release();
          if (e.__typename !== "JobStep") return;
          lat.push(now - e.serverTime);
          frames++;
          dropped += e.dropped;
          first ||= now;
          last = now;
        });
        firstLast.push([first, last]);
      });
      await Promise.all(all);
      const spans = firstLast.map(([a, b]) => (b - a) / 1000);
      const perClient = frames / k;
      return {
        transport: transport.name,
        clients: k,
        framesPerClient: perClient,
        framesPerSecond: (perClient - 1) / (spans.reduce((a, b) => a + b, 0) / spans.length),
        latencyMs: { p50: pct(lat, 50), p95: pct(lat, 95), max: Math.max(...lat) },
        dropped,
      };
    });
  } finally {
    transport.dispose();
  }
}

async function generationTime(server: TestServer, stalledReaders: number): Promise<number> {
  const id = await generate(server);
  const its = await Promise.all(Array.from({ length: stalledReaders }, async () => (await server.service.jobs.subscribe(id))![Symbol.asyncIterator]()));
  const t0 = performance.now();
  await server.service.jobs.idle();
  const ms = performance.now() - t0;
  for (const it of its) await it.return?.();
  return ms;
}

interface Throughput {
  jobsPerSecond: number;
  /** Model calls made for the measured jobs (job steps when batching is off). */
  modelCalls: number;
  jobSteps: number;
  /** The adaptive batcher's measured steps/s merging vs. calling separately, and its final choice. */
  adaptive?: { merge: number; separate: number; merging: boolean };
}

/**
 * Jobs/s for `jobsN` single-image jobs of 20 steps submitted at once. ONNX Runtime picks its own
 * thread count here (the server's default), so unbatched concurrent jobs may use every core.
 */
async function throughput(concurrency: number, batching: boolean): Promise<Throughput> {
  // the same pipeline file with batching on or off, the only difference
  const dir = pipelineFolderWithBatching(name, batching ? { maxRows: 64 } : false);
  const server = await startTestServer({ concurrency, maxQueue: jobsN + 1, threads: undefined, pipelinesDir: dir, defaultPipeline: name });
  try {
    for (let i = 0; i < concurrency; i++) await generate(server, { steps: 2, seed: 1000 + i }); // warm-up
    await server.service.jobs.idle();
    const stats = () => Object.values(server.service.pipelines.get(name)!.pipeline.nodeStats()).reduce((n, s) => n + (s.modelCalls ?? 0), 0);
    const before = stats();
    const t0 = performance.now();
    for (let i = 0; i < jobsN; i++) await generate(server, { seed: i, steps: 20 });
    await server.service.jobs.idle();
    const jobsPerSecond = jobsN / ((performance.now() - t0) / 1000);
    const s = Object.values(server.service.pipelines.get(name)!.pipeline.nodeStats())[0];
    return {
      jobsPerSecond,
      modelCalls: batching ? stats() - before : jobsN * 20,
      jobSteps: jobsN * 20,
      ...(s ? { adaptive: { merge: s.mergeStepsPerSecond!, separate: s.separateStepsPerSecond!, merging: s.merging === 1 } } : {}),
    };
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const server = await startTestServer({ concurrency: 1, subscriberBuffer: 64, ...(pipeline ? { defaultPipeline: pipeline } : {}) });
const name = pipeline ?? server.service.defaultPipeline;
console.log(`diffgraph API benchmark — pipeline ${name}${size ? ` at ${size}×${size}` : ""}, ${steps} steps (ddim), previews every step; host bun ${Bun.version}, ${navigator.hardwareConcurrency} cores\n`);
await generationTime(server, 0); // warm-up

const results: LiveResult[] = [];
for (const make of [sseTransport, wsTransport]) {
  for (const k of [1, clients]) results.push(await live(server, make, k));
}
console.log("transport              | clients | frames/client | frames/s per client | step end → client ms p50 / p95 / max | dropped");
for (const r of results) {
  console.log(
    `${r.transport.padEnd(22)} | ${String(r.clients).padStart(7)} | ${f(r.framesPerClient, 0).padStart(13)} | ${f(r.framesPerSecond).padStart(19)} | ${`${f(r.latencyMs.p50, 2)} / ${f(r.latencyMs.p95, 2)} / ${f(r.latencyMs.max, 2)}`.padStart(36)} | ${r.dropped}`,
  );
}

const alone = [] as number[];
const stalled = [] as number[];
for (let i = 0; i < 3; i++) {
  alone.push(await generationTime(server, 0));
  stalled.push(await generationTime(server, 20));
}
const med = (xs: number[]) => pct(xs, 50);
console.log(`\ngeneration of one ${steps}-step job: ${f(med(alone))} ms alone, ${f(med(stalled))} ms with 20 subscribers that never read (median of 3)`);
await server.close();

const base = await throughput(1, true); // one job at a time: nothing to merge
const unbatched = await throughput(batchConcurrency, false);
const batched = await throughput(batchConcurrency, true);
console.log(`\nthroughput, ${jobsN} single-image jobs of 20 steps submitted at once (ONNX Runtime threads: its default):`);
console.log(`  concurrency 1:                      ${f(base.jobsPerSecond, 2)} jobs/s (baseline)`);
console.log(`  concurrency ${batchConcurrency}, batching off:       ${f(unbatched.jobsPerSecond, 2)} jobs/s (×${f(unbatched.jobsPerSecond / base.jobsPerSecond, 2)})`);
console.log(`  concurrency ${batchConcurrency}, cross-job batching: ${f(batched.jobsPerSecond, 2)} jobs/s (×${f(batched.jobsPerSecond / base.jobsPerSecond, 2)}; ${batched.modelCalls} model calls for ${batched.jobSteps} job steps)`);
const ad = batched.adaptive;
if (ad) console.log(`    adaptive batcher measured ${f(ad.merge, 0)} steps/s merging vs ${f(ad.separate, 0)} separately; ends ${ad.merging ? "merging" : "calling separately"}`);
console.log(`  batching gain at concurrency ${batchConcurrency}: ×${f(batched.jobsPerSecond / unbatched.jobsPerSecond, 2)}`);
// For reference, the ceiling: the same images as batchSize-4 jobs (one noise-predictor call per step
// for 4 images, nobody waiting for anybody).
async function imagesPerSecond(batch: number): Promise<number> {
  const server = await startTestServer({ concurrency: 1, maxQueue: jobsN + 1, threads: undefined, ...(pipeline ? { defaultPipeline: pipeline } : {}) });
  try {
    await generate(server, { steps: 2, batchSize: batch });
    await server.service.jobs.idle();
    const t0 = performance.now();
    for (let i = 0; i < jobsN / batch; i++) await generate(server, { seed: i * batch, steps: 20, batchSize: batch });
    await server.service.jobs.idle();
    return jobsN / ((performance.now() - t0) / 1000);
  } finally {
    await server.close();
  }
}
const ips1 = await imagesPerSecond(1);
const ips4 = await imagesPerSecond(4);
console.log(`  ceiling: ${f(ips1, 2)} images/s as single-image jobs, ${f(ips4, 2)} images/s as batchSize-4 jobs (×${f(ips4 / ips1, 2)}), concurrency 1`);

mkdirSync("bench/results", { recursive: true });
writeFileSync(
  "bench/results/api.json",
  JSON.stringify({ pipeline: name, size: size ?? null, steps, live: results, generationMs: { alone: med(alone), with20StalledSubscribers: med(stalled) }, throughput: { jobs: jobsN, steps: 20, concurrency: batchConcurrency, concurrency1: base, unbatched, batched, batchingGain: batched.jobsPerSecond / unbatched.jobsPerSecond }, batchingCeilingImagesPerSecond: { batch1: ips1, batch4: ips4 } }, null, 2),
);
console.log("\nwrote bench/results/api.json");
