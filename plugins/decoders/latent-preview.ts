/**
 * Cheap preview: a linear map from each latent cell's channels to RGB, upsampled (nearest) to
 * pixel size. Costs microseconds, so every denoising step can have a frame. Weights come from a
 * JSON file in the model folder (fitted by least squares in the model recipe) or from config.
 * Without either, the widely used approximation for Stable Diffusion 1.x latents is used — but only
 * for a model whose VAE is SD 1.x's (scaling_factor 0.18215); for any other model a missing
 * `preview/projection.json` is an error naming it, since those factors would draw noise.
 */
import { z } from "zod";
import { readComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError, readModelJson, type ModelSource } from "../../core/model-source.ts";
import { definePlugin } from "../../core/plugin.ts";
import { scalingFactorOf, SD_SCALING_FACTOR } from "./vae-decoder.ts";

/** Latent channels the model folder declares (VAE latent_channels, else UNet in_channels), if any. */
async function latentChannelsOf(models: ModelSource): Promise<number | undefined> {
  for (const [file, key] of [["vae_decoder/config.json", "latent_channels"], ["unet/config.json", "in_channels"]] as const) {
    const c = await readComponentConfig(models, file);
    if (c[key] !== undefined) return c[key];
  }
  return undefined;
}

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

const finite = z.number().finite();
const Projection = z
  .object({
    input: z.literal("scaled_latents").optional(),
    weights: z.array(z.array(finite).min(1)).length(3, "weights: needs 3 rows (R, G, B), one weight per latent channel in each"),
    bias: z.array(finite).length(3).default([0, 0, 0]),
    /** Range of the projection's output; mapped to [0, 1]. */
    range: z.tuple([finite, finite]).default([0, 1]),
    /** How the projection was fitted (documentation only). */
    fit: z.string().optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    const n = p.weights[0]?.length;
    p.weights.forEach((row, i) => {
      if (row.length !== n) ctx.addIssue({ code: "custom", path: ["weights", i], message: `weights.${i}: has ${row.length} weights, row 0 has ${n}` });
    });
    if (!(p.range[0] < p.range[1])) ctx.addIssue({ code: "custom", path: ["range"], message: `range: [${p.range.join(", ")}] must be [low, high] with low < high` });
  });

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
    const file = `${ctx.models.root}/${config.file}`;
    const from = proj ? "the pipeline's latent-preview config" : file;
    if (!proj && (await ctx.models.exists(config.file))) proj = await readModelJson(ctx.models, config.file, Projection);
    if (!proj) {
      // The built-in factors describe SD 1.x latents only; for another VAE they would draw garbage.
      const scale = await scalingFactorOf(ctx.models);
      if (scale !== SD_SCALING_FACTOR) {
        throw new ModelFileError(file, `file not found: latent-preview needs a fitted projection for this model (its VAE scaling_factor ${scale} is not SD 1.x's ${SD_SCALING_FACTOR}, the only latents the built-in factors fit)`);
      }
    }
    const { weights, bias, range } = proj ?? SD15;
    const channels = await latentChannelsOf(ctx.models);
    if (channels !== undefined && weights[0]!.length !== channels) {
      throw new ModelFileError(proj ? from : file, `weights: ${weights[0]!.length} per row, but the model's latents have ${channels} channels`);
    }
    const [lo, hi] = range;
    const f = config.upscale;
    return {
      async run({ latents }) {
        const [b, c, h, w] = latents.dims as [number, number, number, number];
        if (weights[0]!.length !== c) throw new ModelFileError(proj ? from : "latent-preview (SD 1.x factors)", `weights: ${weights[0]!.length} per row, but the latents have ${c} channels`);
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
