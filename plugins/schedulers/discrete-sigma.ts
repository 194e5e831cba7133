/**
 * Shared machinery of the σ-parameterised (variance-exploding, k-diffusion style) samplers: the
 * discrete training schedule re-read as noise levels σ_t = √((1−ᾱ_t)/ᾱ_t), latents x = x₀ + σ·ε,
 * the model fed x/√(σ²+1) (Karras et al. 2022, Table 1, c_in), and a final σ after the last step.
 */
import type { ScheduleData } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import type { ResolvedSchedulerConfig } from "./config.ts";
import { axpby, BaseScheduler, sameShape, type PredictionType } from "./base.ts";
import { karrasSigmas, sigmaAt, sigmaToT, spacedTimesteps, trainSigmas } from "./schedule.ts";

export interface SigmaConfig extends ResolvedSchedulerConfig {
  readonly use_karras_sigmas?: boolean | null;
  readonly final_sigmas_type?: "zero" | "sigma_min" | null;
}

export abstract class SigmaScheduler<C extends SigmaConfig> extends BaseScheduler<C> {
  /** σ at each visited timestep, then the final σ (0 unless final_sigmas_type is sigma_min). */
  sigmas: number[] = [];
  protected readonly trainSigmas: Float64Array;
  protected readonly logTrainSigmas: Float64Array;

  constructor(name: string, config: C) {
    super(name, config);
    const abar = Float64Array.from(this.train.alphasCumprod);
    // Zero terminal SNR makes σ_T infinite; diffusers uses ᾱ_T = 2^−24 for σ-space samplers.
    if (config.rescale_betas_zero_snr) abar[abar.length - 1] = 2 ** -24;
    this.trainSigmas = trainSigmas(abar);
    this.logTrainSigmas = this.trainSigmas.map(Math.log);
  }

  protected build(n: number): void {
    const c = this.config;
    const T = this.train.numTrainTimesteps;
    // Timesteps are float32 in diffusers; σ is interpolated at those float32 values.
    let ts = spacedTimesteps(c.timestep_spacing, T, n, c.steps_offset, false).map(Math.fround);
    let sig = ts.map((t) => sigmaAt(t, this.trainSigmas));
    if (c.use_karras_sigmas) {
      sig = karrasSigmas(sig[sig.length - 1]!, sig[0]!, n);
      ts = sig.map((s) => Math.fround(sigmaToT(s, this.logTrainSigmas)));
    }
    const final = c.final_sigmas_type === "sigma_min" ? this.trainSigmas[0]! : 0;
    this.setSchedule(ts, sig.map(Math.fround), Math.fround(final));
    const max = Math.max(...this.sigmas);
    this.initNoiseSigma = c.timestep_spacing === "leading" ? Math.sqrt(max * max + 1) : max;
  }

  /** Install timesteps and σs (Heun repeats them) and reset solver state. */
  protected setSchedule(timesteps: number[], sigmas: number[], final: number): void {
    this.timesteps = timesteps;
    this.sigmas = [...sigmas, final];
  }

  /** c_in: x/√(σ²+1), so the model sees a variance-preserving input. */
  override scaleModelInput(sample: Tensor, timestep: number): Tensor {
    const sigma = this.sigmas[this.initStepIndex(timestep)]!;
    return axpby(sample, 1 / Math.sqrt(sigma * sigma + 1), sample, 0);
  }

  /** x₀ + σ·ε, at the σ of `timestep` (or of the current step once sampling has started). */
  override addNoise(original: Tensor, noise: Tensor, timestep: number): Tensor {
    sameShape(original, noise, "addNoise noise");
    this.requireTimesteps();
    const i = this.beginIndex === null ? this.indexForTimestep(timestep) : (this.stepIndex ?? this.beginIndex);
    return axpby(original, 1, noise, this.sigmas[i]!);
  }

  override schedule(): ScheduleData {
    const visited = this.sigmas.slice(0, this.timesteps.length);
    return this.scheduleData([...this.sigmas], visited.map((s) => -2 * Math.log(s)));
  }
}

/**
 * x̂₀ in σ-space (k-diffusion's denoiser, Karras et al. 2022, Table 1): ε: x − σ·ε;
 * v: −σ/√(σ²+1)·v + x/(σ²+1); sample: the output itself.
 */
export function denoised(type: PredictionType, out: Float32Array, model: Float32Array, x: Float32Array, sigma: number): Float32Array {
  if (type === "epsilon") for (let i = 0; i < out.length; i++) out[i] = x[i]! - sigma * model[i]!;
  else if (type === "v_prediction") {
    const cOut = -sigma / Math.sqrt(sigma * sigma + 1);
    const cSkip = 1 / (sigma * sigma + 1);
    for (let i = 0; i < out.length; i++) out[i] = cOut * model[i]! + cSkip * x[i]!;
  } else out.set(model);
  return out;
}
