/**
 * CLIP R-precision (top-1): for each generated image, is its prompt the best match among N captions
 * (the prompt plus N−1 distractors) under the evaluation CLIP? The node reports `precision` (fraction
 * of the batch retrieved at rank 1) and `rank` (mean rank of the prompt, 1 = best).
 *
 * Distractors come from a caption pool (inline `captions`, or a JSON array of strings in the model
 * folder at `captionsFile`), excluding the prompt itself, drawn by a seeded shuffle keyed on the
 * prompt so a prompt always meets the same distractors (deterministic, cacheable).
 */
import { z } from "zod";
import { readJson } from "../../core/model-source.ts";
import { definePlugin } from "../../core/plugin.ts";
import { createRng } from "../../core/random.ts";
import type { Tensor } from "../../core/tensor.ts";
import { ClipEvalFiles, ClipImageTower, ClipTextTower, promptsFor, rowCosine } from "./clip-eval.ts";

const Config = z
  .object({
    ...ClipEvalFiles,
    /** Captions to draw distractors from. */
    captions: z.array(z.string()).optional(),
    /** …or a JSON array of strings in the model folder (used when `captions` is absent). */
    captionsFile: z.string().default("clip_eval/captions.json"),
    /** N: candidates per image, the prompt included (the issue's bar uses 100). */
    candidates: z.number().int().min(2).max(10000).default(100),
    seed: z.number().int().min(0).default(0),
  })
  .strict();

export type RPrecisionConfig = z.output<typeof Config>;

function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

const norm = (s: string) => s.trim().toLowerCase();

/** The prompt followed by up to N−1 distractors from `pool` (never the prompt itself), deterministic per prompt. */
export function candidateCaptions(prompt: string, pool: readonly string[], n: number, seed = 0): string[] {
  const others = [...new Set(pool.filter((c) => norm(c) !== norm(prompt)))];
  const rng = createRng((hashString(prompt) + seed * 0x9e3779b1) % Number.MAX_SAFE_INTEGER);
  for (let i = others.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [others[i], others[j]] = [others[j]!, others[i]!];
  }
  return [prompt, ...others.slice(0, n - 1)];
}

/**
 * Rank (1 = best) of candidate 0 for image `i`, given image features and the candidates' text
 * features. Ties count against the prompt (a caption scoring equal to it ranks ahead), so a
 * degenerate model cannot score 1.
 */
export function promptRank(imageFeatures: Tensor, i: number, candidateFeatures: Tensor): number {
  const target = rowCosine(imageFeatures, candidateFeatures, i, 0);
  let rank = 1;
  for (let k = 1; k < candidateFeatures.dims[0]!; k++) if (rowCosine(imageFeatures, candidateFeatures, i, k) >= target) rank++;
  return rank;
}

export default definePlugin({
  name: "r-precision",
  kind: "metric",
  description: "CLIP R-precision: is the prompt the top-1 caption for the image among N (evaluation CLIP)",
  configSchema: Config,
  inputs: { images: "images", text: "text" },
  outputs: { metrics: "metrics" },
  deterministic: true,
  async create(config, ctx) {
    const pool = config.captions ?? (await readJson<unknown>(ctx.models, config.captionsFile));
    if (!Array.isArray(pool) || pool.some((c) => typeof c !== "string")) {
      throw new Error(`r-precision: ${config.captions ? "captions" : `${ctx.models.root}/${config.captionsFile}`} must be an array of strings`);
    }
    if (pool.length < 1) throw new Error("r-precision: the caption pool is empty");
    const [image, text] = await Promise.all([ClipImageTower.load(ctx.models, ctx.onnx, config), ClipTextTower.load(ctx.models, ctx.onnx, config)]);
    return {
      async run(inputs) {
        const images = inputs.images as Tensor;
        const prompts = inputs.text as string[];
        const b = images.dims[0]!;
        const fi = await image.embed(images);
        const per = promptsFor(prompts, b, "r-precision");
        let hits = 0;
        let ranks = 0;
        for (let i = 0; i < b; i++) {
          const ft = await text.embed(candidateCaptions(per[i]!, pool as string[], config.candidates, config.seed));
          const r = promptRank(fi, i, ft);
          ranks += r;
          if (r === 1) hits++;
        }
        return { metrics: { precision: hits / b, rank: ranks / b } };
      },
    };
  },
});
