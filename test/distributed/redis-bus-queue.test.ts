/**
 * The Redis bus and the BullMQ queue in-process against a real redis-server: the embedded bus's
 * contract (snapshot, steps, one final event, a bounded lossy buffer per subscriber, return()) with
 * the publisher and the subscriber on different connections as two nodes would be, plus what only
 * the shared engines do (late subscribers on another node, preview frames in Redis, cancel requests,
 * priorities and the bound across queue instances, inputs through the queue).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Redis } from "ioredis";
import { RedisEventBus } from "../../api/adapters/redis-bus.ts";
import { BullJobQueue, redisConnection } from "../../api/adapters/redis-queue-bullmq.ts";
import { QueueFullError, type JobEvent, type JobRecord } from "../../api/ports.ts";
import { runBusTests } from "../api/bus.case.ts";
import { job } from "../api/store.case.ts";
import { HAS_REDIS, startRedis, type TestRedis } from "../redis-server.ts";

let redis: TestRedis;
let n = 0;
const closers: (() => Promise<unknown>)[] = [];
const bus = (prefix: string, buffer = 8) => {
  const b = new RedisEventBus(new Redis(redis.url), new Redis(redis.url), { prefix, subscriberBuffer: buffer });
  closers.push(() => b.close());
  return b;
};
const queue = (name: string, maxLength = 10, more: { lockMs?: number; maxStalledCount?: number } = {}) => {
  const q = new BullJobQueue({ connection: redisConnection(redis.url), name, maxLength, concurrency: 1, lockMs: 2000, ...more });
  closers.push(() => q.dispose());
  return q;
};
const rec = (patch: Partial<JobRecord> = {}): JobRecord => ({ ...job(), seq: 1, status: "RUNNING", startedAt: 5, ...patch }) as JobRecord;
const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 8, 0, 0, 0, 8]);
const frame = (jobId: string, step: number, previews = false) => ({
  jobId, node: "denoise", step, totalSteps: 50, timestep: 999 - step, elapsedMs: step, stepEndedAt: performance.now(), dropped: 0,
  previews: previews ? [{ id: `${jobId}-s${step}-0`, width: 8, height: 8, png }] : [],
});
async function collect(events: AsyncIterable<JobEvent>): Promise<JobEvent[]> {
  const out: JobEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}
const settle = () => Bun.sleep(100);

describe.skipIf(!HAS_REDIS)("Redis event bus and BullMQ queue", () => {
  beforeAll(async () => void (redis = await startRedis()));
  afterAll(async () => {
    for (const c of closers) await c().catch(() => {});
    await redis?.stop();
  });

  test("a subscriber on another node gets the snapshot (with the last frame), then steps in order, then one final event, and ends", async () => {
    const p = `b${++n}`;
    const worker = bus(p);
    const api = bus(p);
    const j = rec();
    await worker.state(j);
    worker.step(frame(j.id, 1, true));
    await settle();
    const events = (await api.subscribe(j.id))!;
    expect(events).not.toBeNull();
    const got = collect(events);
    await settle();
    for (let s = 2; s <= 4; s++) worker.step(frame(j.id, s));
    worker.finished({ ...j, status: "SUCCEEDED" });
    const all = await got;
    expect(all.map((e) => e.type)).toEqual(["snapshot", "step", "step", "step", "finished"]);
    const snap = all[0] as Extract<JobEvent, { type: "snapshot" }>;
    expect(snap.lastStep!.step).toBe(1);
    expect(snap.lastStep!.previews[0]!.png).toEqual(png);
    expect(all.filter((e) => e.type === "step").map((e) => (e as { step: number }).step)).toEqual([2, 3, 4]);
    // The step clock comes back in this process's performance.now() terms.
    expect(Math.abs((all[1] as { stepEndedAt: number }).stepEndedAt - performance.now())).toBeLessThan(5000);
    expect(await api.subscribe(j.id)).toBeNull();
    expect(await api.latest(j.id)).toBeNull();
  });

  test("latest state and preview frames are readable from any node; an unknown job has none", async () => {
    const p = `b${++n}`;
    const worker = bus(p);
    const api = bus(p);
    const j = rec();
    await worker.state({ ...j, step: 3 });
    worker.step(frame(j.id, 3, true));
    await settle();
    const l = await api.latest(j.id);
    expect(l!.job.step).toBe(3);
    expect(l!.lastStep!.step).toBe(3);
    const img = await api.previewImage(`${j.id}-s3-0`);
    expect(img).toMatchObject({ id: `${j.id}-s3-0`, width: 8, height: 8 });
    expect(img!.png).toEqual(png);
    expect(await api.previewImage(`${j.id}-s4-0`)).toBeNull();
    expect(await api.latest("f".repeat(24))).toBeNull();
    expect(await api.subscribe("f".repeat(24))).toBeNull();
  });

  runBusTests({
    newBuses: (buffer) => {
      const p = `b${++n}`;
      return { publisher: bus(p), subscriber: bus(p, buffer) };
    },
    settle,
  });

  test("a restarted run (re-delivered job) is delivered from its step 1; the snapshot's own step is not repeated", async () => {
    const p = `b${++n}`;
    const first = bus(p);
    const second = bus(p);
    const api = bus(p);
    const j = rec({ startedAt: 10 });
    await first.state(j);
    for (let s = 1; s <= 5; s++) first.step(frame(j.id, s));
    await settle();
    const got = collect((await api.subscribe(j.id))!);
    await settle();
    await second.state({ ...j, startedAt: 20, step: 0 });
    for (let s = 1; s <= 3; s++) second.step(frame(j.id, s));
    second.finished({ ...j, status: "SUCCEEDED" });
    const all = await got;
    expect((all[0] as Extract<JobEvent, { type: "snapshot" }>).lastStep!.step).toBe(5);
    expect(all.filter((e) => e.type === "step").map((e) => (e as { step: number }).step)).toEqual([1, 2, 3]);
    expect(all.filter((e) => e.type === "finished")).toHaveLength(1);
  });

  test("a cancel request reaches every node, and is kept for a worker that claims the job later", async () => {
    const p = `b${++n}`;
    const api = bus(p);
    const worker = bus(p);
    const heard: string[] = [];
    worker.onCancel((id) => heard.push(id));
    await settle();
    expect(await worker.cancelRequested("a".repeat(24))).toBe(false);
    await api.requestCancel("a".repeat(24));
    await settle();
    expect(heard).toEqual(["a".repeat(24)]);
    expect(await worker.cancelRequested("a".repeat(24))).toBe(true);
  });

  test("BullMQ queue: higher API priority first, FIFO within one, shared bound, positions and remove across instances, inputs travel", async () => {
    const name = `q${++n}`;
    const a = queue(name, 4);
    const b = queue(name, 4);
    await a.push("low", -5);
    await b.push("x1", 0);
    await a.push("high", 50, { image: { dims: [1, 3, 2, 2], data: Float32Array.from({ length: 12 }, (_, i) => i / 12) } });
    await b.push("x2", 0);
    expect(await a.length()).toBe(4);
    await expect(b.push("over", 100)).rejects.toBeInstanceOf(QueueFullError);
    expect(await b.position("high")).toBe(0);
    expect(await a.position("x1")).toBe(1);
    expect(await a.position("x2")).toBe(2);
    expect(await b.position("low")).toBe(3);
    expect(await b.remove("x2")).toBe(true);
    expect(await a.remove("x2")).toBe(false);
    expect(await a.position("low")).toBe(2);
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      const id = (await a.claim())!;
      order.push(id);
      if (id === "high") {
        const inputs = await a.inputs(id);
        expect(inputs!.image!.dims).toEqual([1, 3, 2, 2]);
        expect(inputs!.image!.data[6]).toBeCloseTo(0.5, 6);
      }
      // A claimed job is no longer waiting: remove refuses it.
      expect(await b.remove(id)).toBe(false);
      await a.complete(id);
    }
    expect(order).toEqual(["high", "x1", "low"]);
    expect(await b.length()).toBe(0);
  });

  test("BullMQ queue: a job whose worker stops renewing its lock is re-delivered; past maxStalledCount it is reported lost, not handed to a worker", async () => {
    const name = `q${++n}`;
    const dead = queue(name, 10, { lockMs: 600, maxStalledCount: 1 });
    await dead.push("j1", 0);
    expect(await dead.claim()).toBe("j1");
    // The worker dies without a word: its lock is no longer renewed (force-closed BullMQ worker).
    await (dead as unknown as { worker: { close(force: boolean): Promise<void> } }).worker.close(true);
    const survivor = queue(name, 10, { lockMs: 600, maxStalledCount: 1 });
    const lost: [string, string][] = [];
    survivor.onLost((id, reason) => lost.push([id, reason]));
    expect(await survivor.claim()).toBe("j1"); // stalled once: re-delivered (at-least-once)
    await (survivor as unknown as { worker: { close(force: boolean): Promise<void> } }).worker.close(true);
    const last = queue(name, 10, { lockMs: 600, maxStalledCount: 1 });
    last.onLost((id, reason) => lost.push([id, reason]));
    const next = last.claim();
    for (let i = 0; i < 100 && !lost.length; i++) await Bun.sleep(50);
    expect(lost).toEqual([["j1", expect.stringMatching(/stalled/)]]);
    expect(await Promise.race([next, Bun.sleep(300).then(() => "none")])).toBe("none");
  }, 30_000);
});
