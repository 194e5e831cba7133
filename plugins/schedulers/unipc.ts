/**
 * UniPC — Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
 * Diffusion Models", data-prediction form (`predict_x0`). Each step first corrects the sample just
 * reached with the new model output (UniC, Algorithm 1: x̃_t = x_t^{pred} re-integrated using
 * x̂₀(t) as an extra point, order p+1 at no extra model call), then predicts the next one (UniP,
 * Algorithm 2, order p from the last p outputs):
 *   x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x̂₀(s) − α_t·B(h)·Σ_k ρ_k·D_k,  D_k = (x̂₀(s_k) − x̂₀(s))/r_k,
 * with B(h) = −h (`bh1`) or e^{−h} − 1 (`bh2`), and ρ from the order conditions R·ρ = φ-moments
 * (eq. 8; ρ = ½ in closed form at order 2 of UniP and order 1 of UniC).
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, requireSupported, type ConfigWith } from "./config.ts";
import { defineScheduler, like, predictX0, rows, sameShape } from "./base.ts";
import { alphaSigma, lambdaOf, MultistepScheduler } from "./multistep.ts";
import { dynamicThreshold } from "./schedule.ts";

const DEFAULTS = {
  ...BASE_DEFAULTS,
  timestep_spacing: "linspace" as const,
  solver_order: 2,
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  predict_x0: true,
  solver_type: "bh2",
  lower_order_final: true,
  disable_corrector: [] as number[],
  solver_p: null as unknown,
  use_karras_sigmas: false as boolean | null,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_flow_sigmas: false,
  final_sigmas_type: "zero" as "zero" | "sigma_min" | null,
  use_dynamic_shifting: false,
  time_shift_type: "exponential" as const,
  shift_terminal: null as number | null,
};
type Config = ConfigWith<typeof DEFAULTS>;

/** Solve a small dense system A·x = b (Gaussian elimination with partial pivoting, float64). */
function solve(A: number[][], b: number[]): number[] {
  const n = b.length;
  const M = A.map((row, i) => [...row.slice(0, n), b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    [M[c], M[p]] = [M[p]!, M[c]!];
    for (let r = c + 1; r < n; r++) {
      const f = M[r]![c]! / M[c]![c]!;
      for (let k = c; k <= n; k++) M[r]![k] = M[r]![k]! - f * M[c]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = M[r]![n]!;
    for (let k = r + 1; k < n; k++) s -= M[r]![k]! * x[k]!;
    x[r] = s / M[r]![r]!;
  }
  return x;
}

export class UniPcScheduler extends MultistepScheduler<Config> {
  /** x̂₀ history, oldest first (at most solver_order). */
  private history: Float32Array[] = [];
  private lastSample: Float32Array | null = null;
  private thisOrder = 1;
  private lowerOrderNums = 0;
  private scratch = new Float32Array(0);

  constructor(config: Config) {
    super("unipc", config);
  }

  protected reset(): void {
    this.history = [];
    this.lastSample = null;
    this.thisOrder = 1;
    this.lowerOrderNums = 0;
  }

  /**
   * The shared B(h) update from x (at σ_s = sigmas[s]) to σ_t = sigmas[t] with base output m0 and
   * differences to the `order − 1` earlier outputs (at sigmas[s − k]); `extra`, for UniC, is the new
   * output at t, weighted by the last ρ.
   */
  private update(x: Float32Array, s: number, t: number, order: number, corrector: Float32Array | null): Float32Array {
    const [at, st, lt] = lambdaOf(this.sigmas[t]!);
    const [, ss, ls] = lambdaOf(this.sigmas[s]!);
    const h = lt - ls;
    const hist = this.history;
    const m0 = hist[hist.length - 1]!;
    const rks: number[] = [];
    const ms: Float32Array[] = [];
    for (let k = 1; k < order; k++) {
      const [, , lk] = lambdaOf(this.sigmas[s - k]!);
      rks.push((lk - ls) / h);
      ms.push(hist[hist.length - 1 - k]!);
    }
    rks.push(1);
    const hh = -h;
    const hPhi1 = Math.expm1(hh);
    const Bh = this.config.solver_type === "bh1" ? hh : Math.expm1(hh);
    let hPhiK = hPhi1 / hh - 1;
    let fact = 1;
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= order; i++) {
      R.push(rks.map((r) => r ** (i - 1)));
      b.push((hPhiK * fact) / Bh);
      fact *= i + 1;
      hPhiK = hPhiK / hh - 1 / fact;
    }
    let rhos: number[];
    if (corrector) rhos = order === 1 ? [0.5] : solve(R, b);
    else rhos = order === 1 ? [] : order === 2 ? [0.5] : solve(R.slice(0, -1).map((r) => r.slice(0, -1)), b.slice(0, -1));
    const cx = st / ss;
    const c0 = -at * hPhi1;
    // Without correction terms (first-order UniP) B(h) drops out; skipping it keeps a final σ = 0
    // with bh1 (B(h) = −h = −∞) finite, where diffusers gets ∞·0 = NaN.
    const cB = ms.length > 0 || corrector ? -at * Bh : 0;
    const out = new Float32Array(x.length);
    for (let j = 0; j < x.length; j++) {
      let res = 0;
      for (let k = 0; k < ms.length; k++) res += (rhos[k]! * (ms[k]![j]! - m0[j]!)) / rks[k]!;
      if (corrector) res += rhos[rhos.length - 1]! * (corrector[j]! - m0[j]!);
      out[j] = cx * x[j]! + c0 * m0[j]! + cB * res;
    }
    return out;
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, _rng?: Rng): SchedulerStepOutput {
    sameShape(sample, modelOutput, "unipc step model output");
    const c = this.config;
    const i = this.initStepIndex(timestep);
    const n = sample.data.length;
    const [a, s] = alphaSigma(this.sigmas[i]!);
    const x0 = predictX0(c.prediction_type, new Float32Array(n), modelOutput.data, sample.data, a, s);
    if (c.thresholding) {
      if (this.scratch.length < n) this.scratch = new Float32Array(n);
      dynamicThreshold(x0, rows(sample), c.dynamic_thresholding_ratio, c.sample_max_value, this.scratch);
    }
    // UniC: correct the sample the previous prediction reached, using this step's x̂₀.
    let x = sample.data;
    if (i > 0 && this.lastSample && !c.disable_corrector.includes(i - 1)) {
      x = this.update(this.lastSample, i - 1, i, this.thisOrder, x0);
    }
    this.history.push(x0);
    if (this.history.length > c.solver_order) this.history.shift();
    const order = c.lower_order_final ? Math.min(c.solver_order, this.timesteps.length - i) : c.solver_order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.lastSample = x;
    // UniP: predict the next sample.
    const prev = this.update(x, i, i + 1, this.thisOrder, null);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.stepIndex = i + 1;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, x0) };
  }
}

export default defineScheduler({
  name: "unipc",
  className: "UniPCMultistepScheduler",
  description: "UniPC multistep predictor-corrector (Zhao et al. 2023), data prediction, B(h) = bh1 | bh2",
  defaults: DEFAULTS,
  validate: (cfg) =>
    requireSupported("unipc", cfg, {
      predict_x0: [true],
      // DPM-Solver/DEIS solver types in a reused config mean bh2 here, as in diffusers.
      solver_type: ["bh1", "bh2", "midpoint", "heun", "logrho"],
      solver_p: [null],
      use_exponential_sigmas: [false, null],
      use_beta_sigmas: [false, null],
      use_flow_sigmas: [false, null],
      use_dynamic_shifting: [false],
      time_shift_type: ["exponential"],
      shift_terminal: [null],
    }),
  create: (cfg) => new UniPcScheduler(cfg),
});
