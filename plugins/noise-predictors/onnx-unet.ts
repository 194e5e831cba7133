/**
 * ONNX UNet noise predictor (Stable Diffusion's `unet/model.onnx`: `sample`, `timestep`,
 * `encoder_hidden_states` → `out_sample`). Exporters disagree on the timestep: float [B], float
 * scalar [], int64 [1] — the shape and dtype are read from the model and the timestep fed to fit.
 *
 * Extra inputs, recognised by name as the exporters write them:
 * - `text_embeds` [B, E] and `time_ids` [B, 6] (SDXL, Optimum's layout): the pooled text embedding,
 *   and (original height, width, crop top, left, target height, width) = (H, W, 0, 0, H, W) for
 *   the image being made, as diffusers' default micro-conditioning.
 * - `timestep_cond` [B, D] (LCM): the guidance-scale embedding of w = scale − 1 (Luo et al. 2023,
 *   after Ho & Salimans' sinusoidal timestep embedding): with w' = 1000·w, half = ⌊D/2⌋,
 *   f_k = exp(−k·ln 10000/(half − 1)), emb = [sin(w'·f), cos(w'·f)] (zero-padded to odd D).
 * - a `sample` of latent + 1 + latent channels (9 for SD inpainting, whose `out_sample` has 4):
 *   [latents, mask, masked-image latents], the denoise node's `inpaint` rows.
 */
import { z } from "zod";
import { readComponentConfig, type ComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError } from "../../core/model-source.ts";
import { sizeProblem, type SizeRule } from "../../core/params.ts";
import { definePlugin } from "../../core/plugin.ts";
import type { Feed } from "../../core/onnx.ts";
import { stackChannels, type Tensor } from "../../core/tensor.ts";

