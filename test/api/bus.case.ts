/**
 * What every `EventBus` owes a subscriber, one set of cases for each engine (as store.case.ts does for
 * the stores): `runBusTests({ name, newBuses, settle })`. stores.test.ts runs it for the in-process
 * bus, test/distributed/redis-bus-queue.test.ts for the Redis bus with the publisher and the
 * subscriber on different connections, as two nodes would be.
 */
import { expect, test } from "bun:test";
import type { EventBus, JobEvent, JobRecord, StepFrame } from "../../api/ports.ts";
import { job } from "./store.case.ts";

export interface BusUnderTest {
  /** A publishing and a subscribing side of one bus (the same instance for an in-process bus); the subscriber keeps `buffer` frames. */
  newBuses(buffer: number): { publisher: EventBus; subscriber: EventBus };
  /** Wait until what was published is deliverable (a network hop; nothing in process). */
  settle(): Promise<void>;
}

export const rec = (patch: Partial<JobRecord> = {}): JobRecord => ({ ...job(), seq: 1, status: "RUNNING", startedAt: 5, ...patch }) as JobRecord;
export const frame = (jobId: string, step: number): StepFrame => ({
  jobId, node: "denoise", step, totalSteps: 50, timestep: 999 - step, elapsedMs: step, stepEndedAt: step, dropped: 0, previews: [],
});

export function runBusTests(b: BusUnderTest): void {
  test("a slow subscriber loses its oldest steps (counted), never the final event", async () => {
    const { publisher, subscriber } = b.newBuses(3);
    const j = rec();
    await publisher.state(j);
    const it = (await subscriber.subscribe(j.id))![Symbol.asyncIterator]();
    for (let s = 1; s <= 10; s++) publisher.step(frame(j.id, s));
    await publisher.finished({ ...j, status: "SUCCEEDED" });
    await b.settle();
    const got: JobEvent[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(r.value);
    const steps = got.filter((e) => e.type === "step") as Extract<JobEvent, { type: "step" }>[];
    expect(steps.map((s) => s.step)).toEqual([8, 9, 10]);
    expect(steps[0]!.dropped).toBe(7);
    expect(got.at(-1)!.type).toBe("finished");
  });

  test("return() ends a subscription at once, even while it waits", async () => {
    const { publisher, subscriber } = b.newBuses(3);
    const j = rec();
    await publisher.state(j);
    const it = (await subscriber.subscribe(j.id))![Symbol.asyncIterator]();
    expect((await it.next()).value!.type).toBe("snapshot");
    const pending = it.next();
    await it.return!();
    expect((await pending).done).toBe(true);
    publisher.step(frame(j.id, 1)); // no subscriber left to receive it
    await b.settle();
    expect((await subscriber.latest(j.id))!.lastStep!.step).toBe(1);
  });
}
