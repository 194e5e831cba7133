/**
 * Shared by the exponential-integrator multistep solvers (DPM-Solver++, UniPC): the variance-
 * preserving view of a σ schedule (α = 1/√(σ²+1), σ_t = σ·α, λ = log α − log σ_t), integer
 * timesteps spaced as diffusers' `DPMSolverMultistepScheduler` does, optional Karras σ and λ_min
 * clipping, and the final σ after the last step.
 */
import type { ScheduleData } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { ResolvedSchedulerConfig } from "./config.ts";
import { axpby, BaseScheduler, sameShape } from "./base.ts";
import { karrasSigmas, linspace, roundHalfEven, sigmaAt, sigmaToT, trainSigmas } from "./schedule.ts";

export interface MultistepConfig extends ResolvedSchedulerConfig {
  readonly use_karras_sigmas?: boolean | null;
  readonly final_sigmas_type?: "zero" | "sigma_min" | null;
  readonly lambda_min_clipped?: number;
}

/** α_t = 1/√(σ²+1), σ_t = σ·α_t: the VP coefficients of a σ-space noise level. */
export function alphaSigma(sigma: number): [number, number] {
  const a = 1 / Math.sqrt(sigma * sigma + 1);
  return [a, sigma * a];
}

/** [α_t, σ_t, λ_t] with λ = log(α/σ_t), the half log-SNR (+∞ at σ = 0). */
export function lambdaOf(sigma: number): [number, number, number] {
  const [a, s] = alphaSigma(sigma);
  return [a, s, Math.log(a) - Math.log(s)];
}

export abstract class MultistepScheduler<C extends MultistepConfig> extends BaseScheduler<C> {
  /** σ at each visited timestep, then the final σ. */
  sigmas: number[] = [];
  protected readonly trainSig: Float64Array;

  constructor(name: string, config: C) {
    super(name, config);
    const abar = Float64Array.from(this.train.alphasCumprod);
    // Zero terminal SNR: keep σ_T finite (diffusers uses ᾱ_T = 2^−24).
    if (config.rescale_betas_zero_snr) abar[abar.length - 1] = 2 ** -24;
    this.trainSig = trainSigmas(abar);
  }

  protected build(n: number): void {
    const c = this.config;
    const T = this.train.numTrainTimesteps;
    // λ_min clipping (cosine schedules): leave out the noisiest training steps whose λ is below it.
    let clipped = 0;
    if (c.lambda_min_clipped !== undefined && c.lambda_min_clipped > -Infinity) {
      for (let t = 0; t < T; t++) if (-Math.log(this.trainSig[t]!) < c.lambda_min_clipped) clipped++;
    }
    const last = T - clipped;
    let ts: number[];
    if (c.timestep_spacing === "linspace") {
      ts = Array.from(linspace(0, last - 1, n + 1), roundHalfEven).reverse().slice(0, -1);
    } else if (c.timestep_spacing === "leading") {
      const ratio = Math.floor(last / (n + 1));
      ts = Array.from({ length: n + 1 }, (_, i) => i * ratio).reverse().slice(0, -1).map((t) => t + c.steps_offset);
    } else {
      const ratio = T / n;
      ts = Array.from({ length: Math.ceil(last / ratio) }, (_, i) => roundHalfEven(last - i * ratio) - 1);
    }
    let sig: number[];
    if (c.use_karras_sigmas) {
      sig = karrasSigmas(this.trainSig[0]!, this.trainSig[T - 1]!, n);
      const logSig = this.trainSig.map(Math.log);
      ts = sig.map((s) => roundHalfEven(sigmaToT(s, logSig)));
    } else {
      sig = ts.map((t) => sigmaAt(t, this.trainSig));
    }
    // Rounding can repeat a timestep when steps approach num_train_timesteps (linspace over T+1
    // points) or with Karras σ; a repeated one is a zero-length step (h = 0) that turns the next
    // multistep ratio into 0/0, so it is dropped (diffusers keeps it and yields NaN).
    const keep = ts.map((t, i) => i === 0 || t !== ts[i - 1]);
    ts = ts.filter((_, i) => keep[i]);
    sig = sig.filter((_, i) => keep[i]);
    const final = c.final_sigmas_type === "sigma_min" ? this.trainSig[0]! : 0;
    this.timesteps = ts;
    this.sigmas = [...sig, final].map(Math.fround);
    this.reset();
  }

  /** Clear the solver's history. */
  protected abstract reset(): void;

  /** α·x₀ + σ_t·ε at the noise level of `timestep` (or of the current step once sampling has started). */
  override addNoise(original: Tensor, noise: Tensor, timestep: number): Tensor {
    sameShape(original, noise, "addNoise noise");
    this.requireTimesteps();
    const i = this.beginIndex === null ? this.indexForTimestep(timestep) : (this.stepIndex ?? this.beginIndex);
    const [a, s] = alphaSigma(this.sigmas[i]!);
    return axpby(original, a, noise, s);
  }

  override schedule(): ScheduleData {
    const visited = this.sigmas.slice(0, this.timesteps.length);
    return this.scheduleData([...this.sigmas], visited.map((s) => -2 * Math.log(s)));
  }
}
