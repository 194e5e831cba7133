/**
 * Metric plugins against a tiny random evaluation CLIP (test/metrics/fixtures/clip-eval, made by
 * make_clip_eval.py) and its numpy reference (same script, --reference), and as nodes of a pipeline.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { HAS_PYTHON_REFERENCE } from "../python-reference.ts";
import { fileSource } from "../../core/adapters/node.ts";
import type { ModelSource } from "../../core/model-source.ts";
import type { PluginContext } from "../../core/plugin.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { createRng } from "../../core/random.ts";
import { PluginRegistry } from "../../core/registry.ts";
import type { Tensor } from "../../core/tensor.ts";
import { builtinPlugins } from "../../plugins/index.ts";
import { loadTokenizer } from "../../plugins/encoders/clip-text.ts";
import { parsePreprocessor, preprocessImages, resizeBilinear } from "../../plugins/metrics/clip-eval.ts";
import { metricPlugins, clipScore, rPrecision, frechetDistance } from "../../plugins/metrics/index.ts";
import { candidateCaptions } from "../../plugins/metrics/r-precision.ts";
import { testRuntime, tinyDoc } from "../helpers.ts";

const FIXTURE = "test/metrics/fixtures/clip-eval";
const models = fileSource(FIXTURE);
const onnx = testRuntime();
const ctx: PluginContext = { models, onnx, log: () => {} };
afterAll(() => onnx.dispose());

function randomImages(seed: number, b: number): Tensor {
  const rng = createRng(seed);
  return { dims: [b, 3, 64, 64], data: Float32Array.from({ length: b * 3 * 64 * 64 }, () => rng.uniform()) };
}

function reference(req: Record<string, unknown>): { clip_scores: number[]; cosines: number[]; ranks?: number[]; fd?: number } {
  const p = Bun.spawnSync(["/usr/bin/python3", "test/metrics/make_clip_eval.py", "--reference"], { stdin: Buffer.from(JSON.stringify(req)) });
  if (p.exitCode !== 0) throw new Error(p.stderr.toString());
  return JSON.parse(p.stdout.toString());
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function run(def: { configSchema: { parse(c: unknown): any }; create(c: any, ctx: PluginContext): any }, config: unknown, inputs: Record<string, unknown>): Promise<Record<string, number>> {
  const inst = await def.create(def.configSchema.parse(config), ctx);
  const out = await inst.run(inputs as never, { signal: new AbortController().signal, rng: createRng(0) });
  return out.metrics as Record<string, number>;
}

const PROMPTS = ["red heart", "cat face", "rocket"];

describe("clip-score", () => {
  test.skipIf(!HAS_PYTHON_REFERENCE)("matches the numpy reference to 1e-4", async () => {
    const images = randomImages(1, 3);
    const tok = await loadTokenizer(models, "clip_eval/tokenizer");
    const ref = reference({ images: [...images.data], ids: PROMPTS.map((p) => tok.encode(p)) });
    const perImage = await Promise.all(PROMPTS.map((p, i) => run(clipScore, { clampAtZero: false }, { images: { dims: [1, 3, 64, 64], data: images.data.subarray(i * 12288, (i + 1) * 12288) }, text: [p] })));
    const batch = await run(clipScore, {}, { images, text: PROMPTS });
    const diffs = perImage.map((m, i) => Math.abs(m.score! - 100 * ref.cosines[i]!));
    console.log(`clip-score (unclamped): ours ${perImage.map((m) => m.score!.toFixed(6))} vs numpy ${ref.cosines.map((s) => (100 * s).toFixed(6))}; max |Δ| ${Math.max(...diffs).toExponential(2)}`);
    expect(Math.max(...diffs)).toBeLessThan(1e-4);
    const clamped = await run(clipScore, { clampAtZero: true }, { images, text: PROMPTS });
    const mean = ref.clip_scores.reduce((a, b) => a + b, 0) / 3;
    expect(Math.abs(clamped.score! - mean)).toBeLessThan(1e-4);
    expect(batch.min).toBeLessThanOrEqual(batch.score!);
    // Unclamped, so negative cosines are compared too (random weights give both signs).
    const raw = await run(clipScore, { clampAtZero: false, scale: 1 }, { images, text: PROMPTS });
    const rawMean = ref.cosines.reduce((a, b) => a + b, 0) / 3;
    console.log(`clip-score raw cosines (numpy) ${ref.cosines.map((c) => c.toFixed(6))}; batch mean ours ${raw.score} vs ${rawMean}`);
    expect(Math.abs(raw.score! - rawMean)).toBeLessThan(1e-6);
    expect(Math.abs(raw.min! - Math.min(...ref.cosines))).toBeLessThan(1e-6);
    expect(Math.abs(raw.max! - Math.max(...ref.cosines))).toBeLessThan(1e-6);
  });

  test("one prompt broadcasts over a batch; a mismatched count is an error", async () => {
    const images = randomImages(2, 2);
    const m = await run(clipScore, {}, { images, text: ["sun"] });
    expect(Number.isFinite(m.score)).toBe(true);
    expect(run(clipScore, {}, { images, text: ["a", "b", "c"] })).rejects.toThrow(/3 texts for 2 images/);
  });
});

describe("r-precision", () => {
  test.skipIf(!HAS_PYTHON_REFERENCE)("ranks match the numpy reference over the same candidates", async () => {
    const pool = ["red heart", "blue heart", "green heart", "cat face", "dog face", "pizza", "rocket", "sun", "star", "fire"];
    const images = randomImages(3, 3);
    const tok = await loadTokenizer(models, "clip_eval/tokenizer");
    const cands = PROMPTS.map((p) => candidateCaptions(p, pool, 6));
    expect(cands.every((c, i) => c[0] === PROMPTS[i] && c.length === 6 && new Set(c).size === 6)).toBe(true);
    const ref = reference({ images: [...images.data], ids: PROMPTS.map((p) => tok.encode(p)), candidates: cands.map((c) => c.map((t) => tok.encode(t))) });
    const m = await run(rPrecision, { captions: pool, candidates: 6 }, { images, text: PROMPTS });
    const refRank = ref.ranks!.reduce((a, b) => a + b, 0) / 3;
    const refPrec = ref.ranks!.filter((r) => r === 1).length / 3;
    console.log(`r-precision: ours precision ${m.precision} rank ${m.rank}; numpy ranks ${ref.ranks}`);
    expect(m.rank).toBeCloseTo(refRank, 12);
    expect(m.precision).toBeCloseTo(refPrec, 12);
  });

  test("distractors are deterministic per prompt and never the prompt", () => {
    const pool = ["a", "b", "c", "d", "e", "Red Heart"];
    expect(candidateCaptions("red heart", pool, 4)).toEqual(candidateCaptions("red heart", pool, 4));
    expect(candidateCaptions("red heart", pool, 100).slice(1)).not.toContain("Red Heart");
    expect(candidateCaptions("red heart", pool, 100)).toHaveLength(6);
  });

  test("reads its caption pool from the model folder by default", async () => {
    const m = await run(rPrecision, {}, { images: randomImages(4, 1), text: ["pizza"] });
    expect(m.rank).toBeGreaterThanOrEqual(1);
    expect(m.rank).toBeLessThanOrEqual(18);
  });
});

describe("frechet-distance", () => {
  test.skipIf(!HAS_PYTHON_REFERENCE)("node distance to the reference statistics matches numpy/scipy", async () => {
    const images = randomImages(5, 8);
    const tok = await loadTokenizer(models, "clip_eval/tokenizer");
    const ref = reference({ images: [...images.data], ids: new Array(8).fill(tok.encode("x")), fd: true });
    const m = await run(frechetDistance, {}, { images });
    const rel = Math.abs(m.distance! - ref.fd!) / ref.fd!;
    console.log(`frechet-distance node (8 images, rank-deficient): ours ${m.distance}, numpy ${ref.fd}, rel ${rel.toExponential(2)}`);
    expect(rel).toBeLessThan(1e-4);
    expect(m.n).toBe(8);
    const one = await run(frechetDistance, {}, { images: randomImages(6, 1) });
    expect(Number.isFinite(one.distance)).toBe(true);
  });
});

describe("preprocessing", () => {
  test("identity at the model's size; normalisation only", () => {
    const p = parsePreprocessor({ size: { shortest_edge: 64 }, crop_size: { height: 64, width: 64 }, image_mean: [0.5, 0.5, 0.5], image_std: [0.5, 0.5, 0.5] });
    const img = randomImages(7, 1);
    const px = preprocessImages(img, p);
    expect(px.dims).toEqual([1, 3, 64, 64]);
    expect(px.data[100]).toBeCloseTo((img.data[100]! - 0.5) / 0.5, 6);
  });

  test("2× shrink averages 2×2 blocks; constants stay constant; centre crop", () => {
    const src = Float32Array.from({ length: 3 * 4 * 4 }, (_, i) => i);
    const half = resizeBilinear(src, 4, 4, 2, 2);
    expect(half[0]).toBeCloseTo((0 + 1 + 4 + 5) / 4, 6);
    const flat = resizeBilinear(new Float32Array(3 * 5 * 7).fill(0.25), 5, 7, 13, 3);
    expect(flat.every((v) => Math.abs(v - 0.25) < 1e-6)).toBe(true);
    const p = parsePreprocessor({ do_resize: false, crop_size: 2, do_normalize: false });
    const crop = preprocessImages({ dims: [1, 3, 4, 4], data: src }, p);
    expect([...crop.data.subarray(0, 4)]).toEqual([5, 6, 9, 10]);
  });
});

describe("metric nodes in a pipeline", () => {
  /** tiny-sd's files, with the test evaluation CLIP overlaid at clip_eval/. */
  function overlay(base: ModelSource, extra: ModelSource): ModelSource {
    const pick = (p: string) => (p.startsWith("clip_eval/") ? extra : base);
    return { root: base.root, read: (p) => pick(p).read(p), exists: (p) => pick(p).exists(p), sub: (p) => base.sub(p) };
  }

  test("metrics land in RunResult.metrics as node.metric", async () => {
    const doc = tinyDoc();
    doc.nodes.clip = { use: "clip-score", inputs: { images: "decode.images", text: "$prompt" } };
    doc.nodes.rprec = { use: "r-precision", config: { candidates: 10 }, inputs: { images: "decode.images", text: "$prompt" } };
    doc.nodes.fd = { use: "frechet-distance", inputs: { images: "decode.images" } };
    const registry = new PluginRegistry(builtinPlugins); // the built-ins include the metric plugins
    const pipeline = await Pipeline.load(doc, { registry, onnx, models: overlay(fileSource("models/tiny-sd"), models) });
    // Metric nodes run when the caller asks for metrics; without it they are skipped (and load no session).
    expect((await pipeline.run({ prompt: "red heart", steps: 2, batchSize: 2, seed: 1 })).metrics).toEqual({});
    const r = await pipeline.run({ prompt: "red heart", steps: 2, batchSize: 2, seed: 1 }, { metrics: true });
    console.log("pipeline metrics:", JSON.stringify(r.metrics));
    for (const k of ["clip.score", "clip.min", "clip.max", "rprec.precision", "rprec.rank", "fd.distance", "fd.n"]) {
      expect(Number.isFinite(r.metrics[k])).toBe(true);
    }
    expect(r.metrics["fd.n"]).toBe(2);
    await pipeline.dispose();
  });
});
