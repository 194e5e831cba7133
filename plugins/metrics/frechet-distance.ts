/**
 * Fréchet distance (FID's formula) between the features of the run's images and reference
 * statistics, with features from a named ONNX image model (the evaluation CLIP's image tower by
 * default; any model with one image input and a [B, E] output by config).
 *
 * Reference statistics are a JSON file in the model folder: `{ "n", "mu": [E], "sigma": [[E×E]] }`
 * (what `bun run eval --save-reference` writes, or the model recipe ships). As a pipeline node it
 * compares one run's batch (a handful of images: a rank-deficient covariance, computed stably, but a
 * noisy estimate); `bun run eval` accumulates features across a whole grid cell for the real figure.
 */
import { z } from "zod";
import { readJson } from "../../core/model-source.ts";
import { definePlugin } from "../../core/plugin.ts";
import type { Tensor } from "../../core/tensor.ts";
import { ClipImageTower, ClipEvalFiles, l2normalize } from "./clip-eval.ts";
import { frechetDistance } from "./linalg.ts";
import { FeatureStats, gaussianFromJSON, type GaussianStatsJson } from "./stats.ts";

const Config = z
  .object({
    imageModel: ClipEvalFiles.imageModel,
    preprocessor: ClipEvalFiles.preprocessor,
    maxBatch: ClipEvalFiles.maxBatch,
    /** L2-normalise each feature vector first (the emoji model card's variant); the reference must match. */
    normalize: z.boolean().default(false),
    /** Reference statistics (JSON: n, mu, sigma) in the model folder. */
    reference: z.string().default("clip_eval/reference_stats.json"),
  })
  .strict();

export type FrechetDistanceConfig = z.output<typeof Config>;

export default definePlugin({
  name: "frechet-distance",
  kind: "metric",
  description: "Fréchet distance of image features (evaluation CLIP image tower by default) to reference statistics",
  configSchema: Config,
  inputs: { images: "images" },
  outputs: { metrics: "metrics" },
  deterministic: true,
  async create(config, ctx) {
    const [tower, json] = await Promise.all([
      ClipImageTower.load(ctx.models, ctx.onnx, config),
      readJson<GaussianStatsJson>(ctx.models, config.reference),
    ]);
    const reference = gaussianFromJSON(json);
    return {
      async run(inputs) {
        const images = inputs.images as Tensor;
        const raw = await tower.embed(images);
        const f = config.normalize ? l2normalize(raw) : raw;
        if (f.dims[1] !== reference.mu.length) {
          throw new Error(`frechet-distance: ${config.imageModel} gives ${f.dims[1]}-dim features but ${config.reference} has ${reference.mu.length}`);
        }
        const stats = new FeatureStats(f.dims[1]!).add(f.data, f.dims[0]!);
        return { metrics: { distance: frechetDistance(stats.gaussian(), reference), n: stats.n } };
      },
    };
  },
});
