/** The JobStore contract against the Redis store (records in a real redis-server, images in a folder). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Redis } from "ioredis";
import { imageFiles } from "../../api/adapters/image-files-node.ts";
import { RedisJobStore } from "../../api/adapters/redis-store.ts";
import { job, runStoreTests } from "../api/store.case.ts";
import { HAS_REDIS, startRedis, type TestRedis } from "../redis-server.ts";

let redis: TestRedis;
const open = (dir: string) => new RedisJobStore(new Redis(redis.url, { maxRetriesPerRequest: null }), imageFiles(join(dir, "images")), basename(dir));

describe.skipIf(!HAS_REDIS)("Redis store", () => {
  beforeAll(async () => void (redis = await startRedis()));
  afterAll(async () => redis?.stop());

  runStoreTests({ name: "Redis (ioredis)", newStore: open, durable: true });

  test("records survive a kill -9 of redis-server (AOF replayed on restart)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "diffgraph-aof-"));
    const a = open(dir);
    const r = await a.insert(job());
    await a.update({ ...r, status: "SUCCEEDED", step: 4 });
    await a.close();
    await redis.kill9();
    await redis.restart();
    const b = open(dir);
    expect(await b.get(r.id)).toEqual({ ...r, status: "SUCCEEDED", step: 4 });
    expect((await b.page(10, null, ["SUCCEEDED"])).jobs.map((j) => j.id)).toEqual([r.id]);
    await b.close();
  });

  test("finishOnce: the first finisher wins, a second writes nothing", async () => {
    const s = open(mkdtempSync(join(tmpdir(), "diffgraph-once-")));
    const r = await s.insert(job({ status: "RUNNING" }));
    expect(await s.finishOnce({ ...r, status: "SUCCEEDED", imageCount: 1 })).toBe(true);
    expect(await s.finishOnce({ ...r, status: "FAILED", error: "late" })).toBe(false);
    expect(await s.get(r.id)).toMatchObject({ status: "SUCCEEDED", error: null, imageCount: 1 });
    expect((await s.page(10, null, ["FAILED"])).totalCount).toBe(0);
    expect(await s.remove(r.id)).toBe(true);
    expect(await s.get(r.id)).toBeNull();
    expect((await s.page(10, null, null)).totalCount).toBe(0);
    await s.close();
  });
});
