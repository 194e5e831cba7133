/**
 * Noise-schedule arithmetic shared by the schedulers, in float64 (diffusers does it in float32 torch
 * / float64 numpy; float64 throughout is at least as exact and the tests' tolerances absorb the rest).
 */
import { SchedulerConfigError, type ResolvedSchedulerConfig } from "./config.ts";

export interface TrainSchedule {
  readonly numTrainTimesteps: number;
  /** β_t, t = 0..T-1. */
  readonly betas: Float64Array;
  /** α_t = 1 − β_t. */
  readonly alphas: Float64Array;
  /** ᾱ_t = ∏_{s≤t} α_s. */
  readonly alphasCumprod: Float64Array;
}

/** `n` evenly spaced values from `a` to `b` inclusive (numpy `linspace`). */
export function linspace(a: number, b: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) {
    out[0] = a;
    return out;
  }
  const step = (b - a) / (n - 1);
  for (let i = 0; i < n; i++) out[i] = a + i * step;
  out[n - 1] = b;
  return out;
}

/**
 * β for the Glide/iDDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17):
 * ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), s = 0.008, β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999).
 */
export function cosineBetas(T: number, maxBeta = 0.999): Float64Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const out = new Float64Array(T);
  for (let i = 0; i < T; i++) out[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), maxBeta);
  return out;
}

/**
 * Rescale β so the last timestep has zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise
 * Schedules and Sample Steps are Flawed", Algorithm 1): shift and scale √ᾱ so √ᾱ_T = 0, keep √ᾱ_0.
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const n = betas.length;
  const sqrtAbar = new Float64Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= 1 - betas[i]!;
    sqrtAbar[i] = Math.sqrt(acc);
  }
  const first = sqrtAbar[0]!;
  const last = sqrtAbar[n - 1]!;
  for (let i = 0; i < n; i++) sqrtAbar[i] = ((sqrtAbar[i]! - last) * first) / (first - last);
  const out = new Float64Array(n);
  let prev = 1;
  for (let i = 0; i < n; i++) {
    const abar = sqrtAbar[i]! ** 2;
    out[i] = 1 - abar / prev;
    prev = abar;
  }
  return out;
}

export function betasFor(cfg: ResolvedSchedulerConfig): Float64Array {
  const T = cfg.num_train_timesteps;
  let betas: Float64Array;
  if (cfg.trained_betas) {
    if (cfg.trained_betas.length !== T) {
      throw new SchedulerConfigError("trained_betas", `trained_betas has ${cfg.trained_betas.length} values but num_train_timesteps is ${T}`);
    }
    betas = Float64Array.from(cfg.trained_betas);
  } else if (cfg.beta_schedule === "linear") {
    betas = linspace(cfg.beta_start, cfg.beta_end, T);
  } else if (cfg.beta_schedule === "scaled_linear") {
    // Latent-diffusion schedule: linear in √β.
    betas = linspace(Math.sqrt(cfg.beta_start), Math.sqrt(cfg.beta_end), T).map((b) => b * b);
  } else if (cfg.beta_schedule === "squaredcos_cap_v2") {
    betas = cosineBetas(T);
  } else {
    throw new SchedulerConfigError("beta_schedule", `beta_schedule ${JSON.stringify(cfg.beta_schedule)} is unknown`);
  }
  for (let i = 0; i < T; i++) {
    if (!(betas[i]! > 0 && betas[i]! < 1)) {
      throw new SchedulerConfigError("beta_end", `beta_end: β_${i} = ${betas[i]} is outside (0, 1); check beta_start/beta_end`);
    }
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}

export function trainSchedule(cfg: ResolvedSchedulerConfig): TrainSchedule {
  const betas = betasFor(cfg);
  const T = betas.length;
  const alphas = new Float64Array(T);
  const alphasCumprod = new Float64Array(T);
  let acc = 1;
  for (let i = 0; i < T; i++) {
    alphas[i] = 1 - betas[i]!;
    acc *= alphas[i]!;
    alphasCumprod[i] = acc;
  }
  return { numTrainTimesteps: T, betas, alphas, alphasCumprod };
}

/** Check a step count against the training schedule (diffusers raises the same in `set_timesteps`). */
export function checkInferenceSteps(n: number, T: number): void {
  if (!Number.isInteger(n) || n < 1) {
    throw new SchedulerConfigError("num_inference_steps", `num_inference_steps (${n}) must be a positive integer`);
  }
  if (n > T) {
    throw new SchedulerConfigError(
      "num_inference_steps",
      `num_inference_steps (${n}) cannot exceed num_train_timesteps (${T}): the model was trained on ${T} timesteps at most`,
    );
  }
}

