/**
 * Latent Consistency Model multistep sampling — Luo et al. 2023, "Latent Consistency Models",
 * Algorithm 3 (multistep sampling) with the consistency-model boundary condition of Song et al.
 * 2023, eq. 8: f(x, t) = c_skip(t)·x + c_out(t)·x̂₀, c_skip = σ_d²/((st)² + σ_d²),
 * c_out = st/√((st)² + σ_d²), σ_d = 0.5, s = `timestep_scaling`. Between steps the estimate is
 * re-noised to the next timestep with fresh noise from the rng (none after the last step).
 * Timesteps are a subsequence of the `original_inference_steps` the model was distilled on.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, SchedulerConfigError, type ConfigWith } from "./config.ts";
import { BaseScheduler, defineScheduler, like, predictX0, requireRng, rows, sameShape } from "./base.ts";
import { clipInPlace, dynamicThreshold } from "./schedule.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear" as const,
  original_inference_steps: 50,
  clip_sample: false,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  timestep_scaling: 10.0,
};
type Config = ConfigWith<typeof DEFAULTS>;

const SIGMA_DATA = 0.5;

export class LcmScheduler extends BaseScheduler<Config> {
  private readonly finalAlphaCumprod: number;
  private scratch = new Float32Array(0);

  constructor(config: Config) {
    super("lcm", config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.train.alphasCumprod[0]!;
    if (config.original_inference_steps > this.train.numTrainTimesteps) {
      throw new SchedulerConfigError(
        "original_inference_steps",
        `original_inference_steps (${config.original_inference_steps}) cannot exceed num_train_timesteps (${this.train.numTrainTimesteps})`,
      );
    }
  }

  protected build(n: number): void {
    const orig = this.config.original_inference_steps;
    if (n > orig) {
      throw new SchedulerConfigError(
        "num_inference_steps",
        `num_inference_steps (${n}) cannot exceed original_inference_steps (${orig}) for an LCM`,
      );
    }
    const k = Math.floor(this.train.numTrainTimesteps / orig);
    // The distillation schedule k−1, 2k−1, …, orig·k−1, visited from the top.
    const origin = Array.from({ length: orig }, (_, i) => (orig - i) * k - 1);
    // np.floor(np.linspace(0, orig, n, endpoint=False)) picks the indices.
    const stride = origin.length / n;
    this.timesteps = Array.from({ length: n }, (_, i) => origin[Math.floor(i * stride)]!);
  }

  /** Boundary-condition scalings (c_skip, c_out) at a timestep. */
  scalings(t: number): [number, number] {
    const st = t * this.config.timestep_scaling;
    const d = st * st + SIGMA_DATA * SIGMA_DATA;
    return [(SIGMA_DATA * SIGMA_DATA) / d, st / Math.sqrt(d)];
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "lcm step model output");
    const i = this.initStepIndex(timestep);
    const c = this.config;
    const last = i === this.timesteps.length - 1;
    const prevT = last ? timestep : this.timesteps[i + 1]!;
    const a = this.alphaCumprodAt(timestep);
    const ap = prevT >= 0 ? this.alphaCumprodAt(prevT) : this.finalAlphaCumprod;
    const n = sample.data.length;
    const x = sample.data;
    const x0 = predictX0(c.prediction_type, new Float32Array(n), modelOutput.data, x, Math.sqrt(a), Math.sqrt(1 - a));
    if (c.thresholding) {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      dynamicThreshold(x0, rows(sample), c.dynamic_thresholding_ratio, c.sample_max_value, this.scratch);
    } else if (c.clip_sample) {
      clipInPlace(x0, c.clip_sample_range);
    }
    const [cSkip, cOut] = this.scalings(timestep);
    const denoised = new Float32Array(n);
    for (let j = 0; j < n; j++) denoised[j] = cOut * x0[j]! + cSkip * x[j]!;
    let prev = denoised;
    if (!last) {
      const r = requireRng(rng, this.name, "every step but the last re-noises the estimate");
      const sa = Math.sqrt(ap);
      const sb = Math.sqrt(1 - ap);
      prev = new Float32Array(n);
      for (let j = 0; j < n; j++) prev[j] = sa * denoised[j]! + sb * r.normal();
    }
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, denoised) };
  }
}

export default defineScheduler({
  name: "lcm",
  className: "LCMScheduler",
  description: "Latent Consistency Model multistep sampling (Luo et al. 2023, Algorithm 3)",
  defaults: DEFAULTS,
  create: (cfg) => new LcmScheduler(cfg),
});
