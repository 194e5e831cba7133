/** Every documented bound is a GraphQL error with a machine-readable code naming the field, never a crash. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { LIMITS } from "../../core/params.ts";
import { API_LIMITS } from "../../api/service.ts";
import { createTestApp, GENERATE } from "./helpers.ts";

type TestApp = Awaited<ReturnType<typeof createTestApp>>;
let t: TestApp;
beforeAll(async () => {
  // Concurrency 1 and a 2-job queue so QUEUE_FULL is reachable; jobs are cancelled after each test.
  t = await createTestApp({ maxQueue: 2, concurrency: 1 });
});
afterAll(() => t.close());

const ok = { prompt: "a cat", steps: 2, scheduler: "ddim" };
const tinyPng =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAEklEQVR4nGP4z8CAFWEXHbQSACj/P8Fu7N9hAAAAAElFTkSuQmCC";

describe("generate input bounds → BAD_USER_INPUT with extensions.field", () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ["prompt too long", { prompt: "x".repeat(LIMITS.promptChars + 1) }, "input.prompt"],
    ["negative prompt too long", { negativePrompt: "x".repeat(LIMITS.promptChars + 1) }, "input.negativePrompt"],
    ["steps below min", { steps: LIMITS.steps.min - 1 }, "input.steps"],
    ["steps above max", { steps: LIMITS.steps.max + 1 }, "input.steps"],
    ["guidance below min", { guidanceScale: LIMITS.guidanceScale.min - 0.5 }, "input.guidanceScale"],
    ["guidance above max", { guidanceScale: LIMITS.guidanceScale.max + 0.5 }, "input.guidanceScale"],
    ["batch below min", { batchSize: LIMITS.batchSize.min - 1 }, "input.batchSize"],
    ["batch above max", { batchSize: LIMITS.batchSize.max + 1 }, "input.batchSize"],
    ["height below min", { height: LIMITS.size.min - 8 }, "input.height"],
    ["height above max", { height: LIMITS.size.max + 8 }, "input.height"],
    ["height not a multiple of 8", { height: 100 }, "input.height"],
    ["width above max", { width: LIMITS.size.max + 8 }, "input.width"],
    ["pixel budget", { height: 2048, width: 2048, batchSize: 2 }, "input.batchSize"],
    ["negative seed", { seed: -1 }, "input.seed"],
    ["strength 0", { strength: 0 }, "input.strength"],
    ["strength above 1", { strength: 1.5 }, "input.strength"],
    ["unknown scheduler", { scheduler: "warp-drive" }, "input.scheduler"],
    ["a model plugin is not a scheduler", { scheduler: "onnx-unet" }, "input.scheduler"],
    ["unknown pipeline", { pipeline: "nope" }, "input.pipeline"],
    ["pipeline given as a path", { pipeline: "../pipelines/tiny-sd.json" }, "input.pipeline"],
    ["image not a data URL", { image: "file:///etc/passwd" }, "input.image"],
    ["image that does not decode", { image: "data:image/png;base64,AAAAAAAA" }, "input.image"],
    ["image too large", { image: `data:image/png;base64,${"A".repeat(Math.ceil((API_LIMITS.imageBytes * 4) / 3) + 400)}` }, "input.image"],
    ["previewEvery negative", { previewEvery: -1 }, "input.previewEvery"],
    ["priority above max", { priority: API_LIMITS.priority.max + 1 }, "input.priority"],
    ["priority below min", { priority: API_LIMITS.priority.min - 1 }, "input.priority"],
  ];
  for (const [name, patch, field] of cases) {
    test(name, async () => {
      const r = await t.gql(GENERATE, { input: { ...ok, ...patch } });
      expect(r.data?.generate ?? null).toBeNull();
      expect(r.errors).toHaveLength(1);
      expect(r.errors![0]!.extensions).toMatchObject({ code: "BAD_USER_INPUT", field });
      expect(r.errors![0]!.message).toStartWith(`${field}: `);
    });
  }

  test("values GraphQL cannot represent are rejected by the type system", async () => {
    const r = await t.gql(GENERATE, { input: { ...ok, steps: 2 ** 40 } });
    expect(r.errors![0]!.message).toContain("steps");
    expect(r.data ?? null).toBeNull();
  });

  test("a valid img2img request is accepted", async () => {
    const r = await t.gql(GENERATE, { input: { ...ok, image: tinyPng, strength: 0.5 } });
    expect(r.errors).toBeUndefined();
    await t.service.jobs.idle();
    const j = await t.gql(`query($id: ID!) { job(id: $id) { status error params { img2img } images { id } } }`, { id: r.data.generate.id });
    expect(j.data.job).toMatchObject({ status: "SUCCEEDED", error: null, params: { img2img: true } });
  });
});

describe("queue length", () => {
  test("QUEUE_FULL once maxQueue jobs wait", async () => {
    const long = { ...ok, steps: 500 };
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await t.gql(GENERATE, { input: long });
      expect(r.errors).toBeUndefined();
      ids.push(r.data.generate.id);
      await Bun.sleep(5); // let the first one start, so two remain queued
    }
    const r = await t.gql(GENERATE, { input: long });
    expect(r.errors![0]!.extensions).toMatchObject({ code: "QUEUE_FULL", limit: 2 });
    const cleared = await t.gql(`mutation { clearQueue { id status } }`);
    expect(cleared.data.clearQueue.map((j: { status: string }) => j.status)).toEqual(["CANCELLED", "CANCELLED"]);
    const c = await t.gql(`mutation($id: ID!) { cancelJob(id: $id) { id } }`, { id: ids[0] });
    expect(c.errors).toBeUndefined();
    await t.service.jobs.idle();
    const j = await t.gql(`query($id: ID!) { job(id: $id) { status } }`, { id: ids[0] });
    expect(j.data.job.status).toBe("CANCELLED");
  });
});

describe("other inputs", () => {
  test("schedule: unknown scheduler, steps out of range, bad config", async () => {
    const q = `query($s: String!, $n: Int!, $c: JSON) { schedule(scheduler: $s, steps: $n, config: $c) { timesteps } }`;
    const cases: [Record<string, unknown>, string][] = [
      [{ s: "nope", n: 4 }, "scheduler"],
      [{ s: "ddim", n: 0 }, "steps"],
      [{ s: "ddim", n: LIMITS.steps.max + 1 }, "steps"],
      [{ s: "ddim", n: 4, c: [1, 2] }, "config"],
      [{ s: "ddim", n: 4, c: { beta_schedule: "zigzag" } }, "config.beta_schedule"],
    ];
    for (const [vars, field] of cases) {
      const r = await t.gql(q, vars);
      expect(r.errors?.[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field });
    }
  });

  test("jobs: page size and cursor", async () => {
    for (const [args, field] of [["first: 0", "first"], [`first: ${API_LIMITS.jobsPageSize + 1}`, "first"], [`after: "bm9wZQ"`, "after"]] as const) {
      const r = await t.gql(`{ jobs(${args}) { totalCount } }`);
      expect(r.errors?.[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field });
    }
  });

  test("cancelJob of an unknown job is NOT_FOUND", async () => {
    const r = await t.gql(`mutation { cancelJob(id: "0123456789abcdef01234567") { id } }`);
    expect(r.errors?.[0]?.extensions).toMatchObject({ code: "NOT_FOUND", field: "id" });
  });
});

describe("query limits", () => {
  test("depth: recursive introspection is QUERY_TOO_DEEP", async () => {
    let sel = "name";
    for (let i = 0; i < API_LIMITS.queryDepth; i++) sel = `ofType { ${sel} }`;
    const r = await t.gql(`{ __type(name: "Job") { fields { type { ${sel} } } } }`);
    expect(r.errors?.[0]?.extensions).toMatchObject({ code: "QUERY_TOO_DEEP", limit: API_LIMITS.queryDepth });
  });

  test("GraphiQL's introspection query stays within the depth limit", async () => {
    const { getIntrospectionQuery } = await import("graphql");
    const r = await t.gql(getIntrospectionQuery());
    expect(r.errors).toBeUndefined();
    expect(r.data.__schema.types.length).toBeGreaterThan(10);
  });

  test("cost: a full page of jobs with many fields is QUERY_TOO_COSTLY", async () => {
    const r = await t.gql(`{ jobs(first: 100) { edges { cursor node { id status pipeline priority createdAt startedAt finishedAt error step totalSteps
      params { prompt negativePrompt steps guidanceScale seed batchSize height width strength scheduler img2img previewEvery } } } } }`);
    expect(r.errors?.[0]?.extensions).toMatchObject({ code: "QUERY_TOO_COSTLY", limit: API_LIMITS.queryCost });
  });
});

describe("API key", () => {
  let secured: TestApp;
  beforeAll(async () => {
    secured = await createTestApp({ apiKey: "s3cret" });
  });
  afterAll(() => secured.close());

  test("mutations without the key are UNAUTHENTICATED; queries are open", async () => {
    const r = await secured.gql(GENERATE, { input: ok });
    expect(r.errors?.[0]?.extensions).toMatchObject({ code: "UNAUTHENTICATED" });
    expect((await secured.gql(GENERATE, { input: ok }, { authorization: "Bearer wrong" })).errors?.[0]?.extensions?.code).toBe("UNAUTHENTICATED");
    const q = await secured.gql(`{ pipelines { name } }`);
    expect(q.errors).toBeUndefined();
  });

  test("the key in Authorization or x-api-key lets mutations through", async () => {
    expect((await secured.gql(GENERATE, { input: ok }, { authorization: "Bearer s3cret" })).errors).toBeUndefined();
    expect((await secured.gql(GENERATE, { input: ok }, { "x-api-key": "s3cret" })).errors).toBeUndefined();
    await secured.service.jobs.idle();
  });
});
