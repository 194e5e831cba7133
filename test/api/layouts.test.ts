/**
 * The issue-16 fixtures over GraphQL on Bun (no socket: the app's fetch handler): each model folder
 * registers (its startup dry run passes, the inpainting one with a grey image and a full mask) and
 * generates; `mask` reaches the run (an inpainting job succeeds, a mask without an image is refused).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import sharp from "sharp";
import { ApiService } from "../../api/service.ts";
import { openSqliteStore } from "../../api/adapters/sqlite-bun.ts";
import { createApp } from "../../api/app.ts";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const FIXTURES = ["tiny-sdxl", "tiny-sd-turbo", "tiny-lcm", "tiny-sd-inpaint", "tiny-sd-external"];
let dataDir: string;
let service: ApiService;
let gql: (query: string, variables?: Record<string, unknown>) => Promise<{ data?: any; errors?: { message: string; extensions?: Record<string, unknown> }[] }>;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "dg-api-layouts-"));
  const diffgraph = await createDiffgraph({ registry: builtinRegistry(), log: () => {}, threads: 1, executionProvider: "cpu" });
  // and a pipeline file whose denoise node reads no mask
  const plain = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8"));
  plain.name = "no-mask";
  plain.model = resolve("models/tiny-sd");
  delete plain.nodes.denoise.inputs.mask;
  writeFileSync(join(dataDir, "no-mask.json"), JSON.stringify(plain));
  service = await ApiService.create({ diffgraph, store: openSqliteStore(dataDir), pipelineFiles: [...FIXTURES.map((f) => `models/${f}`), join(dataDir, "no-mask.json")], log: () => {}, defaultPipeline: "tiny-sdxl" });
  const { app } = createApp({ service });
  gql = async (query, variables) => {
    const res = await app.request("/graphql", { method: "POST", headers: { "content-type": "application/json", accept: "application/json" }, body: JSON.stringify({ query, variables }) });
    return (await res.json()) as never;
  };
});
afterAll(async () => {
  await service?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

const GENERATE = `mutation($input: GenerateInput!) { generate(input: $input) { id } }`;
async function finished(id: string) {
  for (let i = 0; i < 400; i++) {
    const r = await gql(`query($id: ID!) { job(id: $id) { status error images { width height } } }`, { id });
    if (r.data.job.status === "SUCCEEDED" || r.data.job.status === "FAILED") return r.data.job;
    await Bun.sleep(25);
  }
  throw new Error(`job ${id} did not finish`);
}
const dataUrl = async (img: ReturnType<typeof sharp>) => `data:image/png;base64,${(await img.png().toBuffer()).toString("base64")}`;

describe("model-layout fixtures over GraphQL", () => {
  test("every fixture folder is registered", async () => {
    const r = await gql(`{ pipelines { name } }`);
    expect(r.data.pipelines.map((p: { name: string }) => p.name).sort()).toEqual([...FIXTURES, "no-mask"].sort());
  });

  for (const [pipeline, extra] of [
    ["tiny-sdxl", { steps: 3 }],
    ["tiny-sd-turbo", { steps: 1, guidanceScale: 0 }],
    ["tiny-lcm", {}],
    ["tiny-sd-external", { steps: 2, height: 64, width: 64 }],
  ] as const) {
    test(`${pipeline} generates`, async () => {
      const r = await gql(GENERATE, { input: { prompt: "a (red:1.3) heart", pipeline, seed: 1, ...extra } });
      expect(r.errors).toBeUndefined();
      const job = await finished(r.data.generate.id);
      expect(job).toMatchObject({ status: "SUCCEEDED", error: null, images: [{ width: 64, height: 64 }] });
    });
  }

  test("inpainting: image + mask on tiny-sd-inpaint; a mask alone is refused naming input.mask", async () => {
    const image = await dataUrl(sharp({ create: { width: 64, height: 64, channels: 3, background: "#3080c0" } }));
    const half = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < 64 * 64; i++) if (i % 64 < 32) half.fill(255, i * 3, i * 3 + 3);
    const mask = await dataUrl(sharp(half, { raw: { width: 64, height: 64, channels: 3 } }));
    const r = await gql(GENERATE, { input: { prompt: "a cat", pipeline: "tiny-sd-inpaint", steps: 3, image, mask, strength: 1 } });
    expect(r.errors).toBeUndefined();
    expect(await finished(r.data.generate.id)).toMatchObject({ status: "SUCCEEDED" });
    const bad = await gql(GENERATE, { input: { prompt: "a cat", pipeline: "tiny-sd-inpaint", mask } });
    expect(bad.errors?.[0]?.message).toMatch(/needs input\.image/);
    expect(bad.errors?.[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.mask" });
    const unread = await gql(GENERATE, { input: { prompt: "a cat", pipeline: "no-mask", image, mask } });
    expect(unread.errors?.[0]?.message).toMatch(/pipeline "no-mask" takes no mask/);
    expect(unread.errors?.[0]?.extensions).toMatchObject({ code: "BAD_USER_INPUT", field: "input.mask" });
  });
});
