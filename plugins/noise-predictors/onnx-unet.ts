/**
 * ONNX UNet noise predictor (Stable Diffusion's `unet/model.onnx`: `sample`, `timestep`,
 * `encoder_hidden_states` → `out_sample`). Exporters disagree on the timestep: float [B], float
 * scalar [], int64 [1] — the shape and dtype are read from the model and the timestep fed to fit.
 */
import { z } from "zod";
import { ModelFileError, readJson } from "../../core/model-source.ts";
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

export default definePlugin({
  name: "onnx-unet",
  kind: "noise-predictor",
  description: "UNet noise predictor from an ONNX file (diffusers ONNX layout)",
  configSchema: Config,
  async create(config, ctx) {
    const model = await ctx.onnx.load(ctx.models, config.model);
    for (const name of ["sample", "timestep", "encoder_hidden_states"]) model.input(name);
    const outName = model.outputs.find((o) => o.name === "out_sample")?.name ?? model.outputs[0]?.name;
    if (!outName) throw new ModelFileError(model.file, "has no outputs");
    const unetConfig = (await ctx.models.exists("unet/config.json")) ? await readJson<Record<string, number>>(ctx.models, "unet/config.json") : {};
    const vaeConfig = (await ctx.models.exists("vae_decoder/config.json")) ? await readJson<Record<string, unknown>>(ctx.models, "vae_decoder/config.json") : {};
    const blocks = Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 0;
    const factor = config.vaeScaleFactor ?? (typeof vaeConfig.scale_factor === "number" ? vaeConfig.scale_factor : blocks ? 2 ** (blocks - 1) : 8);
    const sampleShape = model.input("sample").shape;
    const channels = config.latentChannels ?? (typeof sampleShape[1] === "number" ? sampleShape[1] : (unetConfig.in_channels ?? 4));
    const ts = model.input("timestep");
    const batchDim = sampleShape[0];
    return {
      maxBatch: typeof batchDim === "number" ? batchDim : Infinity,
      latentShape(height, width) {
        if (height % factor || width % factor) throw new RangeError(`height and width must be multiples of ${factor} for this model, got ${width}×${height}`);
        return [channels, height / factor, width / factor];
      },
      async predict({ sample, timestep, encoderHiddenStates }) {
        const b = sample.dims[0]!;
        let t: Feed;
        const isInt = ts.type === "int64" || ts.type === "int32";
        const dims = ts.shape.length === 0 ? [] : ts.shape[0] === 1 ? [1] : [b];
        const n = dims.length === 0 ? 1 : dims[0]!;
        if (isInt) t = { dims, ints: new Array<number>(n).fill(Math.round(timestep)) };
        else t = { dims, data: new Float32Array(n).fill(timestep) };
        const out = await model.run({ sample, timestep: t, encoder_hidden_states: encoderHiddenStates }, [outName]);
        return out[outName]!;
      },
    };
  },
});
