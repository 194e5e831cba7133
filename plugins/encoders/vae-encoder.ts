/**
 * VAE encoder for img2img (`vae_encoder/model.onnx`: `sample` in [-1, 1] → `latent_sample`),
 * output multiplied by the VAE `scaling_factor` so it is in the space the UNet denoises.
 */
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";
import { scalingFactorOf } from "../decoders/vae-decoder.ts";

const Config = z
  .object({
    model: z.string().default("vae_encoder/model.onnx"),
    scalingFactor: z.number().positive().optional(),
    /** Symbolic axes of the model fixed to a size (onnxruntime's freeDimensionOverrides; see core/onnx.ts). */
    freeDimensions: z.record(z.string(), z.number().int().positive()).optional(),
  })
  .strict();

export default definePlugin({
  name: "vae-encoder",
  kind: "encoder",
  description: "VAE encoder from an ONNX file: RGB images → scaled latents (img2img)",
  configSchema: Config,
  inputs: { images: "images" },
  outputs: { latents: "latents" },
  deterministic: true,
  async create(config, ctx) {
    const [model, scale] = await Promise.all([ctx.onnx.load(ctx.models, config.model, config.freeDimensions ? { freeDimensions: config.freeDimensions } : {}), scalingFactorOf(ctx.models, config.scalingFactor)]);
    model.expectInput("sample", { rank: 4, types: ["float32", "float16"], what: "images [batch, 3, height, width]" });
    const outName = model.outputs[0]!.name;
    return {
      async run({ images }) {
        const data = images.data.map((v) => v * 2 - 1);
        const z = (await model.run({ sample: { dims: images.dims, data } }, [outName]))[outName]!;
        return { latents: { dims: z.dims, data: z.data.map((v) => v * scale) } };
      },
    };
  },
});
