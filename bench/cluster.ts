/**
 * `bun bench/cluster.ts [--pipeline emoji-64] [--jobs 32] [--steps 20] [--concurrency 4] [--latency-jobs 3] [--latency-steps 50]`
 *
 * The cost and the gain of the distributed mode, in one run, on one machine:
 *   - embedded: one process (`serve` without `--queue`), in this process;
 *   - 1 API + 1 worker: an API node (`--role api`) in this process and one `--role worker`
 *     process, on a redis-server started for the run;
 *   - 1 API + 2 workers: the same with two worker processes.
 * For each: jobs/s for `--jobs` single-image jobs of `--steps` steps submitted at once (no preview
 * frames; each worker runs `--concurrency` jobs at a time, sharing UNet calls), and the latency from
 * a step's end in the pipeline to its event at an SSE client (p50/p95), one job of
 * `--latency-steps` steps at a time with a frame every step. The step clock crosses processes as
 * wall-clock time (`performance.timeOrigin + performance.now()`), so the figures compare.
 * Beside them, the Redis hop alone: a step frame with a 64×64 preview published by one
 * `RedisEventBus` and received by a subscriber of another (two connections each, one process).
 * Writes bench/results/cluster.json; asserts nothing.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { RedisEventBus } from "../api/adapters/redis-bus.ts";
import { startServer, type RunningServer } from "../api/host-bun.ts";
import type { JobRecord } from "../api/ports.ts";
import { PROGRESS, sseTransport } from "../test/api/helpers.ts";
import { startRedis } from "../test/redis-server.ts";
import { pipelinesFolder, startServerProcess, type ServerProcess } from "../test/robustness/server-process.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    pipeline: { type: "string" },
    jobs: { type: "string" },
    steps: { type: "string" },
    concurrency: { type: "string" },
    "latency-jobs": { type: "string" },
    "latency-steps": { type: "string" },
  },
});
const pipeline = values.pipeline ?? "emoji-64";
const jobsN = Number(values.jobs ?? 32);
const steps = Number(values.steps ?? 20);
const concurrency = Number(values.concurrency ?? 4);
const latencyJobs = Number(values["latency-jobs"] ?? 3);
const latencySteps = Number(values["latency-steps"] ?? 50);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const STEP_ONLY = PROGRESS.replace("jobId step", "jobId serverTime step");

interface Gql {
  url: string;
  gql(query: string, variables?: Record<string, unknown>): Promise<any>;
}
const client = (url: string): Gql => ({
  url,
  async gql(query, variables) {
    const res = await fetch(`${url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query, variables }) });
    return res.json();
  },
});

async function generate(api: Gql, input: Record<string, unknown>): Promise<string> {
  const r = await api.gql("mutation($input: GenerateInput!) { generate(input: $input) { id } }", { input: { prompt: "red heart", pipeline, ...input } });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.generate.id;
}

async function waitAll(api: Gql, ids: string[]): Promise<void> {
  const left = new Set(ids);
  while (left.size) {
    for (const id of [...left]) {
      const j = (await api.gql(`{ job(id: "${id}") { status error } }`)).data.job;
      if (j.status === "SUCCEEDED") left.delete(id);
      else if (j.status === "FAILED" || j.status === "CANCELLED") throw new Error(`job ${id} ${j.status}: ${j.error}`);
    }
    if (left.size) await Bun.sleep(20);
  }
}

interface Result {
  config: string;
  jobsPerSecond: number;
  latencyMs: { p50: number; p95: number; n: number };
}

async function measure(config: string, api: Gql): Promise<Result> {
  // Warm-up: every worker slot runs a short job once (sessions, threads, the batcher's first measurement).
  await waitAll(api, await Promise.all(Array.from({ length: concurrency * 2 }, (_, i) => generate(api, { steps: 2, seed: 900 + i, previewEvery: 0 }))));
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < jobsN; i++) ids.push(await generate(api, { steps, seed: i, previewEvery: 0 }));
  await waitAll(api, ids);
  const jobsPerSecond = jobsN / ((performance.now() - t0) / 1000);

  const lat: number[] = [];
  const sse = sseTransport();
  try {
    for (let k = 0; k < latencyJobs; k++) {
      const id = await generate(api, { steps: latencySteps, seed: 100 + k });
      await sse.subscribe(api as never, STEP_ONLY, { id }, (d: any) => {
        const e = d.jobProgress;
        if (e.__typename === "JobStep") lat.push(performance.now() - e.serverTime);
      });
    }
  } finally {
    sse.dispose();
  }
  const r = { config, jobsPerSecond, latencyMs: { p50: pct(lat, 50), p95: pct(lat, 95), n: lat.length } };
  console.error(`${config}: ${f(jobsPerSecond, 2)} jobs/s, step → client p50 ${f(r.latencyMs.p50)} ms, p95 ${f(r.latencyMs.p95)} ms (${lat.length} frames)`);
  return r;
}

/** Publish → receive through Redis for `n` frames at `hz`, each with a preview PNG of `pngBytes`. */
async function redisHop(n = 300, hz = 100, pngBytes = 6000): Promise<{ p50: number; p95: number }> {
  const redis = await startRedis();
  const worker = new RedisEventBus(new Redis(redis.url), new Redis(redis.url));
  const api = new RedisEventBus(new Redis(redis.url), new Redis(redis.url));
  try {
    const id = "0".repeat(24);
    const job = { seq: 1, id, status: "RUNNING", pipeline, params: {}, priority: 0, createdAt: 0, startedAt: 1, finishedAt: null, error: null, errorCode: null, step: 0, totalSteps: n, metrics: {}, imageCount: 0 } as unknown as JobRecord;
    await worker.state(job);
    const lat: number[] = [];
    const events = (await api.subscribe(id))!;
    const got = (async () => {
      for await (const e of events) if (e.type === "step") lat.push(performance.now() - e.stepEndedAt);
    })();
    const png = crypto.getRandomValues(new Uint8Array(pngBytes));
    for (let s = 1; s <= n; s++) {
      worker.step({ jobId: id, node: "denoise", step: s, totalSteps: n, timestep: n - s, elapsedMs: 0, previews: [{ id: `${id}-s${s}-0`, width: 64, height: 64, png }], stepEndedAt: performance.now(), dropped: 0 });
      await Bun.sleep(1000 / hz);
    }
    worker.finished({ ...job, status: "SUCCEEDED" });
    await got;
    return { p50: pct(lat, 50), p95: pct(lat, 95) };
  } finally {
    await worker.close();
    await api.close();
    await redis.stop();
  }
}

