/**
 * The denoising loop, a core node over two component plugins: a scheduler and a noise predictor.
 *
 * Per step (Ho et al. 2020, Alg. 2, generalised by the scheduler's update rule):
 *   ε̂ = ε_θ(scale(x_t), t, c)                       — one batched call for both CFG halves
 *   ε̂ = ε_u + w·(ε_c − ε_u)                         — classifier-free guidance (Ho & Salimans 2022)
 *   x_{t−1}, x̂₀ = scheduler.step(ε̂, t, x_t)
 * img2img (SDEdit, Meng et al. 2021): start from add_noise(encode(image), ε, t_start), skipping the
 * first (1 − strength) of the schedule.
 * Guidance runs only for a scale above 1 (diffusers' `do_classifier_free_guidance`): at 0 or 1 —
 * SD-Turbo's and SDXL-Turbo's setting — no unconditional batch is run at all, and a UNet that
 * embeds the scale itself (LCM's `timestep_cond`, w = scale − 1) gets it per row instead.
 * Inpainting (`mask`: 1 = repaint, binarised at 0.5 and taken nearest at the latent size, as
 * diffusers does): a 9-channel inpainting UNet gets [latents, mask, masked-image latents] on its
 * channels; any other model keeps the known region by blending it back from the source latents,
 * noised to the next step's level, after every step (diffusers' 4-channel inpainting):
 *   x ← (1 − m)·add_noise(x_src, ε, t_{i+1}) + m·x   (the last step blends with x_src itself).
 * Concurrent runs of one pipeline share noise-predictor calls through a `PredictBatcher` (see
 * core/batcher.ts) unless the node's config says `"batching": false`.
 */
import { z } from "zod";
import type { NodeType, Values } from "./node.ts";
import { ComponentRefSchema } from "./pipeline-config.ts";
import type { NoisePredictorInput, NoisePredictorInstance, SchedulerInstance } from "./plugin.ts";
import { PredictBatcher } from "./batcher.ts";
import { ParamsError } from "./params.ts";
import { createRng } from "./random.ts";
import { concat0, numel, repeatRows, sameDims, stackChannels, tensor, type Embeddings, type Tensor } from "./tensor.ts";

const ConfigSchema = z
  .object({
    scheduler: ComponentRefSchema,
    noisePredictor: ComponentRefSchema,
    /**
     * Cross-run batching (core/batcher.ts): concurrent runs of this pipeline share noise-predictor
     * calls, measuring whether that is faster unless `adaptive` is false. `false` gives every run
     * its own calls.
     */
    batching: z
      .union([
        z.literal(false),
        z
          .object({
            maxRows: z.number().int().min(1).max(4096).default(64),
            maxWaitMs: z.number().min(0).max(10_000).optional(),
            adaptive: z.boolean().default(true),
          })
          .strict(),
      ])
      .default({ maxRows: 64, adaptive: true }),
  })
  .strict();

/**
 * A pixel mask [1|B, 1|3, H, W] (1 = repaint; RGB by its channels' mean) at the latent size [B, 1, h, w]: binarised at 0.5,
 * then nearest (the top-left pixel of each cell, as torch's `interpolate` picks it).
 */
export function latentMask(mask: Tensor, batch: number, H: number, W: number, h: number, w: number): Tensor {
  const [mb, mc, mh, mw] = mask.dims as [number, number, number, number];
  if (mask.dims.length !== 4 || (mc !== 1 && mc !== 3) || mh !== H || mw !== W || (mb !== 1 && mb !== batch)) {
    throw new RangeError(`mask: must be [1, 1 or 3, ${H}, ${W}] (the image size), got [${mask.dims.join(",")}]`);
  }
  const fy = H / h;
  const fx = W / w;
  const out = new Float32Array(batch * h * w);
  for (let b = 0; b < batch; b++) {
    const src = mb === 1 ? 0 : b;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        // An RGB mask (a PNG) counts by the mean of its channels.
        let v = 0;
        for (let c = 0; c < mc; c++) v += mask.data[((src * mc + c) * H + y * fy) * W + x * fx]!;
        out[(b * h + y) * w + x] = v / mc >= 0.5 ? 1 : 0;
      }
  }
  return { dims: [batch, 1, h, w], data: out };
}

/** (1 − m)·known + m·x, the mask [B, 1, h, w] broadcast over channels. */
function blend(known: Tensor, x: Tensor, m: Tensor): Tensor {
  const [B, C, h, w] = x.dims as [number, number, number, number];
  const plane = h * w;
  const out = new Float32Array(x.data.length);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < C; c++)
      for (let p = 0; p < plane; p++) {
        const i = (b * C + c) * plane + p;
        const k = m.data[b * plane + p]!;
        out[i] = (1 - k) * known.data[i]! + k * x.data[i]!;
      }
  return { dims: x.dims, data: out };
}

