/** A slow subscriber never slows generation: its intermediate frames are dropped, its final event never is. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { JobEvent } from "../../api/jobs.ts";
import { GENERATE, startTestServer, type TestServer } from "./helpers.ts";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ subscriberBuffer: 3 });
});
afterAll(() => server.close());

test("a subscriber that does not read keeps only its newest frames and the final event", async () => {
  const r = await server.gql(GENERATE, { input: { prompt: "slow reader", steps: 12, scheduler: "ddim" } });
  const id = r.data.generate.id as string;
  const events = (await server.service.jobs.subscribe(id))!;
  const it = events[Symbol.asyncIterator]();
  const first = await it.next(); // the snapshot; then it stops reading while the job runs
  expect((first.value as JobEvent).type).toBe("snapshot");
  // Steps the job finished before this subscriber joined are in the snapshot, not dropped (on a busy
  // machine the job may be a step or two ahead of the subscription).
  const before = (first.value as Extract<JobEvent, { type: "snapshot" }>).lastStep?.step ?? 0;
  expect(before).toBeLessThan(10);

  await server.service.jobs.idle(); // generation finishes without waiting for this reader: it has read nothing since
  expect((await server.service.jobs.get(id))!.status).toBe("SUCCEEDED");

  const rest: JobEvent[] = [];
  for (let n = await it.next(); !n.done; n = await it.next()) rest.push(n.value);
  const steps = rest.filter((e) => e.type === "step") as Extract<JobEvent, { type: "step" }>[];
  expect(steps.map((s) => s.step)).toEqual([10, 11, 12]);
  expect(steps[0]!.dropped).toBe(9 - before);
  expect(steps[1]!.dropped).toBe(0);
  expect(rest.at(-1)).toMatchObject({ type: "finished", job: { id, status: "SUCCEEDED" } });
});

test("a reader that leaves does not hold the job", async () => {
  const r = await server.gql(GENERATE, { input: { prompt: "quitter", steps: 6, scheduler: "ddim" } });
  const id = r.data.generate.id as string;
  const it = (await server.service.jobs.subscribe(id))![Symbol.asyncIterator]();
  await it.next();
  const pending = it.next(); // waiting for a step when the client goes away
  await it.return?.();
  expect(await pending).toEqual({ value: undefined, done: true });
  await server.service.jobs.idle();
  expect((await server.service.jobs.get(id))!.status).toBe("SUCCEEDED");
});
