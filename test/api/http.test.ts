/** Queries, health, images, CORS and GraphiQL over plain HTTP, without a socket (`app.request`). */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createTestApp, GENERATE, pngSize } from "./helpers.ts";

type TestApp = Awaited<ReturnType<typeof createTestApp>>;
let t: TestApp;
beforeAll(async () => {
  t = await createTestApp({ corsOrigins: ["https://example.test"] });
});
afterAll(() => t.close());

describe("queries", () => {
  test("pipelines: every pipelines/*.json that loads, by name, with the default marked", async () => {
    const r = await t.gql(`{ pipelines { name isDefault model scheduler img2img preview defaults { steps height width } nodes { name use } } }`);
    expect(r.errors).toBeUndefined();
    const tiny = r.data.pipelines.find((p: { name: string }) => p.name === "tiny-sd");
    expect(tiny).toMatchObject({ model: "tiny-sd", scheduler: "pndm", img2img: true, preview: "latent-preview", defaults: { height: 64, width: 64 } });
    expect(r.data.pipelines.filter((p: { isDefault: boolean }) => p.isDefault)).toHaveLength(1);
    expect(tiny.nodes.map((n: { use: string }) => n.use)).toContain("denoise");
  });

  test("plugins by kind, with their config as JSON Schema", async () => {
    const all = await t.gql(`{ plugins { name kind } }`);
    const r = await t.gql(`{ plugins(kind: SCHEDULER) { name kind description configSchema } }`);
    expect(r.errors).toBeUndefined();
    const names = r.data.plugins.map((p: { name: string }) => p.name);
    expect(names).toContain("ddim");
    expect(names).toContain("euler");
    expect(r.data.plugins.every((p: { kind: string }) => p.kind === "SCHEDULER")).toBe(true);
    expect(all.data.plugins.length).toBeGreaterThan(names.length);
    const ddim = r.data.plugins.find((p: { name: string }) => p.name === "ddim");
    expect(ddim.configSchema.type).toBe("object");
    expect(ddim.description.length).toBeGreaterThan(0);
  });

  test("models", async () => {
    const r = await t.gql(`{ models { name pipelines } }`);
    expect(r.data.models).toContainEqual({ name: "tiny-sd", pipelines: ["tiny-sd"] });
  });

  test("schedule: timesteps, betas, ᾱ, sigmas", async () => {
    const r = await t.gql(`{ schedule(scheduler: "ddim", steps: 10, config: { num_train_timesteps: 1000, beta_schedule: "scaled_linear", beta_start: 0.00085, beta_end: 0.012 }) {
      scheduler numInferenceSteps timesteps betas alphas alphasCumprod sigmas logSnr } }`);
    expect(r.errors).toBeUndefined();
    const s = r.data.schedule;
    expect(s.numInferenceSteps).toBe(10);
    expect(s.timesteps).toHaveLength(10);
    expect(s.betas).toHaveLength(1000);
    expect(s.alphasCumprod).toHaveLength(1000);
    for (let i = 1; i < s.timesteps.length; i++) expect(s.timesteps[i]).toBeLessThan(s.timesteps[i - 1]);
    for (let i = 1; i < 1000; i++) expect(s.alphasCumprod[i]).toBeLessThan(s.alphasCumprod[i - 1]);
    // The config is honoured: SD 1.x's scaled_linear β from 0.00085 to 0.012.
    expect(s.betas[0]).toBeCloseTo(0.00085, 8);
    expect(s.betas[999]).toBeCloseTo(0.012, 8);
    expect(s.alphas[0]).toBeCloseTo(1 - 0.00085, 8);
  });

  test("schedule from a pipeline's own scheduler config, with another scheduler reusing it", async () => {
    const q = `query($p: String, $s: String) { schedule(pipeline: $p, scheduler: $s, steps: 10) { scheduler timesteps betas } }`;
    const own = await t.gql(q, { p: "tiny-sd" });
    expect(own.errors).toBeUndefined();
    expect(own.data.schedule.scheduler).toBe("pndm");
    expect(own.data.schedule.betas[0]).toBeCloseTo(0.00085, 8); // from models/tiny-sd/scheduler/scheduler_config.json
    const euler = await t.gql(q, { p: "tiny-sd", s: "euler" });
    expect(euler.data.schedule.scheduler).toBe("euler");
    expect(euler.data.schedule.betas[999]).toBeCloseTo(0.012, 8);
    expect((await t.gql(`{ schedule(steps: 10) { scheduler } }`)).data.schedule.scheduler).toBe("pndm"); // the default pipeline's
    const plain = await t.gql(q, { s: "euler" });
    expect(plain.data.schedule.betas[0]).toBeCloseTo(0.0001, 8); // plugin defaults
    const cfg = await t.gql(`{ pipelines { name schedulerConfig } }`);
    expect(cfg.data.pipelines.find((p: { name: string }) => p.name === "tiny-sd").schedulerConfig).toMatchObject({ beta_schedule: "scaled_linear", steps_offset: 1 });
    const bad = await t.gql(q, { p: "../models/tiny-sd" });
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "pipeline" });
  });

  test("generate → job → jobs connection with status filter and cursors", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await t.gql(GENERATE, { input: { prompt: `p${i}`, steps: 2, scheduler: "ddim", seed: i } });
      expect(r.errors).toBeUndefined();
      expect(r.data.generate).toMatchObject({ status: "QUEUED", params: { steps: 2, seed: i, scheduler: "ddim" } });
      ids.push(r.data.generate.id);
    }
    await t.service.jobs.idle();
    const j = await t.gql(`query($id: ID!) { job(id: $id) { id status step totalSteps images { id url width height dataUrl } metrics { name value } } }`, { id: ids[0] });
    expect(j.data.job).toMatchObject({ id: ids[0], status: "SUCCEEDED", step: 2, totalSteps: 2 });
    expect(j.data.job.images[0]).toMatchObject({ id: `${ids[0]}-0`, url: `/images/${ids[0]}-0.png`, width: 64, height: 64 });
    expect(j.data.job.images[0].dataUrl).toStartWith("data:image/png;base64,");
    expect(await t.gql(`{ job(id: "nope") { id } }`)).toEqual({ data: { job: null } });

    const page1 = await t.gql(`{ jobs(first: 2, status: [SUCCEEDED]) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id } } } }`);
    expect(page1.data.jobs.totalCount).toBe(3);
    expect(page1.data.jobs.edges.map((e: { node: { id: string } }) => e.node.id)).toEqual([ids[2], ids[1]]);
    expect(page1.data.jobs.pageInfo.hasNextPage).toBe(true);
    const page2 = await t.gql(`query($after: String) { jobs(first: 2, after: $after) { pageInfo { hasNextPage } nodes { id } } }`, { after: page1.data.jobs.pageInfo.endCursor });
    expect(page2.data.jobs.nodes.map((n: { id: string }) => n.id)).toEqual([ids[0]]);
    expect(page2.data.jobs.pageInfo.hasNextPage).toBe(false);
    const none = await t.gql(`{ jobs(status: [FAILED, RUNNING]) { totalCount } }`);
    expect(none.data.jobs.totalCount).toBe(0);

    const img = await t.app.request(`/images/${ids[0]}-0.png`);
    expect(img.status).toBe(200);
    expect(img.headers.get("content-type")).toBe("image/png");
    expect(pngSize(new Uint8Array(await img.arrayBuffer()))).toEqual({ width: 64, height: 64 });
  });
});

