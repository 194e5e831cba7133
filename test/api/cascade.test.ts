/**
 * The cascade over GraphQL: registered from the pipelines folder by its name, its jobProgress stream
 * shows the base model's steps (named by their node) and then the final 256-px image. Runs the
 * emoji-256 document on the tiny-sr fixture; the default pipeline stays emoji-64.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ApiService } from "../../api/service.ts";
import { openSqliteStore } from "../../api/adapters/sqlite-bun.ts";
import { pipelineFiles } from "../../api/adapters/pipeline-files-node.ts";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { fetchPng, GENERATE, pngSize, sseTransport, startTestServer, type TestServer } from "./helpers.ts";

let dir: string;
let server: TestServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dg-api-cascade-"));
  mkdirSync(join(dir, "pipelines"), { recursive: true });
  const cascade = JSON.parse(readFileSync("pipelines/emoji-256.json", "utf8"));
  cascade.model = resolve("models/emoji-64");
  cascade.nodes.sr.model = resolve("models/tiny-sr");
  writeFileSync(join(dir, "pipelines", "emoji-256.json"), JSON.stringify(cascade));
  const tiny = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8"));
  tiny.model = resolve("models/tiny-sd");
  writeFileSync(join(dir, "pipelines", "tiny-sd.json"), JSON.stringify(tiny));
  // One slot, so a job submitted behind a blocker stays queued until its subscriber is in place.
  server = await startTestServer({ pipelinesDir: join(dir, "pipelines"), concurrency: 1 });
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

const PROGRESS = /* GraphQL */ `
  subscription Progress($id: ID!) {
    jobProgress(id: $id) {
      __typename
      ... on JobStep { node step totalSteps previews { width height } }
      ... on JobFinished { job { status error params { width height } images { url width height } } }
    }
  }
`;

test("jobProgress: the base steps (node denoise, 64-px previews), then the final 256-px image", async () => {
  const blocker = await server.gql(GENERATE, { input: { prompt: "hold the slot", pipeline: "tiny-sd", steps: 1000, scheduler: "ddim" } });
  const r = await server.gql(GENERATE, { input: { prompt: "red heart", pipeline: "emoji-256", steps: 4, seed: 3, previewEvery: 1 } });
  expect(r.errors).toBeUndefined();
  const t = sseTransport();
  try {
    // Subscribed while it waits, then the blocker goes: every step of the cascade is seen.
    let released = false;
    const events = await t.subscribe(server, PROGRESS, { id: r.data.generate.id }, async () => {
      if (released) return;
      released = true;
      await server.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: blocker.data.generate.id });
    });
    const steps = events.map((e) => e.jobProgress).filter((e) => e.__typename === "JobStep");
    expect(steps.map((s) => [s.node, s.step, s.totalSteps])).toEqual([1, 2, 3, 4].map((k) => ["denoise", k, 4]));
    expect(steps.every((s) => s.previews.length === 1 && s.previews[0].width === 64)).toBe(true);
    const last = events.at(-1).jobProgress;
    expect(last.__typename).toBe("JobFinished");
    expect(last.job.status).toBe("SUCCEEDED");
    expect(last.job.params).toEqual({ width: 64, height: 64 }); // the generation size…
    expect(last.job.images).toHaveLength(1);
    expect([last.job.images[0].width, last.job.images[0].height]).toEqual([256, 256]); // …and the image's
    const png = await fetchPng(new URL(last.job.images[0].url, server.url).href);
    expect(png.status).toBe(200);
    expect(pngSize(png.bytes)).toEqual({ width: 256, height: 256 });
  } finally {
    t.dispose();
  }
});

test("registered by name next to the others; the default is not the cascade", async () => {
  const q = await server.gql(`{ pipelines { name isDefault model } }`);
  expect(q.errors).toBeUndefined();
  expect(q.data.pipelines.map((p: { name: string }) => p.name).sort()).toEqual(["emoji-256", "tiny-sd"]);
  expect(q.data.pipelines.find((p: { name: string }) => p.name === "emoji-256")).toMatchObject({ isDefault: false, model: "emoji-64" });
});

test("the shipped pipelines folder: emoji-256 sorts first by file name, yet the default is emoji-64", async () => {
  const diffgraph = await createDiffgraph({ registry: builtinRegistry(), log: () => {}, threads: 1 });
  const store = openSqliteStore(join(dir, "data-shipped"));
  const service = await ApiService.create({ diffgraph, store, pipelineFiles: await pipelineFiles("pipelines"), log: () => {} });
  try {
    expect(service.defaultPipeline).toBe("emoji-64");
    expect(service.pipelines.has("emoji-64")).toBe(true);
  } finally {
    await service.jobs.close();
    await store.close();
    await diffgraph.dispose();
  }
}, 120_000);