const pipelines = pipelinesFolder([pipeline]);
const results: Result[] = [];
try {
  {
    const data = mkdtempSync(join(tmpdir(), "diffgraph-bench-embedded-"));
    const s: RunningServer = await startServer({ port: 0, pipelinesDir: pipelines, dataDir: data, concurrency, maxQueue: jobsN + 16, log: () => {} });
    try {
      results.push(await measure("embedded (1 process)", client(s.url)));
    } finally {
      await s.stop();
      rmSync(data, { recursive: true, force: true });
    }
  }
  for (const nWorkers of [1, 2]) {
    const redis = await startRedis();
    const data = mkdtempSync(join(tmpdir(), "diffgraph-bench-cluster-"));
    const workers: ServerProcess[] = [];
    let api: RunningServer | null = null;
    try {
      const q = ["--queue", redis.url];
      workers.push(...(await Promise.all(Array.from({ length: nWorkers }, () => startServerProcess({ dataDir: data, pipelinesDir: pipelines, args: [...q, "--role", "worker", "--concurrency", String(concurrency)] })))));
      api = await startServer({ port: 0, pipelinesDir: pipelines, dataDir: data, queueUrl: redis.url, role: "api", concurrency, maxQueue: jobsN + 16, log: () => {} });
      results.push(await measure(`1 API + ${nWorkers} worker${nWorkers > 1 ? "s" : ""}`, client(api.url)));
    } finally {
      await api?.stop();
      await Promise.all(workers.map((w) => w.stop()));
      await redis.stop();
      rmSync(data, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(pipelines, { recursive: true, force: true });
}

const hop = await redisHop();
console.error(`Redis hop alone: p50 ${f(hop.p50, 2)} ms, p95 ${f(hop.p95, 2)} ms`);
const base = results[0]!;
console.log(`\n${pipeline}, ${jobsN} jobs × ${steps} steps at once (concurrency ${concurrency} per process); latency: ${latencyJobs} jobs × ${latencySteps} steps, a frame every step, one SSE client\n`);
console.log("| configuration | jobs/s | vs embedded | step → client p50 / p95 ms | p50 vs embedded |");
console.log("|---|---|---|---|---|");
for (const r of results) {
  console.log(`| ${r.config} | ${f(r.jobsPerSecond, 2)} | ×${f(r.jobsPerSecond / base.jobsPerSecond, 2)} | ${f(r.latencyMs.p50)} / ${f(r.latencyMs.p95)} | ×${f(r.latencyMs.p50 / base.latencyMs.p50, 2)} |`);
}
console.log(`\nThe Redis hop alone (a step frame with a 6 kB preview, bus → bus at 100 frames/s): p50 ${f(hop.p50, 2)} ms, p95 ${f(hop.p95, 2)} ms.`);
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/cluster.json", JSON.stringify({ pipeline, jobs: jobsN, steps, concurrency, latencyJobs, latencySteps, cpus: navigator.hardwareConcurrency, results, redisHopMs: hop }, null, 2));
