/**
 * DPM-Solver++ multistep — Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models", Algorithm 2 (2M), in the data-prediction form with λ = log(α/σ):
 *   first order (eq. 9, DDIM):  x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x̂₀(s),  h = λ_t − λ_s
 *   second order (midpoint):    D = x̂₀(s₀) + (1/(2r))·(x̂₀(s₀) − x̂₀(s₁)),  r = h₀/h
 *   (`solver_type: "heun"` uses Lu et al.'s alternative D₁ coefficient ((e^{−h}−1)/h + 1)).
 * `lower_order_final` drops to first order for the last step when there are fewer than 15 steps
 * (stabler at few steps); `final_sigmas_type` chooses whether the last step lands on σ = 0.
 */
import type { Rng } from "../../core/random.ts";
import type { ScheduleData, SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported, type ConfigWith } from "./config.ts";
import { axpby, BaseScheduler, defineScheduler, like, predictX0, rows, sameShape } from "./base.ts";
import { dynamicThreshold, karrasSigmas, linspace, roundHalfEven, sigmaAt, sigmaToT, trainSigmas } from "./schedule.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  timestep_spacing: "linspace" as const,
  solver_order: 2,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false as boolean | null,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: "zero" as "zero" | "sigma_min" | null,
  lambda_min_clipped: -Infinity,
  variance_type: null as string | null,
};
type Config = ConfigWith<typeof DEFAULTS>;

/** α_t = 1/√(σ²+1), σ_t = σ·α_t: the VP coefficients of a σ-space noise level. */
function alphaSigma(sigma: number): [number, number] {
  const a = 1 / Math.sqrt(sigma * sigma + 1);
  return [a, sigma * a];
}

export class DpmSolverMultistepScheduler extends BaseScheduler<Config> {
  sigmas: number[] = [];
  private readonly trainSig: Float64Array;
  private history: Float32Array[] = [];
  private lowerOrderNums = 0;
  private scratch = new Float32Array(0);

  constructor(config: Config) {
    super("dpmpp-2m", config);
    this.trainSig = trainSigmas(this.train.alphasCumprod);
  }

  protected build(n: number): void {
    const c = this.config;
    const T = this.train.numTrainTimesteps;
    // λ_min clipping (for cosine schedules): skip the noisiest training steps whose λ is below it.
    let clipped = 0;
    const abar = this.train.alphasCumprod;
    for (let t = 0; t < T; t++) {
      const lambda = 0.5 * Math.log(abar[t]!) - 0.5 * Math.log(1 - abar[t]!);
      if (lambda < c.lambda_min_clipped) clipped++;
    }
    const last = T - clipped;
    let ts: number[];
    if (c.timestep_spacing === "linspace") {
      const l = linspace(0, last - 1, n + 1);
      ts = Array.from(l, roundHalfEven).reverse().slice(0, -1);
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
      ts = sig.map((s) => roundHalfEven(sigmaToT(s, this.trainSig.map(Math.log))));
    } else {
      sig = ts.map((t) => sigmaAt(t, this.trainSig));
    }
    const final = c.final_sigmas_type === "sigma_min" ? this.trainSig[0]! : 0;
    this.timesteps = ts;
    this.sigmas = [...sig, final].map(Math.fround);
    this.history = [];
    this.lowerOrderNums = 0;
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, _rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "dpmpp-2m step model output");
    const c = this.config;
    const i = this.initStepIndex(timestep);
    const steps = this.timesteps.length;
    const lowerFinal =
      i === steps - 1 && (c.euler_at_final || (c.lower_order_final && steps < 15) || c.final_sigmas_type === "zero");
    const x = sample.data;
    const n = x.length;
    // Convert the model output to x̂₀ at σ_i (data prediction), then threshold if asked.
    const [a, s] = alphaSigma(this.sigmas[i]!);
    const x0 = predictX0(c.prediction_type, new Float32Array(n), modelOutput.data, x, a, s);
    if (c.thresholding) {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      dynamicThreshold(x0, rows(sample), c.dynamic_thresholding_ratio, c.sample_max_value, this.scratch);
    }
    this.history.push(x0);
    if (this.history.length > c.solver_order) this.history.shift();

    const firstOrder = c.solver_order === 1 || this.lowerOrderNums < 1 || lowerFinal;
    const prev = firstOrder ? this.firstOrder(i, x, x0) : this.secondOrder(i, x);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }

  private lambda(sigma: number): [number, number, number] {
    const [a, s] = alphaSigma(sigma);
    return [a, s, Math.log(a) - Math.log(s)];
  }

  private firstOrder(i: number, x: Float32Array, x0: Float32Array): Float32Array {
    const [, ss, ls] = this.lambda(this.sigmas[i]!);
    const [at, st, lt] = this.lambda(this.sigmas[i + 1]!);
    const h = lt - ls;
    const cx = st / ss;
    const c0 = -at * Math.expm1(-h);
    const out = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) out[j] = cx * x[j]! + c0 * x0[j]!;
    return out;
  }

  private secondOrder(i: number, x: Float32Array): Float32Array {
    const [, s0, l0] = this.lambda(this.sigmas[i]!);
    const [, , l1] = this.lambda(this.sigmas[i - 1]!);
    const [at, st, lt] = this.lambda(this.sigmas[i + 1]!);
    const m0 = this.history[this.history.length - 1]!;
    const m1 = this.history[this.history.length - 2]!;
    const h = lt - l0;
    const r = (l0 - l1) / h;
    const em1 = Math.expm1(-h); // e^{−h} − 1
    const cx = st / s0;
    const cD0 = -at * em1;
    const cD1 = this.config.solver_type === "heun" ? at * (em1 / h + 1) : -0.5 * at * em1;
    const out = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) {
      const d1 = (m0[j]! - m1[j]!) / r;
      out[j] = cx * x[j]! + cD0 * m0[j]! + cD1 * d1;
    }
    return out;
  }

  /** √ᾱ·x₀ + √(1−ᾱ)·ε at the (possibly Karras) noise level of `timestep`. */
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

export default defineScheduler({
  name: "dpmpp-2m",
  className: "DPMSolverMultistepScheduler",
  description: "DPM-Solver++(2M) multistep, data prediction (Lu et al. 2022, Algorithm 2)",
  defaults: DEFAULTS,
  validate: (cfg) =>
    requireSupported("dpmpp-2m", cfg, {
      algorithm_type: ["dpmsolver++"],
      solver_order: [1, 2],
      solver_type: ["midpoint", "heun"],
      use_exponential_sigmas: [false, null],
      use_beta_sigmas: [false, null],
      use_lu_lambdas: [false, null],
      variance_type: [null],
    }),
  create: (cfg) => new DpmSolverMultistepScheduler(cfg),
});
