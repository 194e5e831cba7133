/**
 * DPM-Solver++ multistep — Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models", Algorithm 2 (2M), in the data-prediction form with λ = log(α/σ):
 *   first order (eq. 9, DDIM):  x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x̂₀(s),  h = λ_t − λ_s
 *   second order (midpoint):    D = x̂₀(s₀) + (1/(2r))·(x̂₀(s₀) − x̂₀(s₁)),  r = h₀/h
 *   (`solver_type: "heun"` uses Lu et al.'s alternative D₁ coefficient ((e^{−h}−1)/h + 1)).
 * `lower_order_final` drops to first order for the last step when there are fewer than 15 steps
 * (stabler at few steps); `final_sigmas_type` chooses whether the last step lands on σ = 0.
 *
 * `algorithm_type: "sde-dpmsolver++"` is DPM-Solver++(2M) SDE (Lu et al. 2022, §4 and Appendix B:
 * the same data-prediction integrator for the reverse SDE, which has twice the drift in λ and
 * injects fresh noise each step) — "DPM++ 2M SDE" in A1111's sampler list, usually with Karras σ:
 *   first order:   x_t = (σ_t/σ_s)·e^{−h}·x_s + α_t·(1 − e^{−2h})·x̂₀(s) + σ_t·√(1 − e^{−2h})·z
 *   second order:  the x̂₀ term becomes α_t(1 − e^{−2h})·(D₀ + ½·D₁) (midpoint) or
 *                  α_t(1 − e^{−2h})·D₀ + α_t·((1 − e^{−2h})/(−2h) + 1)·D₁ (heun),
 *                  D₀ = x̂₀(s₀), D₁ = (x̂₀(s₀) − x̂₀(s₁))/r.
 * z ~ N(0, I) comes from the run's seeded rng (`step(…, rng)`), so a seed reproduces the image.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported, type ConfigWith } from "./config.ts";
import { defineScheduler, like, predictX0, requireRng, rows, sameShape } from "./base.ts";
import { alphaSigma, lambdaOf, MultistepScheduler } from "./multistep.ts";
import { dynamicThreshold } from "./schedule.ts";

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
  use_flow_sigmas: false,
  flow_shift: 1.0,
  use_dynamic_shifting: false,
  time_shift_type: "exponential" as const,
};
type Config = ConfigWith<typeof DEFAULTS>;

export class DpmSolverMultistepScheduler extends MultistepScheduler<Config> {
  private history: Float32Array[] = [];
  private lowerOrderNums = 0;
  private scratch = new Float32Array(0);

  constructor(config: Config) {
    super("dpmpp-2m", config);
  }

  protected reset(): void {
    this.history = [];
    this.lowerOrderNums = 0;
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput {
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
    const prev = c.algorithm_type === "sde-dpmsolver++"
      ? this.sdeStep(i, x, firstOrder, requireRng(rng, this.name, "the SDE solver adds fresh noise every step"))
      : firstOrder ? this.firstOrder(i, x, x0) : this.secondOrder(i, x);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }

  private firstOrder(i: number, x: Float32Array, x0: Float32Array): Float32Array {
    const [, ss, ls] = lambdaOf(this.sigmas[i]!);
    const [at, st, lt] = lambdaOf(this.sigmas[i + 1]!);
    const h = lt - ls;
    const cx = st / ss;
    const c0 = -at * Math.expm1(-h);
    const out = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) out[j] = cx * x[j]! + c0 * x0[j]!;
    return out;
  }

  private secondOrder(i: number, x: Float32Array): Float32Array {
    const [, s0, l0] = lambdaOf(this.sigmas[i]!);
    const [, , l1] = lambdaOf(this.sigmas[i - 1]!);
    const [at, st, lt] = lambdaOf(this.sigmas[i + 1]!);
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

  /** One step of DPM-Solver++(2M) SDE from σ_i to σ_{i+1} (first or second order), noise from `rng`. */
  private sdeStep(i: number, x: Float32Array, firstOrder: boolean, rng: Rng): Float32Array {
    const [, s0, l0] = lambdaOf(this.sigmas[i]!);
    const [at, st, lt] = lambdaOf(this.sigmas[i + 1]!);
    const h = lt - l0;
    const decay = -Math.expm1(-2 * h); // 1 − e^{−2h}
    const cx = (st / s0) * Math.exp(-h);
    const cD0 = at * decay;
    const cz = st * Math.sqrt(decay);
    const m0 = this.history[this.history.length - 1]!;
    const m1 = firstOrder ? null : this.history[this.history.length - 2]!;
    let cD1 = 0;
    let r = 1;
    if (m1) {
      const [, , l1] = lambdaOf(this.sigmas[i - 1]!);
      r = (l0 - l1) / h;
      cD1 = this.config.solver_type === "heun" ? at * (decay / (-2 * h) + 1) : 0.5 * at * decay;
    }
    const out = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) {
      const d1 = m1 ? (m0[j]! - m1[j]!) / r : 0;
      // The noise is drawn even where σ_t = 0 (the last step), so every step consumes the same count.
      out[j] = cx * x[j]! + cD0 * m0[j]! + cD1 * d1 + cz * rng.normal();
    }
    return out;
  }
}

export default defineScheduler({
  name: "dpmpp-2m",
  className: "DPMSolverMultistepScheduler",
  description: "DPM-Solver++(2M) multistep, data prediction (Lu et al. 2022, Algorithm 2); algorithm_type sde-dpmsolver++ for DPM++ 2M SDE",
  defaults: DEFAULTS,
  validate: (cfg) =>
    requireSupported("dpmpp-2m", cfg, {
      algorithm_type: ["dpmsolver++", "sde-dpmsolver++", "deis"],
      solver_order: [1, 2],
      // UniPC/DEIS solver types in a reused config mean midpoint here, as in diffusers.
      solver_type: ["midpoint", "heun", "bh1", "bh2", "logrho"],
      use_exponential_sigmas: [false, null],
      use_beta_sigmas: [false, null],
      use_lu_lambdas: [false, null],
      use_flow_sigmas: [false, null],
      use_dynamic_shifting: [false],
      time_shift_type: ["exponential"],
      // learned variances would need the model's extra channels split off; the fixed ones a reused
      // DDPM config carries mean nothing to this solver (diffusers ignores them too).
      variance_type: [null, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"],
    }),
  create: (cfg) => new DpmSolverMultistepScheduler(cfg),
});
