/**
 * One contract for every `JobStore` (as Hono's router suite runs one set of cases against every
 * router): `runStoreTests({ name, newStore })`. stores.test.ts runs it for the in-memory store and
 * SQLite through bun:sqlite and node:sqlite; durable stores also get the restart cases.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { INTERRUPTED_CODE, INTERRUPTED_REASON, type JobRecord, type JobStatus, type JobStore, type NewJobRecord } from "../../api/ports.ts";

export interface StoreUnderTest {
  readonly name: string;
  /** A store in `dir`; a durable store opened twice on one dir sees the same jobs. */
  newStore(dir: string): JobStore;
  readonly durable: boolean;
}

let n = 0;
export function job(patch: Partial<NewJobRecord> = {}): NewJobRecord {
  const id = (++n).toString(16).padStart(24, "0");
  return {
    id,
    status: "QUEUED",
    pipeline: "tiny-sd",
    params: { prompt: `p${n} “quoted” ✓`, negativePrompt: "", steps: 4, guidanceScale: 7.5, seed: n, batchSize: 1, height: 64, width: 64, strength: 0.8, scheduler: null, img2img: false, previewEvery: 1 },
    priority: 0,
    createdAt: 1_700_000_000_000 + n,
    startedAt: null,
    finishedAt: null,
    error: null,
    errorCode: null,
    step: 0,
    totalSteps: null,
    metrics: {},
    imageCount: 0,
    ...patch,
  };
}

const png = (k: number) => new Uint8Array([0x89, 0x50, 0x4e, 0x47, k, k + 1]);

export function runStoreTests(s: StoreUnderTest): void {
  const dirs: string[] = [];
  const fresh = () => {
    const dir = mkdtempSync(join(tmpdir(), "diffgraph-store-"));
    dirs.push(dir);
    return { dir, store: s.newStore(dir) };
  };
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  describe(`JobStore contract: ${s.name}`, () => {
    test("insert gives increasing seq; get returns every field as inserted; unknown ids are null", async () => {
      const { store } = fresh();
      const a = await store.insert(job());
      const b = await store.insert(job({ priority: 5, metrics: { "clip.score": 0.25 } }));
      expect(b.seq).toBeGreaterThan(a.seq);
      expect(await store.get(a.id)).toEqual(a);
      expect(await store.get(b.id)).toEqual(b);
      expect(await store.get("f".repeat(24))).toBeNull();
      await store.close();
    });

    test("update persists the mutable fields", async () => {
      const { store } = fresh();
      const a = await store.insert(job());
      const done: JobRecord = { ...a, status: "SUCCEEDED", startedAt: a.createdAt + 1, finishedAt: a.createdAt + 9, step: 4, totalSteps: 4, metrics: { "clip.score": 0.5 }, imageCount: 2 };
      await store.update(done);
      expect(await store.get(a.id)).toEqual(done);
      const failed = { ...done, status: "FAILED" as JobStatus, error: "the run failed: x", errorCode: "RUN_FAILED", imageCount: 0 };
      await store.update(failed);
      expect(await store.get(a.id)).toEqual(failed);
      await store.close();
    });

    test("page: newest first, cursor paging without gaps or repeats, status filter, total counts", async () => {
      const { store } = fresh();
      const all: JobRecord[] = [];
      for (let i = 0; i < 7; i++) all.push(await store.insert(job({ status: i % 3 === 0 ? "SUCCEEDED" : "QUEUED" })));
      const seen: string[] = [];
      let after: number | null = null;
      for (;;) {
        const p = await store.page(3, after, null);
        expect(p.totalCount).toBe(7);
        seen.push(...p.jobs.map((j) => j.id));
        if (!p.hasNextPage) break;
        after = p.jobs.at(-1)!.seq;
      }
      expect(seen).toEqual(all.map((j) => j.id).reverse());
      const ok = await store.page(10, null, ["SUCCEEDED"]);
      expect(ok.totalCount).toBe(3);
      expect(ok.jobs.map((j) => j.id)).toEqual(all.filter((j) => j.status === "SUCCEEDED").map((j) => j.id).reverse());
      expect(ok.hasNextPage).toBe(false);
      const two = await store.page(10, null, ["SUCCEEDED", "QUEUED"]);
      expect(two.totalCount).toBe(7);
      await store.close();
    });

    test("images round-trip; a missing image is null", async () => {
      const { store } = fresh();
      const a = await store.insert(job());
      await store.writeImages(a.id, [png(1), png(2)]);
      expect(await store.readImage(`${a.id}-0`)).toEqual(png(1));
      expect(await store.readImage(`${a.id}-1`)).toEqual(png(2));
      expect(await store.readImage(`${a.id}-2`)).toBeNull();
      await store.close();
    });

    test("recover fails unfinished jobs as INTERRUPTED and removes images no finished job claims", async () => {
      const { store } = fresh();
      const queued = await store.insert(job());
      const running = await store.insert(job({ status: "RUNNING", step: 3 }));
      const done = await store.insert(job());
      const cancelled = await store.insert(job({ status: "CANCELLED", errorCode: "CANCELLED", error: "by a client" }));
      await store.writeImages(done.id, [png(3)]);
      await store.update({ ...done, status: "SUCCEEDED", imageCount: 1 });
      await store.writeImages(running.id, [png(4), png(5)]); // written, record never committed
      expect(await store.recover()).toEqual({ interrupted: 2, orphanImages: 2 });
      for (const j of [queued, running]) {
        expect(await store.get(j.id)).toMatchObject({ status: "FAILED", error: INTERRUPTED_REASON, errorCode: INTERRUPTED_CODE });
      }
      expect((await store.get(running.id))!.step).toBe(3);
      expect(await store.get(cancelled.id)).toEqual(cancelled);
      expect(await store.readImage(`${done.id}-0`)).toEqual(png(3));
      expect(await store.readImage(`${running.id}-0`)).toBeNull();
      expect(await store.recover()).toEqual({ interrupted: 0, orphanImages: 0 });
      await store.close();
    });

    if (s.durable) {
      test("a reopened store keeps every record, its order and its images", async () => {
        const { dir, store } = fresh();
        const a = await store.insert(job());
        const b = await store.insert(job());
        await store.writeImages(b.id, [png(7)]);
        await store.update({ ...b, status: "SUCCEEDED", imageCount: 1 });
        await store.close();
        const again = s.newStore(dir);
        expect(await again.get(a.id)).toEqual(a);
        expect((await again.page(10, null, null)).jobs.map((j) => j.id)).toEqual([b.id, a.id]);
        expect(await again.readImage(`${b.id}-0`)).toEqual(png(7));
        const c = await again.insert(job());
        expect(c.seq).toBeGreaterThan(b.seq);
        await again.close();
      });
    }
  });
}
