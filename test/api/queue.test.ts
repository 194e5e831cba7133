/** Queue order: higher priority first, then arrival; `position` tracks it; clearQueue leaves the running job alone. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createTestApp, GENERATE } from "./helpers.ts";

type TestApp = Awaited<ReturnType<typeof createTestApp>>;
let t: TestApp;
beforeAll(async () => {
  t = await createTestApp({ concurrency: 1 });
});
afterAll(() => t.close());

const submit = async (prompt: string, extra: Record<string, unknown> = {}) => {
  const r = await t.gql(GENERATE, { input: { prompt, steps: 2, scheduler: "ddim", ...extra } });
  expect(r.errors).toBeUndefined();
  return r.data.generate.id as string;
};
const job = async (id: string) => (await t.gql(`query($id: ID!) { job(id: $id) { status position startedAt } }`, { id })).data.job;

test("higher priority runs first; equal priorities in arrival order", async () => {
  const blocker = await submit("blocker", { steps: 500, height: 128, width: 128 });
  await Bun.sleep(20);
  const low1 = await submit("low 1");
  const low2 = await submit("low 2");
  const high = await submit("high", { priority: 5 });
  const negative = await submit("negative", { priority: -1 });
  expect((await job(blocker)).status).toBe("RUNNING");
  expect(await Promise.all([high, low1, low2, negative].map(async (id) => (await job(id)).position))).toEqual([0, 1, 2, 3]);
  await t.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: blocker });
  await t.service.jobs.idle();
  const started = await Promise.all([high, low1, low2, negative].map(async (id) => Date.parse((await job(id)).startedAt)));
  expect([...started].sort((a, b) => a - b)).toEqual(started);
  expect((await job(high)).position).toBeNull();
});

test("clearQueue cancels the queued jobs and lets the running one finish", async () => {
  const running = await submit("running", { steps: 300, height: 128, width: 128 });
  await Bun.sleep(20);
  const queued = [await submit("q1"), await submit("q2")];
  const r = await t.gql(`mutation { clearQueue { id status error } }`);
  expect(r.data.clearQueue.map((j: { id: string }) => j.id)).toEqual(queued);
  expect(r.data.clearQueue.every((j: { status: string }) => j.status === "CANCELLED")).toBe(true);
  await t.service.jobs.idle();
  expect((await job(running)).status).toBe("SUCCEEDED");
});
