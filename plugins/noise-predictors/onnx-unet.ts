/**
 * ONNX UNet noise predictor (Stable Diffusion's `unet/model.onnx`: `sample`, `timestep`,
 * `encoder_hidden_states` → `out_sample`). Exporters disagree on the timestep: float [B], float
 * scalar [], int64 [1] — the shape and dtype are read from the model and the timestep fed to fit.
 */
import { z } from "zod";
import { readComponentConfig, type ComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError } from "../../core/model-source.ts";
import { sizeProblem, type SizeRule } from "../../core/params.ts";
import { definePlugin } from "../../core/plugin.ts";
import type { Feed } from "../../core/onnx.ts";

const Config = z
  .object({
    model: z.string().default("unet/model.onnx"),
    /** Pixels per latent cell (SD's VAE: 8). Read from vae_decoder/config.json when present. */
    vaeScaleFactor: z.number().int().positive().optional(),
    /** Latent channels; default: from the model's `sample` input, else unet/config.json, else 4. */
    latentChannels: z.number().int().positive().optional(),
  })
  .strict();

/**
 * Pixels per latent cell. The ratio of the VAE's and the UNet's `sample_size` is what the model was
 * trained with; diffusers' 2^(len(block_out_channels)−1) rule only holds for its own VAE layout
 * (the emoji VAE has 3 blocks and a stride-2 stem: factor 8, not 4). SD 1.x ONNX exports ship no
 * configs: 8.
 */
function vaeScaleFactor(vae: ComponentConfig, unet: ComponentConfig): number {
  if (typeof vae.sample_size === "number" && typeof unet.sample_size === "number" && vae.sample_size % unet.sample_size === 0) {
    return vae.sample_size / unet.sample_size;
  }
  if (typeof vae.sample_size === "number" && typeof vae.latent_sample_size === "number") return vae.sample_size / vae.latent_sample_size;
  if (Array.isArray(vae.block_out_channels) && vae.block_out_channels.length > 0) return 2 ** (vae.block_out_channels.length - 1);
  return 8;
}

export default definePlugin({
  name: "onnx-unet",
  kind: "noise-predictor",
  description: "UNet noise predictor from an ONNX file (diffusers ONNX layout)",
  configSchema: Config,
  async create(config, ctx) {
    const model = await ctx.onnx.load(ctx.models, config.model);
    const floats = ["float32", "float16"];
    model.expectInput("sample", { rank: 4, types: floats, what: "latents [batch, channels, height, width]" });
    model.expectInput("timestep", { rank: [0, 1], types: [...floats, "int64", "int32"], what: "a scalar or [batch]" });
    model.expectInput("encoder_hidden_states", { rank: 3, types: floats, what: "text embeddings [batch, tokens, dim]" });
    const outName = model.outputs.find((o) => o.name === "out_sample")?.name ?? model.outputs[0]?.name;
    if (!outName) throw new ModelFileError(model.file, "has no outputs");
    const unetConfig = await readComponentConfig(ctx.models, "unet/config.json");
    const vaeConfig = await readComponentConfig(ctx.models, "vae_decoder/config.json");
    const factor = config.vaeScaleFactor ?? vaeScaleFactor(vaeConfig, unetConfig);
    const sampleShape = model.input("sample").shape;
    const modelChannels = sampleShape[1];
    if (typeof modelChannels === "number") {
      for (const [file, key, value] of [["unet/config.json", "in_channels", unetConfig.in_channels], ["vae_decoder/config.json", "latent_channels", vaeConfig.latent_channels]] as const) {
        if (value !== undefined && value !== modelChannels) {
          throw new ModelFileError(`${ctx.models.root}/${file}`, `${key}: ${value}, but ${model.file} takes latents with ${modelChannels} channels`);
        }
      }
    }
    const channels = config.latentChannels ?? (typeof sampleShape[1] === "number" ? sampleShape[1] : (typeof unetConfig.in_channels === "number" ? unetConfig.in_channels : 4));
    const ts = model.input("timestep");
    const batchDim = sampleShape[0];
    // A [batch]-shaped timestep can differ per row (cross-run batching merges runs at different
    // steps); a scalar or [1] one cannot.
    const perRow = ts.shape.length === 1 && ts.shape[0] !== 1;
    // A static latent size (a fixed-shape export) allows one image size; a dynamic one needs the
    // latents to survive the UNet's downsamplings (2^(levels−1)) when its config tells the levels.
    const [, , lh, lw] = sampleShape;
    const levels = Array.isArray(unetConfig.block_out_channels) ? unetConfig.block_out_channels.length : 1;
    const sizes: SizeRule =
      typeof lh === "number" && typeof lw === "number"
        ? { multipleOf: factor, fixed: { height: lh * factor, width: lw * factor } }
        : { multipleOf: factor * 2 ** Math.max(0, levels - 1) };
    return {
      maxBatch: typeof batchDim === "number" ? batchDim : Infinity,
      perRowTimesteps: perRow,
      sizes,
      latentShape(height, width) {
        const bad = sizeProblem(sizes, height, width);
        if (bad) throw new RangeError(`${bad.field}: ${bad.message}`);
        return [channels, height / factor, width / factor];
      },
      async predict({ sample, timestep, encoderHiddenStates }) {
        const b = sample.dims[0]!;
        let t: Feed;
        const isInt = ts.type === "int64" || ts.type === "int32";
        const dims = ts.shape.length === 0 ? [] : ts.shape[0] === 1 ? [1] : [b];
        const n = dims.length === 0 ? 1 : dims[0]!;
        let values: Float32Array;
        if (typeof timestep === "number") values = new Float32Array(n).fill(timestep);
        else if (perRow && timestep.length === b) values = timestep;
        else if (timestep.every((v) => v === timestep[0])) values = new Float32Array(n).fill(timestep[0]!);
        else throw new RangeError(`onnx-unet: ${model.file} takes one timestep for the whole batch (shape [${ts.shape.join(",")}]), got ${timestep.length} different ones`);
        if (isInt) t = { dims, ints: Array.from(values, Math.round) };
        else t = { dims, data: values };
        const out = await model.run({ sample, timestep: t, encoder_hidden_states: encoderHiddenStates }, [outName]);
        return out[outName]!;
      },
    };
  },
});