/** Whether `both` is [u; c] for these shapes (the arrays are the memo's keys; their dims are checked here). */
function sameRows(both: Tensor, u: Tensor, c: Tensor): boolean {
  const rest = both.dims.slice(1);
  return both.dims[0] === u.dims[0]! + c.dims[0]! && sameDims(u.dims.slice(1), rest) && sameDims(c.dims.slice(1), rest);
}

/** Rows to match the batch: a single conditioning row is shared by every image. */
function toBatch(t: Tensor, batch: number, what: string): Tensor {
  const rows = t.dims[0]!;
  if (rows === batch) return t;
  if (rows === 1) return repeatRows(t, batch);
  throw new RangeError(`denoise: ${what} has ${rows} rows but the batch has ${batch} images`);
}

/**
 * Prompt and negative with different token counts (a long prompt spans more encoder windows than
 * its negative): the shorter is padded with the encoder's empty-window encoding, as A1111 pads
 * with empty chunks, so both halves of the guidance batch have the same shape.
 */
export function evenTokens(a: Tensor, b: Tensor, pad: Tensor | undefined): [Tensor, Tensor] {
  const [ta, tb] = [a.dims[1]!, b.dims[1]!];
  if (ta === tb) return [a, b];
  const [short, long] = ta < tb ? [a, b] : [b, a];
  const missing = long.dims[1]! - short.dims[1]!;
  if (!pad || pad.dims[1] === 0 || missing % pad.dims[1]! !== 0 || pad.dims[2] !== short.dims[2]) {
    throw new RangeError(`denoise: cond has ${ta} tokens and uncond ${tb}; they differ by ${missing}, which is not a whole number of the encoder's padding windows`);
  }
  const [rows, T, D] = short.dims as [number, number, number];
  const out = new Float32Array(rows * long.dims[1]! * D);
  for (let r = 0; r < rows; r++) {
    const at = r * long.dims[1]! * D;
    out.set(short.data.subarray(r * T * D, (r + 1) * T * D), at);
    for (let k = 0; k < missing / pad.dims[1]!; k++) out.set(pad.data, at + (T + k * pad.dims[1]!) * D);
  }
  const padded: Tensor = { dims: [rows, long.dims[1]!, D], data: out };
  return ta < tb ? [padded, b] : [a, padded];
}

