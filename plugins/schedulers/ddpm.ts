/**
 * DDPM ancestral sampling — Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models",
 * Algorithm 2: x_{t−1} = 1/√α_t·(x_t − (1−α_t)/√(1−ᾱ_t)·ε_θ) + σ_t·z, with σ_t² = β_t
 * (`variance_type: "fixed_large"`) or the posterior variance β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t
 * (`"fixed_small"`, diffusers' default; §3.2). With fewer inference steps than training steps,
 * α_t is the ratio ᾱ_t/ᾱ_prev between visited timesteps, as in diffusers.
 *
 * When x̂₀ is altered (clip_sample, thresholding) or the model predicts v or x₀, the mean is the
 * posterior mean μ̃_t(x_t, x̂₀) of eq. 7 instead — equal to Algorithm 2 for an unaltered ε.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported, type ConfigWith } from "./config.ts";
import { BaseScheduler, defineScheduler, like, predictX0, requireRng, rows, sameShape } from "./base.ts";
import { clipInPlace, dynamicThreshold, spacedTimesteps } from "./schedule.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  variance_type: "fixed_small",
  clip_sample: true,
  clip_sample_range: 1.0,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
};
type Config = ConfigWith<typeof DEFAULTS>;

/** One DDPM step's scalars, exposed for term-by-term tests. */
export interface DdpmCoefficients {
  readonly t: number;
  readonly prevT: number;
  readonly alphaCumprod: number;
  readonly alphaCumprodPrev: number;
  /** α_t = ᾱ_t/ᾱ_prev and β_t = 1 − α_t between the visited timesteps. */
  readonly alpha: number;
  readonly beta: number;
  /** σ_t² (0 at the last step). */
  readonly variance: number;
}

export class DdpmScheduler extends BaseScheduler<Config> {
  private scratch = new Float32Array(0);

  constructor(config: Config) {
    super("ddpm", config);
    // Without setTimesteps, DDPM walks every training timestep (diffusers does the same).
    const T = this.train.numTrainTimesteps;
    this.timesteps = Array.from({ length: T }, (_, i) => T - 1 - i);
    this.numInferenceSteps = T;
  }

  protected build(n: number): void {
    const c = this.config;
    this.timesteps = spacedTimesteps(c.timestep_spacing, this.train.numTrainTimesteps, n, c.steps_offset);
  }

  /** The next timestep visited after `t` (−1 after the last). */
  previousTimestep(t: number): number {
    const i = this.timesteps.indexOf(t);
    if (i >= 0) return i === this.timesteps.length - 1 ? -1 : this.timesteps[i + 1]!;
    return t - Math.floor(this.train.numTrainTimesteps / (this.numInferenceSteps ?? this.train.numTrainTimesteps));
  }

  coefficients(t: number): DdpmCoefficients {
    const prevT = this.previousTimestep(t);
    const alphaCumprod = this.alphaCumprodAt(t);
    const alphaCumprodPrev = this.alphaCumprodAt(prevT);
    const alpha = alphaCumprod / alphaCumprodPrev;
    const beta = 1 - alpha;
    let variance = 0;
    if (t > 0) {
      variance =
        this.config.variance_type === "fixed_large"
          ? beta
          : Math.max(((1 - alphaCumprodPrev) / (1 - alphaCumprod)) * beta, 1e-20);
    }
    return { t, prevT, alphaCumprod, alphaCumprodPrev, alpha, beta, variance };
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "ddpm step model output");
    const c = this.config;
    const k = this.coefficients(timestep);
    const n = sample.data.length;
    const x = sample.data;
    const eps = modelOutput.data;
    const x0 = predictX0(c.prediction_type, new Float32Array(n), eps, x, Math.sqrt(k.alphaCumprod), Math.sqrt(1 - k.alphaCumprod));
    const altered = c.thresholding || c.clip_sample || c.prediction_type !== "epsilon";
    if (c.thresholding) {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      dynamicThreshold(x0, rows(sample), c.dynamic_thresholding_ratio, c.sample_max_value, this.scratch);
    } else if (c.clip_sample) {
      clipInPlace(x0, c.clip_sample_range);
    }
    const prev = new Float32Array(n);
    if (altered) {
      // μ̃_t = √ᾱ_prev·β_t/(1−ᾱ_t)·x̂₀ + √α_t·(1−ᾱ_prev)/(1−ᾱ_t)·x_t  (eq. 7)
      const cx0 = (Math.sqrt(k.alphaCumprodPrev) * k.beta) / (1 - k.alphaCumprod);
      const cxt = (Math.sqrt(k.alpha) * (1 - k.alphaCumprodPrev)) / (1 - k.alphaCumprod);
      for (let i = 0; i < n; i++) prev[i] = cx0 * x0[i]! + cxt * x[i]!;
    } else {
      // Algorithm 2: 1/√α_t·(x_t − β_t/√(1−ᾱ_t)·ε)
      const inv = 1 / Math.sqrt(k.alpha);
      const ce = k.beta / Math.sqrt(1 - k.alphaCumprod);
      for (let i = 0; i < n; i++) prev[i] = inv * (x[i]! - ce * eps[i]!);
    }
    if (k.variance > 0) {
      const r = requireRng(rng, this.name, "it adds σ_t·z at every step but the last");
      const sigma = Math.sqrt(k.variance);
      for (let i = 0; i < n; i++) prev[i] = prev[i]! + sigma * r.normal();
    }
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "ddpm",
  className: "DDPMScheduler",
  description: "DDPM ancestral sampling (Ho et al. 2020, Algorithm 2); σ_t² = β_t or β̃_t via variance_type",
  defaults: DEFAULTS,
  // null (from a reused DPM-Solver config) is the posterior variance, as in diffusers.
  validate: (cfg) => requireSupported("ddpm", cfg, { variance_type: ["fixed_small", "fixed_large", null] }),
  create: (cfg) => new DdpmScheduler(cfg),
});
