/**
 * Each generation parameter is declared once (core/params.ts PARAMS); the GraphQL input, the stored
 * job parameters, the pipeline defaults and the CLI flags are derived from it. These tests hold the
 * derivation: every declared parameter shows up everywhere with its description, and round-trips.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildClientSchema, getIntrospectionQuery, type IntrospectionQuery } from "graphql";
import { PARAM_NAMES, PARAMS } from "../../core/params.ts";
import { createTestApp } from "./helpers.ts";

let t: Awaited<ReturnType<typeof createTestApp>>;
beforeAll(async () => (t = await createTestApp({ concurrency: 1 })));
afterAll(() => t.close());

test("GenerateInput, JobParams and PipelineDefaults have one field per declared parameter, with its description", async () => {
  const schema = buildClientSchema((await t.gql<IntrospectionQuery>(getIntrospectionQuery())).data!);
  const fields = (name: string) => (schema.getType(name) as unknown as { getFields(): Record<string, { description?: string | null; type: unknown }> }).getFields();
  const input = fields("GenerateInput");
  const stored = fields("JobParams");
  const defaults = fields("PipelineDefaults");
  for (const k of PARAM_NAMES) {
    expect(input[k]?.description).toBe(PARAMS[k].description);
    expect(String(input[k]!.type)).toBe(k === "prompt" ? "String!" : PARAMS[k].graphql);
    expect(stored[k]).toBeDefined();
    if (k !== "prompt") expect(defaults[k]?.description).toBe(PARAMS[k].description);
  }
  expect(Object.keys(defaults).sort()).toEqual(PARAM_NAMES.filter((k) => k !== "prompt").sort());
  expect(String(stored.seed!.type)).toBe("Float!"); // a stored seed may exceed GraphQL's 32-bit Int
});

test("every declared parameter round-trips from generate to the stored job", async () => {
  const input = { prompt: "round trip", negativePrompt: "blur", steps: 3, guidanceScale: 2.5, seed: 12345, batchSize: 2, height: 32, width: 48, strength: 0.5, scheduler: "euler" };
  expect(Object.keys(input).sort()).toEqual([...PARAM_NAMES].sort()); // the case covers every parameter
  const r = await t.gql(`mutation($input: GenerateInput!) { generate(input: $input) { id params { ${PARAM_NAMES.join(" ")} img2img previewEvery } } }`, { input: { ...input, pipeline: "tiny-sd" } });
  expect(r.errors).toBeUndefined();
  expect(r.data.generate.params).toEqual({ ...input, img2img: false, previewEvery: 1 });
  await t.gql(`mutation { cancelJob(id: "${r.data.generate.id}") { id } }`);
});

test("the CLI takes a flag per declared parameter and lists it in --help", async () => {
  const proc = Bun.spawn(["bun", "api/cli/generate.ts", "--help"], { stdout: "pipe", stderr: "pipe" });
  const help = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  for (const k of PARAM_NAMES) expect(help).toContain(`--${PARAMS[k].flag} `);
  for (const k of PARAM_NAMES) expect(help).toContain(PARAMS[k].description);
});
