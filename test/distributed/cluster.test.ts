/**
 * The distributed mode against a real Redis: two API nodes (one on Bun, one on Deno) and two
 * workers (Bun), each a `serve --queue redis://… --role …` process sharing one data folder for
 * images. Any node answers for a job any worker runs; priorities, the queue bound and cancellation
 * hold across nodes; then the faults: kill -9 of a worker mid-job, of an API node while a client
 * watches, and of redis-server itself (AOF on).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "graphql-sse";
import { createRng } from "../../core/random.ts";
import { PROGRESS } from "../api/helpers.ts";
import { pipelinesFolder, startServerProcess, type ServerProcess } from "../robustness/server-process.ts";
import { HAS_REDIS, startRedis, type TestRedis } from "../redis-server.ts";

const LOCK_MS = 1500;
const ROUNDS = Number(process.env.CLUSTER_KILL_ROUNDS ?? 3);
const SEED = Number(process.env.CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`cluster crash seed ${SEED} (replay: CRASH_SEED=${SEED})`);
let redis: TestRedis;
let pipelines: string;
let data: string;
let apiBun: ServerProcess;
let apiDeno: ServerProcess;
const workers: ServerProcess[] = [];

const q = () => ["--queue", redis.url];
const startApi = (runtime: "bun" | "deno") =>
  startServerProcess({ runtime, dataDir: data, pipelinesDir: pipelines, args: [...q(), "--role", "api", "--max-queue", "6", ...(runtime === "deno" ? ["--provider", "wasm"] : [])] });
const startWorker = () => startServerProcess({ dataDir: data, pipelinesDir: pipelines, args: [...q(), "--role", "worker", "--concurrency", "2", "--lock-ms", String(LOCK_MS), "--provider", "cpu"] });

async function generate(node: ServerProcess, input: Record<string, unknown>): Promise<string> {
  const r = await node.gql("mutation($input: GenerateInput!) { generate(input: $input) { id status } }", { input: { prompt: "cluster", scheduler: "ddim", ...input } });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.generate.id;
}

const JOB = "id status step totalSteps error errorCode priority startedAt finishedAt images { id url } position";
async function job(node: ServerProcess, id: string): Promise<any> {
  const r = await node.gql(`query($id: ID!) { job(id: $id) { ${JOB} } }`, { id });
  if (r.errors) throw new Error(JSON.stringify(r.errors));
  return r.data.job;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}

const finished = (node: ServerProcess, id: string) => until(`job ${id} to finish`, async () => ((j) => (["SUCCEEDED", "FAILED", "CANCELLED"].includes(j.status) ? j : null))(await job(node, id)), 120_000);

/**
 * A jobProgress subscription over SSE; `events` fills as they come; `done` resolves when the stream
 * ends, or breaks (then `error` says why: a node killed under it).
 */
function watch(node: ServerProcess, id: string) {
  const client = createClient({ url: `${node.url}/graphql`, retryAttempts: 0 });
  const w = { events: [] as any[], error: null as Error | null, done: Promise.resolve() };
  w.done = (async () => {
    for await (const r of client.iterate({ query: PROGRESS, variables: { id } })) {
      if (r.errors) throw new Error(JSON.stringify(r.errors));
      w.events.push((r.data as any).jobProgress);
    }
  })()
    .catch((err) => void (w.error = err as Error))
    .finally(() => client.dispose());
  return w;
}

/** Which worker runs a job now (its /healthz counts running jobs). */
async function runner(): Promise<ServerProcess> {
  return until("a worker to run the job", async () => {
    for (const w of workers) {
      const h = await fetch(`${w.url}/healthz`).then((r) => r.json()).catch(() => null);
      if (h?.running > 0) return w;
    }
    return null;
  });
}

const stepsOf = (events: any[]) => events.filter((e) => e.__typename === "JobStep").map((e) => e.step);
const finals = (events: any[]) => events.filter((e) => e.__typename === "JobFinished");

