/**
 * CLIP score: cosine similarity between each image's and its prompt's embeddings from the
 * evaluation CLIP, ×100 as commonly reported. Not clipped at 0 by default, as the emoji model's
 * Python recipe (and its metrics fixture) computes it; `clampAtZero: true` gives torchmetrics'
 * CLIPScore (max(100·cos, 0)). The node reports the batch mean as `score`, plus `min` and `max`.
 */
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";
import type { Tensor } from "../../core/tensor.ts";
import { ClipEvalFiles, ClipImageTower, ClipTextTower, promptsFor, rowCosine } from "./clip-eval.ts";

const Config = z
  .object({
    ...ClipEvalFiles,
    /** Multiplier on the cosine (100 as commonly reported; 1 for the raw cosine). */
    scale: z.number().positive().default(100),
    /** Clip negative similarities to 0, as torchmetrics does (the recipe does not). */
    clampAtZero: z.boolean().default(false),
  })
  .strict();

export type ClipScoreConfig = z.output<typeof Config>;

/** Per-image CLIP scores from image and text features of the same batch size. */
export function clipScores(imageFeatures: Tensor, textFeatures: Tensor, scale = 100, clampAtZero = false): number[] {
  const b = imageFeatures.dims[0]!;
  return Array.from({ length: b }, (_, i) => {
    const s = scale * rowCosine(imageFeatures, textFeatures, i);
    return clampAtZero ? Math.max(s, 0) : s;
  });
}

export default definePlugin({
  name: "clip-score",
  kind: "metric",
  description: "CLIP score (100 × cosine of image and prompt embeddings) with the evaluation CLIP",
  configSchema: Config,
  inputs: { images: "images", text: "text" },
  outputs: { metrics: "metrics" },
  deterministic: true,
  async create(config, ctx) {
    const [image, text] = await Promise.all([ClipImageTower.load(ctx.models, ctx.onnx, config), ClipTextTower.load(ctx.models, ctx.onnx, config)]);
    return {
      async run(inputs) {
        const images = inputs.images as Tensor;
        const prompts = inputs.text as string[];
        const b = images.dims[0]!;
        const [fi, ft] = await Promise.all([image.embed(images), text.embed(promptsFor(prompts, b, "clip-score"))]);
        const s = clipScores(fi, ft, config.scale, config.clampAtZero);
        return { metrics: { score: s.reduce((x, y) => x + y, 0) / b, min: Math.min(...s), max: Math.max(...s) } };
      },
    };
  },
});
