/**
 * Euler sampler for the probability-flow ODE in σ — Karras et al. 2022, "Elucidating the Design
 * Space of Diffusion-Based Generative Models", Algorithm 2 without churn (and k-diffusion's
 * `sample_euler`): d = (x − D(x; σ_i))/σ_i, x_{i+1} = x_i + (σ_{i+1} − σ_i)·d. Deterministic.
 * `use_karras_sigmas` spaces the σ by eq. 5 (ρ = 7).
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported } from "./config.ts";
import type { SharedKey } from "./config.ts";
import { defineScheduler, like, sameShape } from "./base.ts";
import { denoised, SigmaScheduler, type SigmaConfig } from "./discrete-sigma.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  timestep_spacing: "linspace" as const,
  interpolation_type: "linear",
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  final_sigmas_type: "zero" as const,
  timestep_type: "discrete",
  sigma_min: null,
  sigma_max: null,
};
type Config = SigmaConfig & Omit<typeof DEFAULTS, SharedKey | "use_karras_sigmas" | "final_sigmas_type">;

export class EulerScheduler extends SigmaScheduler<Config> {
  constructor(config: Config) {
    super("euler", config);
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, _rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "euler step model output");
    const i = this.initStepIndex(timestep);
    const sigma = this.sigmas[i]!;
    const dt = this.sigmas[i + 1]! - sigma;
    const x = sample.data;
    const x0 = denoised(this.config.prediction_type, new Float32Array(x.length), modelOutput.data, x, sigma);
    const prev = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) prev[j] = x[j]! + ((x[j]! - x0[j]!) / sigma) * dt;
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "euler",
  className: "EulerDiscreteScheduler",
  description: "Euler ODE sampler in σ (Karras et al. 2022, Algorithm 2 without churn)",
  defaults: DEFAULTS,
  validate: (cfg) =>
    requireSupported("euler", cfg, {
      interpolation_type: ["linear"],
      use_exponential_sigmas: [false, null],
      use_beta_sigmas: [false, null],
      timestep_type: ["discrete"],
      sigma_min: [null],
      sigma_max: [null],
    }),
  create: (cfg) => new EulerScheduler(cfg),
});