describe.skipIf(!HAS_REDIS)("distributed mode: 2 API nodes (Bun, Deno) + 2 workers on one Redis", () => {
  beforeAll(async () => {
    redis = await startRedis();
    pipelines = pipelinesFolder(["tiny-sd"]);
    data = mkdtempSync(join(tmpdir(), "diffgraph-cluster-"));
    [apiBun, apiDeno] = await Promise.all([startApi("bun"), startApi("deno")]);
    workers.push(...(await Promise.all([startWorker(), startWorker()])));
  }, 180_000);

  afterAll(async () => {
    await Promise.all([apiBun, apiDeno, ...workers].filter(Boolean).map((s) => s.stop().catch(() => {})));
    await redis?.stop();
    for (const d of [pipelines, data]) if (d) rmSync(d, { recursive: true, force: true });
  });

  test("every node logs its role; a job submitted on Bun is watched on Deno and read on both", async () => {
    expect(apiBun.log()).toContain("role: api");
    expect(apiDeno.log()).toMatch(/host: Deno; queue: redis:\/\/127\.0\.0\.1:\d+, role: api/);
    for (const w of workers) expect(w.log()).toContain("role: worker");
    const id = await generate(apiBun, { steps: 150, seed: 3 });
    const w = watch(apiDeno, id);
    await w.done;
    expect(w.error).toBeNull();
    expect(w.events[0].__typename).toBe("JobSnapshot");
    const steps = stepsOf(w.events);
    // Joined before the first step or during the run: what follows the snapshot is in order, to the last step.
    expect(steps.at(-1)).toBe(150);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(finals(w.events)).toHaveLength(1);
    const fin = finals(w.events)[0].job;
    expect(fin).toMatchObject({ id, status: "SUCCEEDED", step: 150 });
    for (const node of [apiBun, apiDeno]) {
      expect(await job(node, id)).toMatchObject({ status: "SUCCEEDED", images: [{ id: `${id}-0` }] });
      const png = await fetch(`${node.url}/images/${id}-0.png`);
      expect(png.status).toBe(200);
      expect([...new Uint8Array(await png.arrayBuffer()).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
      const list = (await node.gql(`{ jobs(first: 5, status: [SUCCEEDED]) { totalCount edges { node { id } } } }`)).data.jobs;
      expect(list.edges.map((e: any) => e.node.id)).toContain(id);
    }
    // A preview frame a worker encoded is served, and inlined, by either API node.
    const frame = w.events.find((e) => e.__typename === "JobStep" && e.previews.length)!.previews[0];
    expect(frame.dataUrl).toStartWith("data:image/png;base64,");
    for (const node of [apiBun, apiDeno]) expect((await fetch(`${node.url}/images/${frame.id}.png`)).status).toBe(200);
  }, 120_000);

  test("img2img: the source travels with the queued job to the worker", async () => {
    const sharp = (await import("sharp")).default;
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer();
    const id = await generate(apiDeno, { steps: 10, strength: 0.5, image: `data:image/png;base64,${png.toString("base64")}` });
    const j = await finished(apiBun, id);
    expect(j.status).toBe("SUCCEEDED");
    expect(j.totalSteps).toBe(5); // strength 0.5 of 10 steps: the worker had the image
    const p = (await apiBun.gql(`{ job(id: "${id}") { params { img2img } } }`)).data.job.params;
    expect(p.img2img).toBe(true);
  }, 120_000);

  test("priorities, positions, the queue bound (QUEUE_FULL) and cancellation hold across nodes", async () => {
    // Four long jobs fill the four worker slots (2 workers × concurrency 2).
    const blockers: string[] = [];
    for (let i = 0; i < 4; i++) blockers.push(await generate(i % 2 ? apiBun : apiDeno, { steps: 990 }));
    await until("all four blockers to run", async () => (await Promise.all(blockers.map((b) => job(apiBun, b)))).every((j) => j.status === "RUNNING"));
    const low = await generate(apiBun, { steps: 50, priority: -5 });
    const mid = await generate(apiDeno, { steps: 50 });
    const high = await generate(apiBun, { steps: 50, priority: 50 });
    for (const node of [apiBun, apiDeno]) {
      expect((await job(node, high)).position).toBe(0);
      expect((await job(node, mid)).position).toBe(1);
      expect((await job(node, low)).position).toBe(2);
    }
    const extra: string[] = [await generate(apiDeno, { steps: 2 }), await generate(apiBun, { steps: 2 }), await generate(apiDeno, { steps: 2 })];
    // Six wait: the seventh is refused on either node, with the embedded mode's code and limit.
    for (const node of [apiBun, apiDeno]) {
      const r = await node.gql('mutation { generate(input: {prompt: "x", steps: 2}) { id } }');
      expect(r.errors?.[0].extensions).toMatchObject({ code: "QUEUE_FULL", limit: 6 });
    }
    // A queued job cancelled on the other node leaves the queue at once.
    const c = (await apiDeno.gql(`mutation { cancelJob(id: "${extra[1]!}") { status errorCode } }`)).data.cancelJob;
    expect(c).toEqual({ status: "CANCELLED", errorCode: "CANCELLED" });
    expect((await job(apiBun, extra[1]!)).position).toBeNull();
    // high, mid, extra[0], extra[2] (priority 0, in arrival order), then low (−5).
    expect((await job(apiBun, extra[2]!)).position).toBe(3);
    expect((await job(apiDeno, low)).position).toBe(4);
    // Running jobs cancelled on either node stop at their next step, on whichever worker runs them.
    // One slot frees first: the highest priority job takes it, the others still wait.
    await apiDeno.gql(`mutation { cancelJob(id: "${blockers[0]}") { id } }`);
    await until("the high-priority job to start", async () => (await job(apiBun, high)).status !== "QUEUED");
    expect((await job(apiDeno, mid)).position).toBe(0);
    expect((await job(apiBun, low)).status).toBe("QUEUED");
    for (const [i, b] of blockers.entries()) if (i) await (i % 2 ? apiDeno : apiBun).gql(`mutation { cancelJob(id: "${b}") { id } }`);
    for (const b of blockers) {
      const j = await finished(apiBun, b);
      expect(j).toMatchObject({ status: "CANCELLED", errorCode: "CANCELLED" });
      expect(j.step).toBeLessThan(990);
    }
    const done = await Promise.all([high, mid, low].map((id) => finished(apiDeno, id)));
    expect(done.map((j) => j.status)).toEqual(["SUCCEEDED", "SUCCEEDED", "SUCCEEDED"]);
    const cleared = (await apiBun.gql("mutation { clearQueue { id status } }")).data.clearQueue;
    for (const j of cleared) expect(j.status).toBe("CANCELLED");
    for (const id of [extra[0]!, extra[2]!]) expect(["SUCCEEDED", "CANCELLED"]).toContain((await finished(apiBun, id)).status);
  }, 180_000);

  test(`kill -9 of a worker mid-job, ${ROUNDS} rounds: the other worker takes its jobs over; each watcher sees one final event; records and images are written once`, async () => {
    const rng = createRng(SEED);
    for (let round = 0; round < ROUNDS; round++) {
      // Two jobs, watched on different nodes; the worker running the first dies at a random step.
      const steps = 300;
      const ids: string[] = [await generate(apiBun, { steps, batchSize: 2, seed: round })];
      const victim = await runner(); // the only job running: the victim runs the first job
      ids.push(await generate(apiDeno, { steps, seed: 100 + round }));
      const watchers = [watch(apiDeno, ids[0]!), watch(apiBun, ids[1]!)];
      const killAt = 3 + Math.floor(rng.uniform() * 60);
      await until(`step ${killAt}`, async () => (stepsOf(watchers[0]!.events).at(-1) ?? 0) >= killAt);
      await victim.kill9();
      workers.splice(workers.indexOf(victim), 1);
      const replacement = startWorker();
      await Promise.all(watchers.map((w) => w.done));
      for (const [k, w] of watchers.entries()) {
        const fin = finals(w.events);
        expect(fin).toHaveLength(1);
        expect(fin[0].job).toMatchObject({ id: ids[k], status: "SUCCEEDED", step: steps });
        expect(w.events.at(-1).__typename).toBe("JobFinished");
        // Within each run the steps rise; a run taken over starts again below where the victim stopped.
        const seen = stepsOf(w.events);
        const restarts = seen.filter((x, i) => i > 0 && x < seen[i - 1]!).length;
        expect(restarts).toBeLessThanOrEqual(1);
        expect(seen.at(-1)).toBe(steps);
      }
      expect(stepsOf(watchers[0]!.events).some((x, i, a) => i > 0 && x < a[i - 1]!)).toBe(true); // the killed run did restart
      for (const [k, id] of ids.entries()) {
        const n = k === 0 ? 2 : 1;
        expect((await job(apiBun, id!)).images.map((i: any) => i.id)).toEqual(Array.from({ length: n }, (_, i) => `${id}-${i}`));
        expect(readdirSync(join(data, "images")).filter((f) => f.startsWith(id!)).sort()).toEqual(Array.from({ length: n }, (_, i) => `${id}-${i}.png`));
      }
      workers.push(await replacement);
    }
  }, 600_000);

  test("SIGTERM of a worker mid-job: it hands the job back and the other worker runs it to the end", async () => {
    const id = await generate(apiDeno, { steps: 600, seed: 5 });
    const w = watch(apiBun, id);
    const leaving = await runner();
    await until("a few steps", async () => stepsOf(w.events).length >= 5);
    await leaving.stop();
    expect(leaving.log()).not.toContain(`job ${id} failed`);
    workers.splice(workers.indexOf(leaving), 1);
    const replacement = startWorker();
    await w.done;
    expect(finals(w.events)).toHaveLength(1);
    expect(finals(w.events)[0].job).toMatchObject({ id, status: "SUCCEEDED", step: 600, error: null });
    workers.push(await replacement);
  }, 180_000);

  test("kill -9 of an API node: a client that reconnects to the other node resumes from the current state", async () => {
    const spare = await startApi("bun");
    const id = await generate(apiDeno, { steps: 900 });
    const first = watch(spare, id);
    await until("steps on the first node", async () => stepsOf(first.events).length >= 3);
    const seen = stepsOf(first.events).at(-1)!;
    await spare.kill9();
    await first.done;
    expect(first.error).not.toBeNull(); // the stream broke with the node
    expect(finals(first.events)).toHaveLength(0);
    const second = watch(apiBun, id);
    await second.done;
    const snap = second.events[0];
    expect(snap.__typename).toBe("JobSnapshot");
    expect(snap.job.status).toBe("RUNNING");
    expect(snap.lastStep.step).toBeGreaterThanOrEqual(seen);
    expect(stepsOf(second.events)[0]).toBeGreaterThan(snap.lastStep.step);
    expect(finals(second.events)).toHaveLength(1);
    expect(finals(second.events)[0].job.status).toBe("SUCCEEDED");
  }, 180_000);

  test("kill -9 of redis-server (AOF on): every node reconnects, no finished job is lost, the interrupted job is retried or failed with a reason", async () => {
    const before = (await apiBun.gql("{ jobs(first: 100, status: [SUCCEEDED]) { totalCount edges { node { id } } } }")).data.jobs;
    const id = await generate(apiBun, { steps: 900 });
    const w = watch(apiDeno, id);
    await until("the job to run", async () => (await job(apiBun, id)).step > 3);
    await redis.kill9();
    // Down longer than a lock: the running job's lock has expired when Redis is back, so the stalled
    // check may give it to a second worker while the first still runs it.
    await Bun.sleep(LOCK_MS * 2);
    await redis.restart();
    const j = await finished(apiDeno, id);
    await w.done;
    expect(finals(w.events)).toHaveLength(1); // the watcher's node resubscribed and got the one final event
    expect(finals(w.events)[0].job.status).toBe(j.status);
    const seen = stepsOf(w.events);
    console.log(`redis kill -9: the job running then ended ${j.status}${j.error ? ` (${j.error})` : ""}; its watcher saw ${seen.filter((x, i) => i > 0 && x < seen[i - 1]!).length} restart(s)`);
    if (j.status === "FAILED") expect(j.errorCode).toBe("INTERRUPTED");
    else expect(j.status).toBe("SUCCEEDED");
    for (const node of [apiBun, apiDeno]) {
      const after = (await node.gql("{ jobs(first: 100, status: [SUCCEEDED]) { totalCount edges { node { id } } } }")).data.jobs;
      expect(after.totalCount).toBeGreaterThanOrEqual(before.totalCount);
      for (const e of before.edges) expect(after.edges.map((x: any) => x.node.id)).toContain(e.node.id);
    }
    // And the cluster still works: a new job on each node runs to the end.
    for (const node of [apiDeno, apiBun]) expect((await finished(node, await generate(node, { steps: 4 }))).status).toBe("SUCCEEDED");
    for (const s of [apiBun, apiDeno, ...workers]) expect(s.alive()).toBe(true);
  }, 240_000);

  test("BullMQ under Deno: a worker on Deno runs jobs and cancels, and the job of a Deno worker killed with -9 finishes on a Bun worker", async () => {
    const deno = await startServerProcess({ runtime: "deno", dataDir: data, pipelinesDir: pipelines, args: [...q(), "--role", "worker", "--concurrency", "2", "--lock-ms", String(LOCK_MS), "--provider", "wasm"] });
    expect(deno.log()).toMatch(/host: Deno; queue: .*role: worker/);
    // The Bun workers stop (SIGTERM, idle): only the Deno worker is left to claim.
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    const a = await generate(apiBun, { steps: 20 });
    expect(await finished(apiDeno, a)).toMatchObject({ status: "SUCCEEDED", step: 20 });
    const b = await generate(apiBun, { steps: 900 });
    await until("the Deno worker to run it", async () => (await job(apiBun, b)).step > 3);
    expect((await apiDeno.gql(`mutation { cancelJob(id: "${b}") { id } }`)).errors).toBeUndefined();
    expect(await finished(apiBun, b)).toMatchObject({ status: "CANCELLED", errorCode: "CANCELLED" });
    const c = await generate(apiDeno, { steps: 300 });
    const w = watch(apiBun, c);
    await until("the Deno worker to run it", async () => (await job(apiBun, c)).step > 3);
    workers.push(await startWorker());
    await deno.kill9();
    await w.done;
    expect(finals(w.events)).toHaveLength(1);
    expect(finals(w.events)[0].job).toMatchObject({ status: "SUCCEEDED", step: 300 });
  }, 240_000);
});
