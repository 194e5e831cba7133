/**
 * PNDM / PLMS — Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on
 * Manifolds". The transfer φ(x_t, ε, t → t−δ) is eq. 11 (the DDIM step written in ε);
 * the first three steps are pseudo Runge–Kutta (eq. 13, four ε evaluations per step, at t, t−δ/2,
 * t−δ/2, t−δ) unless `skip_prk_steps`, then pseudo linear multistep (eq. 12):
 * ε' = (55ε_t − 59ε_{t−δ} + 37ε_{t−2δ} − 9ε_{t−3δ})/24, with lower-order Adams–Bashforth
 * combinations while the history fills. Follows diffusers' `PNDMScheduler` step by step, including
 * its v-prediction handling: v outputs are combined as they are and converted to ε once, at the
 * step's base timestep and sample (so v and ε models do not give identical samples here, unlike the
 * other schedulers; this keeps diffusers' published results). x₀ outputs are converted per call.
 */
import type { Rng } from "../../core/random.ts";
import type { SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import { BASE_DEFAULTS, SchedulerConfigError, type ConfigWith } from "./config.ts";
import { BaseScheduler, defineScheduler, like, predictEps, sameShape } from "./base.ts";
import { roundHalfEven, linspace } from "./schedule.ts";

const DEFAULTS = { ...BASE_DEFAULTS, skip_prk_steps: false, set_alpha_to_one: false };
type Config = ConfigWith<typeof DEFAULTS>;

export class PndmScheduler extends BaseScheduler<Config> {
  private readonly finalAlphaCumprod: number;
  private prkCount = 0;
  private counter = 0;
  private ets: Float32Array[] = [];
  private curModelOutput: Float32Array | null = null;
  private curSample: Float32Array | null = null;

  constructor(config: Config) {
    super("pndm", config);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.train.alphasCumprod[0]!;
  }

  protected build(n: number): void {
    const c = this.config;
    const T = this.train.numTrainTimesteps;
    let base: number[]; // increasing
    if (c.timestep_spacing === "linspace") base = Array.from(linspace(0, T - 1, n), roundHalfEven);
    else if (c.timestep_spacing === "leading") base = Array.from({ length: n }, (_, i) => i * Math.floor(T / n) + c.steps_offset);
    else {
      const ratio = T / n;
      base = Array.from({ length: Math.ceil(T / ratio) }, (_, i) => roundHalfEven(T - i * ratio) - 1).reverse();
    }
    let prk: number[] = [];
    let plms: number[];
    if (c.skip_prk_steps) {
      // An extra step at the second-to-last timestep warms up the multistep history (diffusers).
      plms = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      if (n < 4) {
        throw new SchedulerConfigError(
          "num_inference_steps",
          `num_inference_steps (${n}): pndm's Runge–Kutta warm-up needs at least 4 steps; set skip_prk_steps: true for fewer`,
        );
      }
      const half = Math.floor(Math.floor(T / n) / 2);
      const last = base.slice(-4).flatMap((t) => [t, t + half]); // t, t+δ/2 for the last 4 (noisiest)
      const dup = last.slice(0, -1).flatMap((t) => [t, t]).slice(1, -1);
      prk = dup.reverse();
      plms = base.slice(0, -3).reverse();
    }
    this.prkCount = prk.length;
    this.timesteps = [...prk, ...plms];
    this.counter = 0;
    this.ets = [];
    this.curModelOutput = null;
    this.curSample = null;
  }

  /** Entering mid-schedule (img2img) restarts the multistep warm-up there; the Runge–Kutta phase cannot be entered mid-way. */
  override setBeginIndex(index: number): void {
    if (index > 0 && !this.config.skip_prk_steps) {
      throw new SchedulerConfigError(
        "skip_prk_steps",
        "skip_prk_steps: pndm's Runge–Kutta warm-up cannot start mid-schedule (img2img); set skip_prk_steps: true",
      );
    }
    if (index === 1) {
      // timesteps[1] is the warm-up's repeat of timesteps[2]; entering there would evaluate the model
      // at one noise level and step from another (diffusers silently does; we refuse).
      throw new RangeError("pndm: cannot begin at index 1 (the multistep warm-up's repeated timestep); begin at 0 or ≥ 2");
    }
    super.setBeginIndex(index);
    // Past the repeated timestep there is no room for the warm-up's second call: start the
    // multistep history with lower-order Adams–Bashforth steps instead.
    if (index >= 2) this.counter = 2;
  }

  step(modelOutput: Tensor, timestep: number, sample: Tensor, _rng?: Rng): SchedulerStepOutput {
    this.requireTimesteps();
    sameShape(sample, modelOutput, "pndm step model output");
    // ε-parameterised method: convert x₀ predictions at this timestep (v is converted inside φ, as diffusers does).
    let eps = modelOutput.data;
    if (this.config.prediction_type === "sample") {
      const a = this.alphaCumprodAt(timestep);
      eps = predictEps("sample", new Float32Array(eps.length), eps, sample.data, Math.sqrt(a), Math.sqrt(1 - a));
    }
    return this.counter < this.prkCount && !this.config.skip_prk_steps
      ? this.stepPrk(eps, timestep, sample)
      : this.stepPlms(eps, timestep, sample);
  }

  private get stride(): number {
    return Math.floor(this.train.numTrainTimesteps / this.numInferenceSteps!);
  }

  /** Pseudo Runge–Kutta (eq. 13): ε' = (e1 + 2e2 + 2e3 + e4)/6 over four calls. */
  private stepPrk(eps: Float32Array, t: number, sample: Tensor): SchedulerStepOutput {
    const half = Math.floor(this.stride / 2);
    const diffToPrev = this.counter % 2 ? 0 : half;
    const prevT = t - diffToPrev;
    const tBase = this.timesteps[Math.floor(this.counter / 4) * 4]!;
    const phase = this.counter % 4;
    const n = eps.length;
    let out = eps;
    if (phase === 0) {
      this.curModelOutput = new Float32Array(n);
      for (let i = 0; i < n; i++) this.curModelOutput[i] = eps[i]! / 6;
      this.ets.push(Float32Array.from(eps));
      this.curSample = Float32Array.from(sample.data);
    } else if (phase === 1 || phase === 2) {
      const acc = this.curModelOutput!;
      for (let i = 0; i < n; i++) acc[i] = acc[i]! + eps[i]! / 3;
    } else {
      const acc = this.curModelOutput!;
      out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = acc[i]! + eps[i]! / 6;
      this.curModelOutput = null;
    }
    const base = this.curSample ?? sample.data;
    const prev = this.transfer(base, tBase, prevT, out);
    this.counter++;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, this.x0(sample.data, t, eps)) };
  }

  /** Pseudo linear multistep (eq. 12), lower-order Adams–Bashforth while the history fills. */
  private stepPlms(eps: Float32Array, t: number, sample: Tensor): SchedulerStepOutput {
    if (!this.config.skip_prk_steps && this.ets.length < 3) {
      throw new Error("pndm: the linear multistep phase needs the three Runge–Kutta steps first (or skip_prk_steps: true)");
    }
    let prevT = t - this.stride;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(Float32Array.from(eps));
    } else {
      prevT = t;
      t = t + this.stride;
    }
    const n = eps.length;
    const e = this.ets;
    const L = e.length;
    const out = new Float32Array(n);
    let x = sample.data;
    if (L === 1 && this.counter === 1) {
      for (let i = 0; i < n; i++) out[i] = (eps[i]! + e[0]![i]!) / 2;
      x = this.curSample!;
      this.curSample = null;
    } else if (L === 1) {
      out.set(eps);
      if (this.counter === 0) this.curSample = Float32Array.from(sample.data);
    } else if (L === 2) {
      for (let i = 0; i < n; i++) out[i] = (3 * e[1]![i]! - e[0]![i]!) / 2;
    } else if (L === 3) {
      for (let i = 0; i < n; i++) out[i] = (23 * e[2]![i]! - 16 * e[1]![i]! + 5 * e[0]![i]!) / 12;
    } else {
      for (let i = 0; i < n; i++) out[i] = (55 * e[3]![i]! - 59 * e[2]![i]! + 37 * e[1]![i]! - 9 * e[0]![i]!) / 24;
    }
    const prev = this.transfer(x, t, prevT, out);
    this.counter++;
    return { prevSample: like(sample, prev), predOriginalSample: like(sample, this.x0(sample.data, t, eps)) };
  }

  /** φ of eq. 11: x_{t−δ} = √(ᾱ'/ᾱ)·x_t − (ᾱ' − ᾱ)·ε / (ᾱ·√(1−ᾱ') + √(ᾱ(1−ᾱ)ᾱ')). */
  private transfer(x: Float32Array, t: number, prevT: number, eps: Float32Array): Float32Array {
    const a = this.alphaCumprodAt(t);
    const ap = prevT >= 0 ? this.alphaCumprodAt(prevT) : this.finalAlphaCumprod;
    const v = this.config.prediction_type === "v_prediction";
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const cx = Math.sqrt(ap / a);
    const ce = (ap - a) / (a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap));
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const e = v ? sa * eps[i]! + sb * x[i]! : eps[i]!;
      out[i] = cx * x[i]! - ce * e;
    }
    return out;
  }

  private x0(x: Float32Array, t: number, out: Float32Array): Float32Array {
    const a = this.alphaCumprodAt(t);
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const v = this.config.prediction_type === "v_prediction";
    const r = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) r[i] = v ? sa * x[i]! - sb * out[i]! : (x[i]! - sb * out[i]!) / sa;
    return r;
  }
}

export default defineScheduler({
  name: "pndm",
  className: "PNDMScheduler",
  description: "PNDM/PLMS pseudo numerical methods (Liu et al. 2022, eqs. 11–13)",
  defaults: DEFAULTS,
  create: (cfg) => new PndmScheduler(cfg),
});
