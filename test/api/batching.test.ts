/** Cross-job batching through the API: jobs running together share noise-predictor calls. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { createTestApp, GENERATE, pipelineFolderWithBatching } from "./helpers.ts";

type TestApp = Awaited<ReturnType<typeof createTestApp>>;
let t: TestApp;
beforeAll(async () => {
  t = await createTestApp({ concurrency: 4 });
});
afterAll(() => t.close());

const STATS = `{ pipelines { name batching { calls modelCalls rows maxMerged merging } } }`;
const stats = async () => (await t.gql(STATS)).data.pipelines.find((p: { name: string }) => p.name === "tiny-sd").batching;
const submit = async (prompt: string, extra: Record<string, unknown> = {}) => {
  const r = await t.gql(GENERATE, { input: { prompt, steps: 8, scheduler: "ddim", ...extra } });
  expect(r.errors).toBeUndefined();
  return r.data.generate.id as string;
};
const job = async (id: string) => (await t.gql(`query($id: ID!) { job(id: $id) { status step error } }`, { id })).data.job;

test("four jobs at once: every one succeeds, in fewer model calls than steps × jobs", async () => {
  const before = await stats();
  const ids = await Promise.all(["red heart", "blue star", "a cat", "green tree"].map((p, k) => submit(p, { seed: k, ...(k === 2 ? { batchSize: 2 } : {}) })));
  await t.service.jobs.idle();
  for (const id of ids) expect((await job(id)).status).toBe("SUCCEEDED");
  const after = await stats();
  const calls = after.calls - before.calls;
  const modelCalls = after.modelCalls - before.modelCalls;
  expect(calls).toBe(4 * 8);
  expect(modelCalls).toBeLessThan(calls);
  expect(after.maxMerged).toBeGreaterThanOrEqual(2);
  // rows: 2 (guidance halves) × images, per step — 5 images × 2 × 8
  expect(after.rows - before.rows).toBe(5 * 2 * 8);
});

test("cancelling one of the batched jobs leaves the others running to success", async () => {
  const ids = await Promise.all([0, 1, 2].map((k) => submit(`job ${k}`, { steps: 60, seed: k })));
  for (let i = 0; i < 200 && (await job(ids[1]!)).step < 2; i++) await Bun.sleep(5);
  await t.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: ids[1] });
  await t.service.jobs.idle();
  expect((await Promise.all(ids.map(job))).map((j) => j.status)).toEqual(["SUCCEEDED", "CANCELLED", "SUCCEEDED"]);
});

test("a pipeline whose denoise node says batching: false reports null, and its jobs still run", async () => {
  const dir = pipelineFolderWithBatching("tiny-sd", false);
  const u = await createTestApp({ concurrency: 2, pipelinesDir: dir });
  try {
    const r = await u.gql(STATS);
    expect(r.errors).toBeUndefined();
    expect(r.data.pipelines).toEqual([{ name: "tiny-sd", batching: null }]);
    const ids = await Promise.all([1, 2].map(async (k) => (await u.gql(GENERATE, { input: { prompt: `p${k}`, steps: 3 } })).data.generate.id));
    await u.service.jobs.idle();
    for (const id of ids) expect((await u.gql(`query($id: ID!) { job(id: $id) { status } }`, { id })).data.job.status).toBe("SUCCEEDED");
  } finally {
    await u.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // the shipped pipelines keep the default: batching on
  for (const p of (await t.gql(STATS)).data.pipelines) expect(p.batching).not.toBeNull();
});