export const denoiseNode: NodeType = {
  name: "denoise",
  kind: "core",
  inputs: { cond: "embeddings", uncond: "embeddings", init: "latents", pooled: "vector", uncondPooled: "vector", mask: "images", maskedLatents: "latents" },
  optionalInputs: ["uncond", "init", "pooled", "uncondPooled", "mask", "maskedLatents"],
  outputs: { latents: "latents" },
  configSchema: ConfigSchema,
  components: { scheduler: "scheduler", noisePredictor: "noise-predictor" },
  deterministic: false,
  async create(config: z.output<typeof ConfigSchema>, ctx) {
    const predictor = await ctx.component<NoisePredictorInstance>("config.noisePredictor", config.noisePredictor, "noise-predictor");
    const baseScheduler = await ctx.component<SchedulerInstance>("config.scheduler", config.scheduler, "scheduler");
    const overrides = new Map<string, Promise<SchedulerInstance>>();
    const schedulerFor = (name: string | undefined): Promise<SchedulerInstance> => {
      if (!name || name === config.scheduler.use) return Promise.resolve(baseScheduler);
      let p = overrides.get(name);
      if (!p) {
        // diffusers `from_config`: the new scheduler reuses the model's schedule keys.
        p = ctx.component<SchedulerInstance>(`scheduler "${name}"`, { use: name, config: { ...baseScheduler.config } }, "scheduler");
        overrides.set(name, p);
        p.catch(() => overrides.delete(name));
      }
      return p;
    };

    // [uncond; cond] for the guidance batch (text states, SDXL's pooled embeddings), kept while both
    // encodings live: the prompt nodes' cache hands a repeated prompt the same arrays, so a run with
    // a prompt seen before copies nothing and the UNet's ONNX session is fed the same array (and ORT
    // tensor) again. It hits only where the encodings reach here unchanged (one image, or a batch
    // whose rows came encoded; prompt and negative of equal token counts). Keyed weakly, so an
    // encoding the node cache drops takes its batch with it; while kept, a batch is about as large as
    // the two encodings, outside the node cache's own byte budget.
    const batches = new WeakMap<Float32Array, WeakMap<Float32Array, Tensor>>();
    const guidanceBatch = (u: Tensor, c: Tensor): Tensor => {
      let byCond = batches.get(u.data);
      const hit = byCond?.get(c.data);
      if (hit && sameRows(hit, u, c)) return hit;
      const both = concat0([u, c]);
      if (!byCond) batches.set(u.data, (byCond = new WeakMap()));
      byCond.set(c.data, both);
      return both;
    };
    const batcher = config.batching === false ? null : new PredictBatcher(predictor, config.batching);
    const solo = { predict: predictor.predict.bind(predictor), leave() {} };

    return {
      ...(batcher ? { stats: (): Record<string, number> => ({ ...batcher.stats }) } : {}),
      ...(predictor.sizes ? { sizes: predictor.sizes } : {}),
      scheduler: { use: config.scheduler.use, config: baseScheduler.config as Readonly<Record<string, unknown>> },
      async run(inputs: Values, run) {
        const entered = run.profile ? performance.now() : 0;
        const { params, signal } = run;
        const cond = inputs.cond as Tensor;
        const uncond = inputs.uncond as Tensor | undefined;
        const init = inputs.init as Tensor | undefined;
        const mask = inputs.mask as Tensor | undefined;
        const maskedLatents = inputs.maskedLatents as Tensor | undefined;
        const batch = params.batchSize;
        const takes = predictor.takes ?? {};
        const guided = uncond !== undefined && params.guidanceScale > 1 && !takes.guidance;
        if (takes.inpaint && (!mask || !maskedLatents)) throw new ParamsError("mask: this is an inpainting UNet (latents + mask + masked-image latents); the run needs an image and a mask", "mask");
        if (takes.pooled && !inputs.pooled) throw new RangeError("denoise: this UNet takes pooled text embeddings (SDXL's text_embeds); wire the text encoder's pooled output to the denoise node's pooled input");

        const scheduler = (await schedulerFor(params.scheduler)).createScheduler();
        scheduler.setTimesteps(params.steps);
        let timesteps = [...scheduler.timesteps];

        const [c, h, w] = predictor.latentShape(params.height, params.width);
        const per = c * h * w;
        // Each image k draws its starting noise from seed + k, so image k of a batch equals the
        // single image generated with seed + k.
        const noise = tensor([batch, c, h, w]);
        for (let k = 0; k < batch; k++) createRng(params.seed + k).fillNormal(noise.data.subarray(k * per, (k + 1) * per));

        let latents: Tensor;
        if (init) {
          if (init.dims[1] !== c || init.dims[2] !== h || init.dims[3] !== w) {
            throw new RangeError(`denoise: init latents are [${init.dims.join(",")}] but the model wants [*,${c},${h},${w}] at ${params.width}×${params.height}`);
          }
          const initSteps = Math.min(Math.floor(params.steps * params.strength), params.steps);
          const start = Math.max(params.steps - initSteps, 0) * scheduler.order;
          timesteps = timesteps.slice(start);
          if (timesteps.length === 0) throw new RangeError(`denoise: strength ${params.strength} leaves no step to run at ${params.steps} steps`);
          scheduler.setBeginIndex(start);
          latents = scheduler.addNoise(toBatch(init, batch, "init latents"), noise, timesteps[0]!);
        } else {
          const s = scheduler.initNoiseSigma;
          latents = s === 1 ? noise : { dims: noise.dims, data: noise.data.map((v) => v * s) };
        }

        let ehs = toBatch(cond, batch, "cond");
        if (guided) {
          const pad = (uncond as Embeddings).padding ?? (cond as Embeddings).padding;
          const [c2, u2] = evenTokens(ehs, toBatch(uncond!, batch, "uncond"), pad);
          ehs = guidanceBatch(u2, c2);
        }
        const rows = guided ? 2 * batch : batch;
        let pooled: Tensor | undefined;
        if (takes.pooled) {
          const p = toBatch(inputs.pooled as Tensor, batch, "pooled");
          pooled = guided ? guidanceBatch(toBatch((inputs.uncondPooled as Tensor | undefined) ?? (inputs.pooled as Tensor), batch, "uncondPooled"), p) : p;
        }
        const guidance = takes.guidance ? new Float32Array(rows).fill(params.guidanceScale) : undefined;
        const m = mask ? latentMask(mask, batch, params.height, params.width, h, w) : undefined;
        let inpaint: Tensor | undefined;
        if (takes.inpaint) {
          const one = stackChannels(m!, toBatch(maskedLatents!, batch, "masked-image latents"));
          inpaint = guided ? concat0([one, one]) : one;
        } else if (m && !init) {
          throw new RangeError("denoise: a mask needs the source image (run input image) whose unmasked region it keeps");
        }
        const initB = init ? toBatch(init, batch, "init latents") : undefined;
        const extra = pooled || guidance || inpaint ? { ...(pooled ? { pooled } : {}), ...(guidance ? { guidance } : {}), ...(inpaint ? { inpaint } : {}) } : undefined;
        // One call's input; a literal without spreading when there is nothing extra (every step builds one).
        const callInput = (t: number): NoisePredictorInput => (extra ? { sample: sampleIn, timestep: t, encoderHiddenStates: ehs, ...extra } : { sample: sampleIn, timestep: t, encoderHiddenStates: ehs });
        const stepRng = createRng(params.seed).fork(); // ancestral/SDE noise, independent of the start noise
        const started = performance.now();
        const g = params.guidanceScale;
        const guidedDims = [2 * batch, c, h, w];
        // One sample buffer per run, refilled every step (the predictor is done with it once its call
        // settles): no new array per step, and where the ONNX layer feeds it as it is (float32, off
        // onnxruntime-web's WebGPU queue, no batch slicing, not an inpainting UNet's stacked
        // channels) one ORT tensor for the whole run (bench/overhead.ts measures the difference).
        const sampleBuf = new Float32Array(rows * per);
        const sampleIn: Tensor = { dims: guided ? guidedDims : [batch, c, h, w], data: sampleBuf };
        const watched = run.stepsWatched !== false;

        const lane = batcher?.join() ?? solo;
        // Per-part timing only when the run passes a profile: otherwise `lap` is undefined and each
        // of its call sites is one skipped optional call.
        const prof = run.profile;
        let mark = prof ? performance.now() : 0;
        if (prof) prof.setup += mark - entered;
        const lap = prof
          ? (part: "scheduler" | "guidance" | "predict" | "events" | "yielding") => {
              const now = performance.now();
              prof[part] += now - mark;
              mark = now;
            }
          : undefined;
        try {
          for (let i = 0; i < timesteps.length; i++) {
            signal.throwIfAborted();
            const t = timesteps[i]!;
            const input = scheduler.scaleModelInput(latents, t);
            lap?.("scheduler");
            let eps: Tensor;
            if (guided) {
              // Both halves take the same latents: rows [0, batch) unconditional, [batch, 2·batch) conditional.
              const n = input.data.length;
              sampleBuf.set(input.data);
              sampleBuf.set(input.data, n);
              lap?.("guidance");
              const out = await lane.predict(callInput(t), signal);
              lap?.("predict");
              if (out.data.length !== 2 * n) throw new Error(`denoise: the noise predictor returned [${out.dims.join(",")}] for [${guidedDims.join(",")}]`);
              // Guidance in place over the unconditional half of the predictor's output, which is this
              // call's own array (no new array per step: a measured cost, bench/overhead.ts).
              const o = out.data;
              for (let j = 0; j < n; j++) o[j] = o[j]! + g * (o[n + j]! - o[j]!);
              eps = { dims: input.dims, data: o.subarray(0, n) };
              lap?.("guidance");
            } else {
              sampleBuf.set(input.data);
              eps = await lane.predict(callInput(t), signal);
              if (eps.data.length !== input.data.length) throw new Error(`denoise: the noise predictor returned [${eps.dims.join(",")}] for [${input.dims.join(",")}]`);
              lap?.("predict");
            }
            const out = scheduler.step(eps, t, latents, stepRng);
            latents = out.prevSample;
            if (m && !takes.inpaint && initB) {
              const known = i + 1 < timesteps.length ? scheduler.addNoise(initB, noise, timesteps[i + 1]!) : initB;
              latents = blend(known, latents, m);
            }
            lap?.("scheduler");
            if (predictor.blocking) {
              await new Promise((r) => setTimeout(r, 0));
              lap?.("yielding");
            }
            if (watched) {
              // The executor returns a promise only when it has work to wait for (a preview to decode).
              const stepped = run.step({
                step: i + 1,
                totalSteps: timesteps.length,
                timestep: t,
                elapsedMs: performance.now() - started,
                latents: { dims: latents.dims, data: latents.data.slice() },
                predictedX0: { dims: out.predOriginalSample.dims, data: out.predOriginalSample.data.slice() },
              });
              if (stepped) await stepped;
            }
            lap?.("events");
            if (prof) prof.steps++;
          }
        } finally {
          lane.leave();
        }
        if (numel(latents.dims) !== batch * per) throw new Error("denoise: scheduler changed the latent shape");
        return { latents };
      },
    };
  },
};