/** numpy's round-half-to-even, which `np.round` / `.round()` use. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Inference timesteps in visiting order (decreasing) for a spacing, after Lin et al. 2023, Table 2
 * (diffusers' DDIM/DDPM/PNDM arithmetic). `round` false keeps `linspace` fractional (Euler/Heun).
 */
export function spacedTimesteps(
  spacing: "leading" | "trailing" | "linspace",
  T: number,
  n: number,
  stepsOffset: number,
  round = true,
): number[] {
  const out: number[] = [];
  if (spacing === "linspace") {
    const ts = linspace(0, T - 1, n);
    for (let i = n - 1; i >= 0; i--) out.push(round ? roundHalfEven(ts[i]!) : ts[i]!);
  } else if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    const first = (n - 1) * ratio + stepsOffset;
    if (first > T - 1) {
      // diffusers would index past the schedule here (steps_offset 1 with 1000 steps gives t = 1000).
      let most = n - 1;
      while (most > 1 && (most - 1) * Math.floor(T / most) + stepsOffset > T - 1) most--;
      throw new RangeError(
        `num_inference_steps: ${n} steps with "leading" spacing and steps_offset ${stepsOffset} reach timestep ${first}, past ${T - 1}; use at most ${most} steps, or "trailing" spacing`,
      );
    }
    for (let i = n - 1; i >= 0; i--) out.push(i * ratio + stepsOffset);
  } else {
    const ratio = T / n;
    // np.arange(T, 0, -ratio) has ceil(T / ratio) elements: T, T − ratio, …
    const count = Math.ceil(T / ratio);
    for (let i = 0; i < count; i++) out.push(roundHalfEven(T - i * ratio) - 1);
  }
  return out;
}

/** numpy `interp` for increasing `xp`. */
export function interp(x: number, xp: ArrayLike<number>, fp: ArrayLike<number>): number {
  const n = xp.length;
  if (x <= xp[0]!) return fp[0]!;
  if (x >= xp[n - 1]!) return fp[n - 1]!;
  let lo = 0;
  let hi = n - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xp[mid]! <= x) lo = mid;
    else hi = mid;
  }
  const w = (x - xp[lo]!) / (xp[hi]! - xp[lo]!);
  return fp[lo]! + w * (fp[hi]! - fp[lo]!);
}

/** σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep. */
export function trainSigmas(abar: Float64Array): Float64Array {
  return abar.map((a) => Math.sqrt((1 - a) / a));
}

/** σ at a fractional training timestep, interpolated linearly in σ (diffusers' "linear" interpolation). */
export function sigmaAt(t: number, sigmas: Float64Array): number {
  const n = sigmas.length;
  if (t <= 0) return sigmas[0]!;
  if (t >= n - 1) return sigmas[n - 1]!;
  const lo = Math.floor(t);
  const w = t - lo;
  return w === 0 ? sigmas[lo]! : sigmas[lo]! + w * (sigmas[lo + 1]! - sigmas[lo]!);
}

/**
 * The noise levels of Karras et al. 2022 ("Elucidating the Design Space…", eq. 5):
 * σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): number[] {
  const ramp = linspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return Array.from(ramp, (r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** The fractional training timestep whose σ is `sigma`, interpolating in log σ (inverse of `sigmaAt`). */
export function sigmaToT(sigma: number, logSigmas: Float64Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // Last index whose log σ is ≤ the target (log σ increases with t), kept below n − 1.
  let low = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, n - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/**
 * Dynamic thresholding (Saharia et al. 2022, Imagen, §2.3), in place, per batch row: s = the
 * `ratio` quantile of |x₀|, clamped to [1, maxValue]; x₀ ← clamp(x₀, −s, s)/s. Quantiles interpolate
 * linearly between order statistics, as `torch.quantile` does. `scratch` holds one row.
 */
export function dynamicThreshold(
  x: Float32Array,
  rows: number,
  ratio: number,
  maxValue: number,
  scratch: Float32Array,
): void {
  const len = x.length / rows;
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * len, (r + 1) * len);
    const abs = scratch.subarray(0, len);
    for (let i = 0; i < len; i++) abs[i] = Math.abs(row[i]!);
    abs.sort();
    const pos = ratio * (len - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, len - 1);
    const q = abs[lo]! + (abs[hi]! - abs[lo]!) * (pos - lo);
    // torch.clamp(s, min=1, max=maxValue): max wins when maxValue < 1.
    const s = Math.min(Math.max(q, 1), maxValue);
    for (let i = 0; i < len; i++) row[i] = Math.min(Math.max(row[i]!, -s), s) / s;
  }
}

/** Clamp in place to [−range, range] (diffusers' `clip_sample`). */
export function clipInPlace(x: Float32Array, range: number): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    x[i] = v > range ? range : v < -range ? -range : v;
  }
}