describe("HTTP routes", () => {
  test("/healthz", async () => {
    const r = await t.app.request("/healthz");
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ ok: true, pipelines: expect.arrayContaining(["tiny-sd"]), queued: 0 });
  });

  test("/images only serves image ids: no paths", async () => {
    for (const p of ["/images/..%2F..%2Fetc%2Fpasswd.png", "/images/jobs.sqlite", "/images/0123456789abcdef01234567-0.png", "/images/%2e%2e.png"]) {
      const r = await t.app.request(p);
      expect(r.status).toBe(404);
    }
  });

  test("GraphiQL for browsers at /graphql", async () => {
    const r = await t.app.request("/graphql", { headers: { accept: "text/html" } });
    expect(r.status).toBe(200);
    expect(await r.text()).toContain("graphiql");
  });

  test("the playground at /", async () => {
    const r = await t.app.request("/");
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toContain("text/html");
  });

  test("CORS: configured origins only", async () => {
    const pre = await t.app.request("/graphql", {
      method: "OPTIONS",
      headers: { origin: "https://example.test", "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    expect(pre.headers.get("access-control-allow-origin")).toBe("https://example.test");
    const other = await t.app.request("/healthz", { headers: { origin: "https://evil.test" } });
    expect(other.headers.get("access-control-allow-origin")).not.toBe("https://evil.test");
  });

  test("an unexpected error is masked, not leaked", async () => {
    const r = await t.gql(`{ nope }`);
    expect(r.errors?.[0]?.message).toContain("nope");
    expect(r.errors?.[0]?.extensions?.code).toBe("GRAPHQL_VALIDATION_FAILED");
  });
});
