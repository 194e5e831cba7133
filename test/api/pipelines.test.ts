/** Startup registers every pipelines/*.json by name, skips broken ones with a log line, and checks the default. */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { createDiffgraph, type Diffgraph } from "../../core/diffgraph.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { ApiService } from "../../api/service.ts";
import { openSqliteStore } from "../../api/adapters/sqlite-bun.ts";
import { pipelineFiles } from "../../api/adapters/pipeline-files-node.ts";
import { createTestApp, GENERATE } from "./helpers.ts";

let dir: string;
let diffgraph: Diffgraph;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "diffgraph-pipelines-"));
  const doc = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8"));
  doc.model = relative(join(dir, "pipelines"), resolve("models/tiny-sd"));
  const p = join(dir, "pipelines");
  mkdirSync(p);
  writeFileSync(join(p, "a-good.json"), JSON.stringify(doc));
  writeFileSync(join(p, "b-same-name.json"), JSON.stringify(doc));
  writeFileSync(join(p, "c-other.json"), JSON.stringify({ ...doc, name: "tiny-other" }));
  writeFileSync(join(p, "d-broken.json"), "{ not json");
  writeFileSync(join(p, "e-missing-model.json"), JSON.stringify({ ...doc, name: "ghost", model: "../nowhere" }));
  writeFileSync(
    join(p, "g-metrics.json"),
    JSON.stringify({ ...doc, name: "tiny-metrics", nodes: { ...doc.nodes, bright: { use: `file://${resolve("test/fixtures/plugins/mean-brightness.ts")}`, config: { scale: 100 }, inputs: { images: "decode.images" } } } }),
  );
  writeFileSync(join(p, "f-bad-plugin.json"), JSON.stringify({ ...doc, name: "bad", nodes: { ...doc.nodes, decode: { use: "no-such-plugin", inputs: {} } } }));
  diffgraph = await createDiffgraph({ registry: builtinRegistry(), log: () => {}, threads: 1 });
});
afterAll(async () => {
  await diffgraph.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test("good pipelines are registered by name; duplicates and broken ones are skipped with a reason", async () => {
  const log: string[] = [];
  const service = await ApiService.create({ diffgraph, store: openSqliteStore(join(dir, "data")), pipelineFiles: await pipelineFiles(join(dir, "pipelines")), defaultPipeline: "tiny-other", log: (m) => log.push(m) });
  try {
    expect([...service.pipelines.keys()].sort()).toEqual(["tiny-metrics", "tiny-other", "tiny-sd"]);
    expect(service.defaultPipeline).toBe("tiny-other");
    const skipped = log.filter((l) => l.includes("skipping"));
    expect(skipped).toHaveLength(4);
    expect(skipped.find((l) => l.includes("b-same-name.json"))).toContain('"tiny-sd" is already taken');
    expect(skipped.find((l) => l.includes("f-bad-plugin.json"))).toContain("no-such-plugin");
    expect(skipped.some((l) => l.includes("d-broken.json"))).toBe(true);
    expect(skipped.some((l) => l.includes("e-missing-model.json"))).toBe(true);
  } finally {
    await service.jobs.close();
    await service.jobs.store.close();
  }
});

test("an unknown default pipeline is an error that lists the registered ones", async () => {
  const store = openSqliteStore(join(dir, "data2"));
  await expect(ApiService.create({ diffgraph, store, pipelineFiles: await pipelineFiles(join(dir, "pipelines")), defaultPipeline: "emoji-64", log: () => {} })).rejects.toThrow(
    /default pipeline "emoji-64" is not registered \(registered: tiny-sd, tiny-other, tiny-metrics\)/,
  );
  await store.close();
});

test("a pipeline's metric nodes reach the job and its final event", async () => {
  const t = await createTestApp({ pipelinesDir: join(dir, "pipelines") });
  try {
    const r = await t.gql(GENERATE, { input: { prompt: "bright", steps: 2, scheduler: "ddim", pipeline: "tiny-metrics", metrics: true } });
    expect(r.errors).toBeUndefined();
    const events = (await t.service.jobs.subscribe(r.data.generate.id))!;
    let finished: any;
    for await (const e of events) if (e.type === "finished") finished = e.job;
    expect(Object.keys(finished.metrics)).toEqual(["bright.mean"]);
    const j = await t.gql(`query($id: ID!) { job(id: $id) { pipeline metrics { name value } } }`, { id: r.data.generate.id });
    expect(j.data.job.pipeline).toBe("tiny-metrics");
    expect(j.data.job.metrics).toHaveLength(1);
    expect(j.data.job.metrics[0].name).toBe("bright.mean");
    expect(j.data.job.metrics[0].value).toBeGreaterThan(0);
    expect(j.data.job.metrics[0].value).toBeLessThan(100);
    // Without the option the metric node does not run: the job has no metrics.
    const plain = await t.gql(GENERATE, { input: { prompt: "bright", steps: 2, scheduler: "ddim", pipeline: "tiny-metrics" } });
    for await (const e of (await t.service.jobs.subscribe(plain.data.generate.id))!) if (e.type === "finished") expect(e.job.metrics).toEqual({});
    const q = await t.gql(`query($id: ID!) { job(id: $id) { params { metrics } metrics { name } } }`, { id: plain.data.generate.id });
    expect(q.data.job).toEqual({ params: { metrics: false }, metrics: [] });
  } finally {
    await t.close();
  }
});
