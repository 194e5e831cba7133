/**
 * VAE decoder (Stable Diffusion's `vae_decoder/model.onnx`: `latent_sample` → `sample` in [-1, 1]).
 * Latents arrive scaled (what the UNet sees); they are divided by the VAE's `scaling_factor`
 * (vae_decoder/config.json, else SD 1.x's 0.18215) before decoding, and pixels mapped to [0, 1].
 */
import { z } from "zod";
import { readComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError, type ModelSource } from "../../core/model-source.ts";
import { definePlugin } from "../../core/plugin.ts";
import type { Tensor } from "../../core/tensor.ts";

export const SD_SCALING_FACTOR = 0.18215;
const FLOATS = ["float32", "float16"];

const Config = z
  .object({
    model: z.string().default("vae_decoder/model.onnx"),
    scalingFactor: z.number().positive().optional(),
    /** Decode this many images per model call (bounds peak memory for large batches). */
    maxBatch: z.number().int().positive().default(8),
    /** Symbolic axes of the model fixed to a size (onnxruntime's freeDimensionOverrides; see core/onnx.ts). */
    freeDimensions: z.record(z.string(), z.number().int().positive()).optional(),
  })
  .strict();

/**
 * The VAE scaling factor: explicit, else the `scaling_factor` of the VAE configs in the folder
 * (each one checked; two that disagree are an error naming both), else SD 1.x's.
 */
export async function scalingFactorOf(models: ModelSource, explicit?: number): Promise<number> {
  if (explicit !== undefined) return explicit;
  let found: { file: string; value: number } | undefined;
  for (const f of ["vae_decoder/config.json", "vae_encoder/config.json", "vae/config.json"]) {
    const value = (await readComponentConfig(models, f)).scaling_factor;
    if (value === undefined) continue;
    if (found && found.value !== value) {
      throw new ModelFileError(`${models.root}/${f}`, `scaling_factor: ${value}, but ${models.root}/${found.file} says ${found.value} (encoder and decoder must agree)`);
    }
    found ??= { file: f, value };
  }
  return found?.value ?? SD_SCALING_FACTOR;
}

export default definePlugin({
  name: "vae-decoder",
  kind: "decoder",
  description: "VAE decoder from an ONNX file: latents → RGB images",
  configSchema: Config,
  inputs: { latents: "latents" },
  outputs: { images: "images" },
  deterministic: true,
  async create(config, ctx) {
    const [model, scale] = await Promise.all([ctx.onnx.load(ctx.models, config.model, config.freeDimensions ? { freeDimensions: config.freeDimensions } : {}), scalingFactorOf(ctx.models, config.scalingFactor)]);
    model.expectInput("latent_sample", { rank: 4, types: FLOATS, what: "latents [batch, channels, height, width]" });
    const outName = model.outputs.find((o) => o.name === "sample")?.name ?? model.outputs[0]!.name;
    return {
      async run({ latents }) {
        const b = latents.dims[0]!;
        const per = latents.data.length / b;
        const parts: Tensor[] = [];
        for (let i = 0; i < b; i += config.maxBatch) {
          const n = Math.min(config.maxBatch, b - i);
          const data = latents.data.slice(i * per, (i + n) * per);
          for (let j = 0; j < data.length; j++) data[j] = data[j]! / scale;
          parts.push((await model.run({ latent_sample: { dims: [n, ...latents.dims.slice(1)], data } }, [outName]))[outName]!);
        }
        const dims = [b, ...parts[0]!.dims.slice(1)];
        const out = new Float32Array(parts.reduce((s, p) => s + p.data.length, 0));
        let off = 0;
        for (const p of parts) {
          for (let j = 0; j < p.data.length; j++) out[off + j] = Math.min(1, Math.max(0, (p.data[j]! + 1) / 2));
          off += p.data.length;
        }
        return { images: { dims, data: out } };
      },
    };
  },
});
