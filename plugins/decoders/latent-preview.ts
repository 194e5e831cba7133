/**
 * Cheap preview: a linear map from each latent cell's channels to RGB, upsampled (nearest) to
 * pixel size. Costs microseconds, so every denoising step can have a frame. Weights come from a
 * JSON file in the model folder (fitted by least squares in the model recipe) or from config;
 * the default is the widely used approximation for Stable Diffusion 1.x latents.
 */
import { z } from "zod";
import { ModelFileError, readJson } from "../../core/model-source.ts";
import { formatIssues } from "../../core/params.ts";
import { definePlugin } from "../../core/plugin.ts";

/** SD 1.x latent → RGB factors (community-measured), applied to scaled latents, output in [-1, 1]. */
const SD15 = {
  weights: [
    [0.298, 0.187, -0.158, -0.184],
    [0.207, 0.286, 0.189, -0.271],
    [0.208, 0.173, 0.264, -0.473],
  ],
  bias: [0, 0, 0],
  range: [-1, 1] as [number, number],
};

const Projection = z
  .object({
    input: z.literal("scaled_latents").optional(),
    weights: z.array(z.array(z.number())).length(3),
    bias: z.array(z.number()).length(3).default([0, 0, 0]),
    /** Range of the projection's output; mapped to [0, 1]. */
    range: z.tuple([z.number(), z.number()]).default([0, 1]),
    /** How the projection was fitted (documentation only). */
    fit: z.string().optional(),
  })
  .strict();

const Config = z
  .object({
    /** JSON file in the model folder with {weights, bias, range}; used when present. */
    file: z.string().default("preview/projection.json"),
    projection: Projection.optional(),
    /** Output size per latent cell (8 for SD's VAE). */
    upscale: z.number().int().min(1).max(16).default(8),
  })
  .strict();

export default definePlugin({
  name: "latent-preview",
  kind: "decoder",
  description: "Linear latent→RGB projection for per-step previews (no neural network)",
  configSchema: Config,
  inputs: { latents: "latents" },
  outputs: { images: "images" },
  deterministic: true,
  async create(config, ctx) {
    let proj = config.projection;
    if (!proj && (await ctx.models.exists(config.file))) {
      const r = Projection.safeParse(await readJson(ctx.models, config.file));
      if (!r.success) throw new ModelFileError(`${ctx.models.root}/${config.file}`, formatIssues(r.error));
      proj = r.data;
    }
    const { weights, bias, range } = proj ?? SD15;
    const [lo, hi] = range;
    const f = config.upscale;
    return {
      async run({ latents }) {
        const [b, c, h, w] = latents.dims as [number, number, number, number];
        if (weights[0]!.length !== c) throw new RangeError(`latent-preview: projection has ${weights[0]!.length} inputs but latents have ${c} channels`);
        const H = h * f;
        const W = w * f;
        const out = new Float32Array(b * 3 * H * W);
        const src = latents.data;
        for (let n = 0; n < b; n++) {
          for (let y = 0; y < h; y++) {
            for (let x = 0; x < w; x++) {
              for (let k = 0; k < 3; k++) {
                let v = bias[k]!;
                const row = weights[k]!;
                for (let ch = 0; ch < c; ch++) v += row[ch]! * src[((n * c + ch) * h + y) * w + x]!;
                v = Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
                const base = (n * 3 + k) * H * W;
                for (let dy = 0; dy < f; dy++) out.fill(v, base + (y * f + dy) * W + x * f, base + (y * f + dy) * W + x * f + f);
              }
            }
          }
        }
        return { images: { dims: [b, 3, H, W], data: out } };
      },
    };
  },
});
