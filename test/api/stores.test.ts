/** The JobStore contract against every store; the queue and bus contracts against the in-process engines. */
import { describe, expect, test } from "bun:test";
import { MemoryEventBus, MemoryJobQueue, MemoryJobStore } from "../../api/adapters/memory.ts";
import { openSqliteStore as openBunSqlite } from "../../api/adapters/sqlite-bun.ts";
import { openSqliteStore as openNodeSqlite } from "../../api/adapters/sqlite-node.ts";
import { QueueFullError, type JobEvent } from "../../api/ports.ts";
import { frame, rec, runBusTests } from "./bus.case.ts";
import { job, runStoreTests } from "./store.case.ts";

runStoreTests({ name: "memory", newStore: () => new MemoryJobStore(), durable: false });
runStoreTests({ name: "SQLite (bun:sqlite)", newStore: openBunSqlite, durable: true });
runStoreTests({ name: "SQLite (node:sqlite)", newStore: openNodeSqlite, durable: true });

test("bun:sqlite and node:sqlite read each other's database", async () => {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const dir = mkdtempSync(`${(await import("node:os")).tmpdir()}/diffgraph-both-`);
  try {
    const a = openBunSqlite(dir);
    const r = await a.insert(job());
    await a.close();
    const b = openNodeSqlite(dir);
    expect(await b.get(r.id)).toEqual(r);
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("MemoryJobQueue", () => {
  test("highest priority first, arrival order within a priority", async () => {
    const q = new MemoryJobQueue(10);
    for (const [id, p] of [["a", 0], ["b", 5], ["c", 0], ["d", 5], ["e", -1]] as const) await q.push(id, p);
    expect(await q.position("d")).toBe(1);
    const order = [];
    for (let i = 0; i < 5; i++) order.push(await q.claim());
    expect(order).toEqual(["b", "d", "a", "c", "e"]);
  });

  test("bounded: the push past maxLength rejects with QueueFullError and changes nothing", async () => {
    const q = new MemoryJobQueue(2);
    await q.push("a", 0);
    await q.push("b", 0);
    await expect(q.push("c", 9)).rejects.toBeInstanceOf(QueueFullError);
    expect(await q.length()).toBe(2);
    expect(await q.position("c")).toBeNull();
  });

  test("claim waits for a push; remove and clear take waiting jobs out; close wakes claimers with null", async () => {
    const q = new MemoryJobQueue(5);
    const waiting = q.claim();
    await q.push("x", 0);
    expect(await waiting).toBe("x");
    await q.push("y", 0);
    await q.push("z", 0);
    expect(await q.remove("y")).toBe(true);
    expect(await q.remove("y")).toBe(false);
    expect(await q.clear()).toEqual(["z"]);
    const blocked = q.claim();
    expect(await q.close()).toEqual([]);
    expect(await blocked).toBeNull();
    await expect(q.push("w", 0)).rejects.toBeInstanceOf(QueueFullError);
  });
});

describe("MemoryEventBus", () => {
  test("a subscriber gets the snapshot, then steps, then the final event, and ends", async () => {
    const bus = new MemoryEventBus(8);
    const j = rec();
    bus.state(j);
    bus.step(frame(j.id, 1));
    const events = bus.subscribe(j.id)!;
    bus.step(frame(j.id, 2));
    bus.finished({ ...j, status: "SUCCEEDED" });
    const got: JobEvent[] = [];
    for await (const e of events) got.push(e);
    expect(got.map((e) => e.type)).toEqual(["snapshot", "step", "finished"]);
    expect((got[0] as Extract<JobEvent, { type: "snapshot" }>).lastStep!.step).toBe(1);
    expect(bus.subscribe(j.id)).toBeNull();
    expect(bus.latest(j.id)).toBeNull();
  });

  runBusTests({ newBuses: (buffer) => { const bus = new MemoryEventBus(buffer); return { publisher: bus, subscriber: bus }; }, settle: async () => {} });
});
