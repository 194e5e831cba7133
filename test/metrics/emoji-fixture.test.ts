/**
 * The TypeScript metrics reproduce the emoji recipe's Python figures (test/fixtures/emoji-metrics,
 * see its README) to 1e-4: image features from the PNGs through models/emoji-64/clip_eval, CLIP
 * scores, R-precision among the 32 captions, and the Fréchet distance (raw and L2-normalised).
 * Skipped until both the model and the fixture are present.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { fileSource } from "../../core/adapters/node.ts";
import { concat0, type Tensor } from "../../core/tensor.ts";
import { readImage } from "../../api/cli/image-file.ts";
import { ClipImageTower, ClipTextTower, l2normalize } from "../../plugins/metrics/clip-eval.ts";
import { clipScores } from "../../plugins/metrics/clip-score.ts";
import { frechetDistance } from "../../plugins/metrics/linalg.ts";
import { candidateCaptions, promptRank } from "../../plugins/metrics/r-precision.ts";
import { FeatureStats } from "../../plugins/metrics/stats.ts";
import { testRuntime } from "../helpers.ts";

const FIX = "test/fixtures/emoji-metrics";
const MODEL = "models/emoji-64";
const ready = existsSync(`${FIX}/fixture.json`) && existsSync(`${MODEL}/clip_eval/image_model.onnx`) && existsSync(`${MODEL}/clip_eval/text_model.onnx`);

interface Fixture {
  items: { file: string; caption: string }[];
  real_image_embeds: number[][];
  generated_image_embeds: number[][];
  text_embeds: number[][];
  clip_score_real: number[];
  clip_score_generated: number[];
  r_precision_real: number;
  r_precision_generated: number;
  frechet_distance_raw: number;
  frechet_distance_l2normalised: number;
}

const matrix = (rows: number[][]): Tensor => ({ dims: [rows.length, rows[0]!.length], data: Float32Array.from(rows.flat()) });
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const stats = (f: Tensor) => new FeatureStats(f.dims[1]!).add(f.data, f.dims[0]!).gaussian();
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe.skipIf(!ready)("emoji-metrics fixture (Python recipe) vs TypeScript", () => {
  const onnx = testRuntime();
  afterAll(() => onnx.dispose());
  const fx = ready ? (JSON.parse(readFileSync(`${FIX}/fixture.json`, "utf8")) as Fixture) : undefined!;
  const models = fileSource(MODEL);
  const loadSet = async (dir: string) => concat0(await Promise.all(fx.items.map((it) => readImage(`${FIX}/${dir}/${it.file}`, 64, 64))));
  const captions = () => fx.items.map((i) => i.caption);

  test("image and text features match the fixture's", async () => {
    const tower = await ClipImageTower.load(models, onnx, { imageModel: "clip_eval/image_model.onnx", preprocessor: "clip_eval/preprocessor_config.json", maxBatch: 32 });
    const text = await ClipTextTower.load(models, onnx, { textModel: "clip_eval/text_model.onnx", tokenizer: "clip_eval/tokenizer", maxBatch: 32 });
    const real = await tower.embed(await loadSet("real"));
    const gen = await tower.embed(await loadSet("generated"));
    const ft = await text.embed(captions());
    const d = [maxAbs(real.data, matrix(fx.real_image_embeds).data), maxAbs(gen.data, matrix(fx.generated_image_embeds).data), maxAbs(ft.data, matrix(fx.text_embeds).data)];
    console.log(`features max |Δ|: real ${d[0]!.toExponential(2)}, generated ${d[1]!.toExponential(2)}, text ${d[2]!.toExponential(2)}`);
    for (const x of d) expect(x).toBeLessThan(1e-4);

    // The metrics from the features we computed (end to end), to 1e-4.
    const sr = clipScores(real, ft);
    const sg = clipScores(gen, ft);
    const ds = [maxAbs(sr, fx.clip_score_real), maxAbs(sg, fx.clip_score_generated)];
    console.log(`clip scores max |Δ| (end to end): real ${ds[0]!.toExponential(2)}, generated ${ds[1]!.toExponential(2)}`);
    for (const x of ds) expect(x).toBeLessThan(1e-4);
    const fd = frechetDistance(stats(real), stats(gen));
    const fdl2 = frechetDistance(stats(l2normalize(real)), stats(l2normalize(gen)));
    console.log(`FD end to end: raw ${fd} vs ${fx.frechet_distance_raw} (rel ${rel(fd, fx.frechet_distance_raw).toExponential(2)}); l2 ${fdl2} vs ${fx.frechet_distance_l2normalised} (rel ${rel(fdl2, fx.frechet_distance_l2normalised).toExponential(2)})`);
    expect(rel(fd, fx.frechet_distance_raw)).toBeLessThan(1e-4);
    expect(rel(fdl2, fx.frechet_distance_l2normalised)).toBeLessThan(1e-4);
  });

  test("metrics from the fixture's own features reproduce its figures", () => {
    const real = matrix(fx.real_image_embeds);
    const gen = matrix(fx.generated_image_embeds);
    const ft = matrix(fx.text_embeds);
    expect(maxAbs(clipScores(real, ft), fx.clip_score_real)).toBeLessThan(1e-4);
    expect(maxAbs(clipScores(gen, ft), fx.clip_score_generated)).toBeLessThan(1e-4);
    // R-precision among the 32 captions: candidates = own caption + the other 31.
    const caps = captions();
    const rp = (img: Tensor) => {
      let hits = 0;
      for (let i = 0; i < caps.length; i++) {
        const order = candidateCaptions(caps[i]!, caps, caps.length);
        const cand = matrix(order.map((c) => fx.text_embeds[caps.indexOf(c)]!));
        if (promptRank(img, i, cand) === 1) hits++;
      }
      return hits / caps.length;
    };
    const [rpr, rpg] = [rp(real), rp(gen)];
    console.log(`R-precision: real ${rpr} vs ${fx.r_precision_real}; generated ${rpg} vs ${fx.r_precision_generated}`);
    expect(rpr).toBeCloseTo(fx.r_precision_real, 10);
    expect(rpg).toBeCloseTo(fx.r_precision_generated, 10);
    const fd = frechetDistance(stats(real), stats(gen));
    const fdl2 = frechetDistance(stats(l2normalize(real)), stats(l2normalize(gen)));
    console.log(`FD from fixture features: raw ${fd} (rel ${rel(fd, fx.frechet_distance_raw).toExponential(2)}), l2 ${fdl2} (rel ${rel(fdl2, fx.frechet_distance_l2normalised).toExponential(2)})`);
    expect(rel(fd, fx.frechet_distance_raw)).toBeLessThan(1e-4);
    expect(rel(fdl2, fx.frechet_distance_l2normalised)).toBeLessThan(1e-4);
  });
});
