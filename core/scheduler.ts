/**
 * The scheduler protocol, after diffusers' `SchedulerMixin` (`set_timesteps`, `scale_model_input`,
 * `step`, `add_noise`, `init_noise_sigma`, `order`). A scheduler plugin's instance is a factory:
 * each generation gets a fresh, stateful `Scheduler` (multistep solvers keep history between
 * steps), so one plugin instance serves concurrent jobs safely.
 *
 * Arithmetic on the schedule is float64; per-step updates are float32 over the latents.
 */
import type { Rng } from "./random.ts";
import type { Tensor } from "./tensor.ts";

export interface SchedulerStepOutput {
  /** x_{t-1}: the sample to feed to the next step. */
  readonly prevSample: Tensor;
  /** The scheduler's current estimate of the clean sample x₀ (for legible previews). */
  readonly predOriginalSample: Tensor;
}

/** A noise schedule as plain arrays, for the API, the `schedule` command and plots. */
export interface ScheduleData {
  readonly scheduler: string;
  readonly numInferenceSteps: number;
  /** Inference timesteps in the order they are visited (decreasing). */
  readonly timesteps: number[];
  /** Training schedule, indexed by training timestep 0..T-1. */
  readonly betas: number[];
  readonly alphas: number[];
  readonly alphasCumprod: number[];
  /** σ per inference step, √((1−ᾱ)/ᾱ) at each visited timestep (plus the final σ where the solver has one). */
  readonly sigmas: number[];
  /** log-SNR = log(ᾱ/(1−ᾱ)) at each visited timestep. */
  readonly logSnr: number[];
}

export interface Scheduler {
  /** Number of model evaluations per step the solver needs in its update (1, or 2 for Heun). */
  readonly order: number;
  /** Std of the initial noise the latents are drawn with (1 for DDPM/DDIM, σ_max for Euler-type). */
  readonly initNoiseSigma: number;
  /** Timesteps to visit, after `setTimesteps` (may repeat a timestep for second-order solvers). */
  readonly timesteps: readonly number[];
  setTimesteps(numInferenceSteps: number): void;
  /**
   * Start at `timesteps[index]` instead of the first one (img2img: strength < 1 skips the noisiest
   * steps). Call after `setTimesteps`, before the first `step`.
   */
  setBeginIndex(index: number): void;
  /** Scale the latents before the model sees them (Euler-type: x / √(σ²+1)); identity otherwise. */
  scaleModelInput(sample: Tensor, timestep: number): Tensor;
  /**
   * One solver step. Its outputs are valid until the step after next, which may reuse their buffers
   * (DDIM does, so a step allocates nothing): copy them to keep them longer.
   */
  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput;
  /** Forward process q(x_t | x₀): √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (σ-parameterised schedulers: x₀ + σ·ε). */
  addNoise(original: Tensor, noise: Tensor, timestep: number): Tensor;
  /** The schedule as data for the current number of inference steps. */
  schedule(): ScheduleData;
}