const Config = z
  .object({
    model: z.string().default("unet/model.onnx"),
    /** Pixels per latent cell (SD's VAE: 8). Read from vae_decoder/config.json when present. */
    vaeScaleFactor: z.number().int().positive().optional(),
    /** Latent channels; default: from the model's `sample` input, else unet/config.json, else 4. */
    latentChannels: z.number().int().positive().optional(),
    /**
     * An inpainting UNet (sample = latents + mask + masked-image latents). Default: when the input
     * has 2·C + 1 channels for C output channels, by the model's static shape or unet/config.json
     * (exporters leave the channel axis dynamic; the legacy ONNX inpainting folders only say so by
     * their pipeline class, which the model-folder loader passes here).
     */
    inpaint: z.boolean().optional(),
    /** Symbolic axes of the model fixed to a size (onnxruntime's freeDimensionOverrides; see core/onnx.ts). */
    freeDimensions: z.record(z.string(), z.number().int().positive()).optional(),
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

/** Timestep arrays kept per predictor (see `timestepArray` in create). */
const TIMESTEP_ARRAYS = 4096;

/** LCM's guidance embedding of w = scale − 1 for each row (see the header), [B, dim]. */
export function guidanceEmbedding(scales: Float32Array, dim: number, rows: number): Tensor {
  const half = Math.floor(dim / 2);
  const out = new Float32Array(rows * dim);
  const step = Math.log(10000) / (half - 1);
  for (let r = 0; r < rows; r++) {
    const w = ((scales.length === rows ? scales[r]! : scales[0]!) - 1) * 1000;
    for (let k = 0; k < half; k++) {
      const a = w * Math.exp(-k * step);
      out[r * dim + k] = Math.sin(a);
      out[r * dim + half + k] = Math.cos(a);
    }
  }
  return { dims: [rows, dim], data: out };
}

export default definePlugin({
  name: "onnx-unet",
  kind: "noise-predictor",
  description: "UNet noise predictor from an ONNX file (diffusers ONNX layout)",
  configSchema: Config,
  async create(config, ctx) {
    const model = await ctx.onnx.load(ctx.models, config.model, { role: "noise-predictor", ...(config.freeDimensions ? { freeDimensions: config.freeDimensions } : {}) });
    const floats = ["float32", "float16"];
    model.expectInput("sample", { rank: 4, types: floats, what: "latents [batch, channels, height, width]" });
    model.expectInput("timestep", { rank: [0, 1], types: [...floats, "int64", "int32"], what: "a scalar or [batch]" });
    model.expectInput("encoder_hidden_states", { rank: 3, types: floats, what: "text embeddings [batch, tokens, dim]" });
    const outName = model.outputs.find((o) => o.name === "out_sample")?.name ?? model.outputs[0]?.name;
    if (!outName) throw new ModelFileError(model.file, "has no outputs");
    const outNames = [outName] as const; // one list for every step's call
    const sdxl = model.hasInput("text_embeds") || model.hasInput("time_ids");
    if (sdxl) {
      model.expectInput("text_embeds", { rank: 2, types: floats, what: "SDXL's pooled text embedding [batch, dim]" });
      const ids = model.expectInput("time_ids", { rank: 2, types: floats, what: "SDXL's size conditioning [batch, 6]" });
      if (typeof ids.shape[1] === "number" && ids.shape[1] !== 6) throw new ModelFileError(model.file, `input "time_ids" has ${ids.shape[1]} values per row; SDXL's are 6 (original size, crop top-left, target size)`);
    }
    const condDim = model.hasInput("timestep_cond") ? model.expectInput("timestep_cond", { rank: 2, types: floats, what: "LCM's guidance embedding [batch, dim]" }).shape[1] : undefined;
    const unetConfig = await readComponentConfig(ctx.models, "unet/config.json");
    // The session is created on the first step. An export that leaves the output's channels symbolic
    // takes them from unet/config.json's out_channels (as diffusers does); only without that is the
    // session created now, so that onnxruntime's shape inference tells them (inpainting is told apart by them).
    if (typeof model.expectOutput(outName, { rank: 4 }).shape[1] !== "number" && typeof unetConfig.out_channels !== "number") await model.ready();
    const outChannels = model.expectOutput(outName, { rank: 4 }).shape[1];
    // Channels taken on the config's word are checked against the first output.
    let unchecked = typeof outChannels !== "number" ? unetConfig.out_channels : undefined;
    const vaeConfig = await readComponentConfig(ctx.models, "vae_decoder/config.json");
    const factor = config.vaeScaleFactor ?? vaeScaleFactor(vaeConfig, unetConfig);
    const sampleShape = model.input("sample").shape;
    // An inpainting UNet takes latents + mask + masked-image latents and predicts the latents' channels.
    const inCh = typeof sampleShape[1] === "number" ? sampleShape[1] : unetConfig.in_channels;
    const outCh = typeof outChannels === "number" ? outChannels : unetConfig.out_channels;
    const inpaint = config.inpaint ?? (inCh !== undefined && outCh !== undefined && inCh === 2 * outCh + 1);
    const modelChannels = inpaint ? (outCh ?? 4) : sampleShape[1];
    if (inpaint && unetConfig.in_channels !== undefined && typeof sampleShape[1] === "number" && unetConfig.in_channels !== sampleShape[1]) {
      throw new ModelFileError(`${ctx.models.root}/unet/config.json`, `in_channels: ${unetConfig.in_channels}, but ${model.file} takes ${sampleShape[1]} channels`);
    }
    if (typeof modelChannels === "number") {
      for (const [file, key, value] of [["unet/config.json", "in_channels", inpaint ? undefined : unetConfig.in_channels], ["vae_decoder/config.json", "latent_channels", vaeConfig.latent_channels]] as const) {
        if (value !== undefined && value !== modelChannels) {
          throw new ModelFileError(`${ctx.models.root}/${file}`, `${key}: ${value}, but ${model.file} takes latents with ${modelChannels} channels`);
        }
      }
    }
    const channels = config.latentChannels ?? (typeof modelChannels === "number" ? modelChannels : (typeof unetConfig.in_channels === "number" ? unetConfig.in_channels : 4));
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
    // One filled array per (rows, timestep), never written after: a schedule's timesteps recur every
    // run, so a step feeds an array (and, through the ONNX layer, an ORT tensor) made once instead of
    // new ones (a fresh typed array per step is a measured cost, bench/overhead.ts). Bounded: cleared
    // past TIMESTEP_ARRAYS entries (σ-schedules' fractional timesteps differ from run to run).
    const timestepArrays = new Map<number, Map<number, Float32Array>>();
    let timestepCount = 0;
    const timestepArray = (rows: number, t: number): Float32Array => {
      let byT = timestepArrays.get(rows);
      let a = byT?.get(t);
      if (a) return a;
      if (timestepCount >= TIMESTEP_ARRAYS) {
        timestepArrays.clear();
        timestepCount = 0;
        byT = undefined;
      }
      if (!byT) timestepArrays.set(rows, (byT = new Map()));
      a = new Float32Array(rows).fill(t);
      byT.set(t, a);
      timestepCount++;
      return a;
    };
    return {
      maxBatch: typeof batchDim === "number" ? batchDim : Infinity,
      perRowTimesteps: perRow,
      // Known once the session exists ("auto" picks the backend then); the loop reads it after each call.
      get blocking() {
        return model.created && model.backend === "onnxruntime-web" && model.provider === "wasm";
      },
      sizes,
      takes: { pooled: sdxl, guidance: condDim !== undefined, inpaint },
      latentShape(height, width) {
        const bad = sizeProblem(sizes, height, width);
        if (bad) throw new RangeError(`${bad.field}: ${bad.message}`);
        return [channels, height / factor, width / factor];
      },
      async predict({ sample, timestep, encoderHiddenStates, pooled, guidance, inpaint: extra }) {
        const b = sample.dims[0]!;
        let t: Feed;
        const isInt = ts.type === "int64" || ts.type === "int32";
        const dims = ts.shape.length === 0 ? [] : ts.shape[0] === 1 ? [1] : [b];
        const n = dims.length === 0 ? 1 : dims[0]!;
        let values: Float32Array;
        if (typeof timestep === "number") values = timestepArray(n, timestep);
        else if (perRow && timestep.length === b) values = timestep;
        else if (timestep.every((v) => v === timestep[0])) values = timestepArray(n, timestep[0]!);
        else throw new RangeError(`onnx-unet: ${model.file} takes one timestep for the whole batch (shape [${ts.shape.join(",")}]), got ${timestep.length} different ones`);
        if (isInt) t = { dims, ints: Array.from(values, Math.round) };
        else t = { dims, data: values };
        const feeds: Record<string, Feed> = { sample, timestep: t, encoder_hidden_states: encoderHiddenStates };
        if (inpaint) {
          if (!extra || extra.dims[0] !== b) throw new RangeError(`onnx-unet: ${model.file} is an inpainting UNet; it needs the mask and masked-image latents for each of the ${b} rows`);
          feeds.sample = stackChannels(sample, extra);
        }
        if (sdxl) {
          if (!pooled || pooled.dims[0] !== b) throw new RangeError(`onnx-unet: ${model.file} takes text_embeds (SDXL's pooled prompt embedding) for each of the ${b} rows`);
          const [, , lh2, lw2] = sample.dims as [number, number, number, number];
          const [H, W] = [lh2 * factor, lw2 * factor];
          const ids = new Float32Array(b * 6);
          for (let r = 0; r < b; r++) ids.set([H, W, 0, 0, H, W], r * 6);
          feeds.text_embeds = pooled;
          feeds.time_ids = { dims: [b, 6], data: ids };
        }
        if (condDim !== undefined) {
          const dim = typeof condDim === "number" ? condDim : unetConfig.time_cond_proj_dim;
          if (typeof dim !== "number") throw new ModelFileError(model.file, `input "timestep_cond" has a dynamic width and unet/config.json gives no time_cond_proj_dim`);
          const w = guidance ?? new Float32Array(b).fill(1);
          feeds.timestep_cond = guidanceEmbedding(w, dim, b);
        }
        const out = (await model.run(feeds, outNames))[outName]!;
        if (unchecked !== undefined) {
          if (out.dims[1] !== unchecked) throw new ModelFileError(`${ctx.models.root}/unet/config.json`, `out_channels: ${unchecked}, but ${model.file} returns ${out.dims[1]} channels`);
          unchecked = undefined;
        }
        return out;
      },
    };
  },
});
