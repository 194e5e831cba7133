/** Job records and images survive a restart; jobs a restart interrupted are failed with a reason. */
import { expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { openSqliteStore } from "../../api/adapters/sqlite-bun.ts";
import { INTERRUPTED_REASON } from "../../api/ports.ts";
import { fetchPng, GENERATE, pngSize, startTestServer } from "./helpers.ts";

test("a restart keeps finished jobs and their images, and fails the interrupted ones", async () => {
  const first = await startTestServer();
  const dataDir = first.dataDir;
  const done = await first.gql(GENERATE, { input: { prompt: "kept", steps: 2, scheduler: "ddim", batchSize: 2 } });
  await first.service.jobs.idle();
  const before = await first.gql(`query($id: ID!) { job(id: $id) { id status images { url } params { prompt batchSize } } }`, { id: done.data.generate.id });
  expect(before.data.job.status).toBe("SUCCEEDED");
  await first.close(true);

  // A job left RUNNING by a process that died (as if killed mid-run).
  const store = openSqliteStore(dataDir);
  const crashed = await store.insert({
    id: "0123456789abcdef01234567",
    status: "RUNNING",
    pipeline: "tiny-sd",
    params: { prompt: "lost", negativePrompt: "", steps: 20, guidanceScale: 7.5, seed: 0, batchSize: 1, height: 64, width: 64, strength: 0.8, scheduler: null, img2img: false, previewEvery: 1 },
    priority: 0,
    createdAt: Date.now(),
    startedAt: Date.now(),
    finishedAt: null,
    error: null,
    errorCode: null,
    step: 7,
    totalSteps: 20,
    metrics: {},
    imageCount: 0,
  });
  await store.close();

  const second = await startTestServer({ dataDir });
  try {
    const after = await second.gql(`query($id: ID!) { job(id: $id) { id status images { url } params { prompt batchSize } } }`, { id: done.data.generate.id });
    expect(after.data).toEqual(before.data);
    for (const img of after.data.job.images) {
      const png = await fetchPng(second.url + img.url);
      expect(png.status).toBe(200);
      expect(pngSize(png.bytes)).toEqual({ width: 64, height: 64 });
    }
    const lost = await second.gql(`query($id: ID!) { job(id: $id) { status error step } }`, { id: crashed.id });
    expect(lost.data.job).toEqual({ status: "FAILED", error: INTERRUPTED_REASON, step: 7 });
    const failed = await second.gql(`{ jobs(status: [FAILED]) { totalCount } all: jobs { totalCount } }`);
    expect(failed.data).toEqual({ jobs: { totalCount: 1 }, all: { totalCount: 2 } });
    // New jobs continue after the old ones.
    const next = await second.gql(GENERATE, { input: { prompt: "new", steps: 1, scheduler: "ddim" } });
    await second.service.jobs.idle();
    const list = await second.gql(`{ jobs { nodes { id } } }`);
    expect(list.data.jobs.nodes[0].id).toBe(next.data.generate.id);
  } finally {
    await second.close();
  }
  expect(existsSync(dataDir)).toBe(false);
});

test("a shutdown fails unfinished jobs with the same reason a crash leaves", async () => {
  const s = await startTestServer({ concurrency: 1 });
  const running = await s.gql(GENERATE, { input: { prompt: "long", steps: 500, scheduler: "ddim", height: 128, width: 128 } });
  const queued = await s.gql(GENERATE, { input: { prompt: "waiting", steps: 2, scheduler: "ddim" } });
  await Bun.sleep(50);
  await s.close(true);
  const again = await startTestServer({ dataDir: s.dataDir });
  try {
    for (const id of [running.data.generate.id, queued.data.generate.id]) {
      const j = await again.gql(`query($id: ID!) { job(id: $id) { status error } }`, { id });
      expect(j.data.job).toEqual({ status: "FAILED", error: INTERRUPTED_REASON });
    }
  } finally {
    await again.close();
  }
});
