/**
 * DDIM — Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12:
 * x_{t−1} = √ᾱ_{t−1}·x̂₀ + √(1−ᾱ_{t−1}−σ_t²)·ε̂ + σ_t·z, with σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1})
 * (eq. 16). η = 0 (default) is the deterministic sampler; η = 1 is DDPM's posterior variance.
 * `set_alpha_to_one` picks ᾱ after the last step: 1, or ᾱ_0.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, type ConfigWith } from "./config.ts";
import { BaseScheduler, defineScheduler, like, predictEps, predictX0, requireRng, rows, sameShape } from "./base.ts";
import { clipInPlace, dynamicThreshold, spacedTimesteps } from "./schedule.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  clip_sample: true,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  eta: 0,
};
type Config = ConfigWith<typeof DEFAULTS>;

export class DdimScheduler extends BaseScheduler<Config> {
  private readonly finalAlphaCumprod: number;
  private scratch = new Float32Array(0);
  /**
   * Buffers of `step`: ε̂ is read only inside it, and x_{t−1} and x̂₀ alternate between two
   * buffers each, so a step's outputs stay as they are until the step after next overwrites them
   * (the denoise loop reads a step's outputs before its next step; `Scheduler.step` says so). A
   * fresh typed array per step is a measured cost after a UNet call (bench/overhead.ts).
   */
  private epsBuf = new Float32Array(0);
  private readonly prevBufs: Float32Array[] = [];
  private readonly x0Bufs: Float32Array[] = [];
  private flip = 0;

  constructor(config: Config) {
    super("ddim", config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.train.alphasCumprod[0]!;
  }

  protected build(n: number): void {
    const c = this.config;
    this.timesteps = spacedTimesteps(c.timestep_spacing, this.train.numTrainTimesteps, n, c.steps_offset);
  }

  /** σ_t² of eq. 16 between `t` and `prevT`. */
  variance(t: number, prevT: number): number {
    const a = this.alphaCumprodAt(t);
    const ap = prevT >= 0 ? this.alphaCumprodAt(prevT) : this.finalAlphaCumprod;
    return ((1 - ap) / (1 - a)) * (1 - a / ap);
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput {
    this.requireTimesteps();
    sameShape(sample, modelOutput, "ddim step model output");
    const c = this.config;
    const prevT = timestep - Math.floor(this.train.numTrainTimesteps / this.numInferenceSteps!);
    const a = this.alphaCumprodAt(timestep);
    const ap = prevT >= 0 ? this.alphaCumprodAt(prevT) : this.finalAlphaCumprod;
    const n = sample.data.length;
    const x = sample.data;
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const k = (this.flip ^= 1);
    if (this.epsBuf.length !== n) {
      this.epsBuf = new Float32Array(n);
      this.prevBufs.length = this.x0Bufs.length = 0;
    }
    // A buffer is written only when it is not the sample being read (a caller may feed an output back).
    let x0b = this.x0Bufs[k];
    if (!x0b || x0b === x) x0b = this.x0Bufs[k] = new Float32Array(n);
    const x0 = predictX0(c.prediction_type, x0b, modelOutput.data, x, sa, sb);
    const eps = predictEps(c.prediction_type, this.epsBuf, modelOutput.data, x, sa, sb);
    if (c.thresholding) {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      dynamicThreshold(x0, rows(sample), c.dynamic_thresholding_ratio, c.sample_max_value, this.scratch);
    } else if (c.clip_sample) {
      clipInPlace(x0, c.clip_sample_range);
    }
    const std = c.eta * Math.sqrt(this.variance(timestep, prevT));
    const cx0 = Math.sqrt(ap);
    const ceps = Math.sqrt(Math.max(1 - ap - std * std, 0));
    let prev = this.prevBufs[k];
    if (!prev || prev === x) prev = this.prevBufs[k] = new Float32Array(n);
    for (let i = 0; i < n; i++) prev[i] = cx0 * x0[i]! + ceps * eps[i]!;
    if (std > 0) {
      const r = requireRng(rng, this.name, `eta = ${c.eta} adds noise`);
      for (let i = 0; i < n; i++) prev[i] = prev[i]! + std * r.normal();
    }
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "ddim",
  className: "DDIMScheduler",
  description: "DDIM (Song et al. 2021, eq. 12); deterministic at eta = 0",
  defaults: DEFAULTS,
  create: (cfg) => new DdimScheduler(cfg),
});
