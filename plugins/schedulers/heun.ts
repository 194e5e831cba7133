/**
 * Heun's second-order ODE sampler in σ — Karras et al. 2022, Algorithm 1 (deterministic):
 * d_i = (x_i − D(x_i; σ_i))/σ_i, x̃ = x_i + (σ_{i+1} − σ_i)·d_i, then
 * x_{i+1} = x_i + (σ_{i+1} − σ_i)·(d_i + d'_i)/2 with d'_i = (x̃ − D(x̃; σ_{i+1}))/σ_{i+1};
 * the last step (σ_{i+1} = 0) is a plain Euler step. Two model evaluations per step, so every
 * timestep but the first is visited twice (diffusers' `timesteps` layout: t₀, t₁, t₁, t₂, t₂, …).
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported } from "./config.ts";
import type { SharedKey } from "./config.ts";
import { defineScheduler, like, sameShape } from "./base.ts";
import { clipInPlace } from "./schedule.ts";
import { denoised, SigmaScheduler, type SigmaConfig } from "./discrete-sigma.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  beta_start: 0.00085,
  beta_end: 0.012,
  timestep_spacing: "linspace" as const,
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  clip_sample: false,
  clip_sample_range: 1.0,
};
type Config = SigmaConfig & Omit<typeof DEFAULTS, SharedKey | "use_karras_sigmas" | "final_sigmas_type">;

export class HeunScheduler extends SigmaScheduler<Config> {
  override order = 2;
  /** First-stage state: derivative, σ step and sample at the start of the step (null in the first stage). */
  private prevDerivative: Float32Array | null = null;
  private dt = 0;
  private start: Float32Array | null = null;

  constructor(config: Config) {
    super("heun", { ...config, final_sigmas_type: "zero" });
  }

  protected override setSchedule(timesteps: number[], sigmas: number[], final: number): void {
    this.timesteps = [timesteps[0]!, ...timesteps.slice(1).flatMap((t) => [t, t])];
    this.sigmas = [sigmas[0]!, ...sigmas.slice(1).flatMap((s) => [s, s]), final];
    this.prevDerivative = null;
    this.start = null;
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, _rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "heun step model output");
    const i = this.initStepIndex(timestep);
    const first = this.prevDerivative === null;
    const sigma = first ? this.sigmas[i]! : this.sigmas[i - 1]!;
    const next = first ? this.sigmas[i + 1]! : this.sigmas[i]!;
    const x = sample.data;
    const n = x.length;
    const x0 = denoised(this.config.prediction_type, new Float32Array(n), modelOutput.data, x, first ? sigma : next);
    if (this.config.clip_sample) clipInPlace(x0, this.config.clip_sample_range);
    const prev = new Float32Array(n);
    if (first) {
      const d = new Float32Array(n);
      for (let j = 0; j < n; j++) d[j] = (x[j]! - x0[j]!) / sigma;
      this.dt = next - sigma;
      for (let j = 0; j < n; j++) prev[j] = x[j]! + d[j]! * this.dt;
      if (next !== 0) {
        this.prevDerivative = d;
        this.start = Float32Array.from(x);
      }
    } else {
      const d0 = this.prevDerivative!;
      const x0s = this.start!;
      for (let j = 0; j < n; j++) {
        const d = (d0[j]! + (x[j]! - x0[j]!) / next) / 2;
        prev[j] = x0s[j]! + d * this.dt;
      }
      this.prevDerivative = null;
      this.start = null;
    }
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "heun",
  className: "HeunDiscreteScheduler",
  description: "Heun's 2nd-order ODE sampler in σ (Karras et al. 2022, Algorithm 1)",
  defaults: DEFAULTS,
  // diffusers' Heun also takes exponential and beta σ spacings; only Karras' is implemented here.
  validate: (cfg) => requireSupported("heun", cfg, { use_exponential_sigmas: [false, null], use_beta_sigmas: [false, null] }),
  create: (cfg) => new HeunScheduler(cfg),
});
