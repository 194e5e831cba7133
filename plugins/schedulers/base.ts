/**
 * What every scheduler shares: the training schedule, step-count checks, the step index (diffusers'
 * `_step_index` / `_begin_index`), variance-preserving `addNoise`, the schedule as data, and the
 * plugin wrapper. Per-step updates write float32 outputs from float64 coefficients in one loop per
 * tensor: no per-element allocation.
 */
import { z } from "zod";
import { definePlugin, type PluginContext, type PluginDefinition, type SchedulerInstance } from "../../core/plugin.ts";
import type { Rng } from "../../core/random.ts";
import type { ScheduleData, Scheduler, SchedulerStepOutput } from "../../core/scheduler.ts";
import type { Tensor } from "../../core/tensor.ts";
import {
  resolveSchedulerConfig,
  schedulerConfigSchema,
  SchedulerConfigError,
  type ConfigWith,
  type ResolvedSchedulerConfig,
} from "./config.ts";
import { checkInferenceSteps, trainSchedule, type TrainSchedule } from "./schedule.ts";

export type PredictionType = ResolvedSchedulerConfig["prediction_type"];

/**
 * The training schedule of a config object, computed once: every run creates a scheduler from its
 * plugin's one config, and building four 1000-entry float64 arrays per run was a measured part of
 * the denoise node's setup (≈ 100 µs a run, bench/overhead.ts). Shared, so never written: every
 * reader copies (`schedule()`, the σ-schedulers' `Float64Array.from`).
 */
const trainSchedules = new WeakMap<object, TrainSchedule>();
function trainScheduleOf(config: ResolvedSchedulerConfig): TrainSchedule {
  let t = trainSchedules.get(config);
  if (!t) trainSchedules.set(config, (t = trainSchedule(config)));
  return t;
}

export abstract class BaseScheduler<C extends ResolvedSchedulerConfig = ResolvedSchedulerConfig> implements Scheduler {
  order = 1;
  initNoiseSigma = 1;
  timesteps: number[] = [];
  readonly train: TrainSchedule;
  protected numInferenceSteps: number | null = null;
  protected stepIndex: number | null = null;
  protected beginIndex: number | null = null;

  constructor(
    readonly name: string,
    readonly config: C,
  ) {
    this.train = trainScheduleOf(config);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkInferenceSteps(numInferenceSteps, this.train.numTrainTimesteps);
    this.numInferenceSteps = numInferenceSteps;
    this.stepIndex = null;
    this.beginIndex = null;
    this.build(numInferenceSteps);
  }

  /** Compute `timesteps` (and sigmas, where the solver has them) and reset solver state. */
  protected abstract build(numInferenceSteps: number): void;

  setBeginIndex(index: number): void {
    this.requireTimesteps();
    if (!Number.isInteger(index) || index < 0 || index >= this.timesteps.length) {
      throw new RangeError(`${this.name}: begin index ${index} is outside 0..${this.timesteps.length - 1}`);
    }
    this.beginIndex = index;
  }

  protected requireTimesteps(): void {
    if (this.numInferenceSteps === null) {
      throw new Error(`${this.name}: call setTimesteps(numInferenceSteps) before stepping or adding noise`);
    }
  }

  /**
   * Position of `t` in `timesteps`: the first match, or the second where a timestep repeats (Heun),
   * so a schedule entered mid-way (img2img) does not skip a σ — diffusers' `index_for_timestep`.
   */
  protected indexForTimestep(t: number): number {
    let first = -1;
    for (let i = 0; i < this.timesteps.length; i++) {
      if (this.timesteps[i] === t) {
        if (first >= 0) return i;
        first = i;
      }
    }
    if (first < 0) {
      throw new RangeError(`${this.name}: timestep ${t} is not one of this schedule's timesteps (${this.timesteps.length} steps)`);
    }
    return first;
  }

  protected initStepIndex(t: number): number {
    this.requireTimesteps();
    if (this.stepIndex === null) this.stepIndex = this.beginIndex ?? this.indexForTimestep(t);
    return this.stepIndex;
  }

  scaleModelInput(sample: Tensor, _timestep: number): Tensor {
    return sample;
  }

  abstract step(modelOutput: Tensor, timestep: number, sample: Tensor, rng?: Rng): SchedulerStepOutput;

  /** q(x_t | x₀) = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (DDPM eq. 4), at an integer training timestep. */
  addNoise(original: Tensor, noise: Tensor, timestep: number): Tensor {
    sameShape(original, noise, "addNoise noise");
    const abar = this.alphaCumprodAt(timestep);
    return axpby(original, Math.sqrt(abar), noise, Math.sqrt(1 - abar));
  }

  /** ᾱ_t at an integer training timestep; −1 (before the first) is ᾱ = 1. */
  protected alphaCumprodAt(t: number): number {
    const T = this.train.numTrainTimesteps;
    if (!Number.isInteger(t) || t < -1 || t >= T) {
      throw new RangeError(`${this.name}: timestep ${t} must be an integer in 0..${T - 1}`);
    }
    return t < 0 ? 1 : this.train.alphasCumprod[t]!;
  }

  /** Variance-preserving schedule view: σ and log-SNR at each visited integer timestep. */
  schedule(): ScheduleData {
    const abar = this.timesteps.map((t) => this.alphaCumprodAt(t));
    return this.scheduleData(
      abar.map((a) => Math.sqrt((1 - a) / a)),
      abar.map((a) => Math.log(a / (1 - a))),
    );
  }

  protected scheduleData(sigmas: number[], logSnr: number[]): ScheduleData {
    return {
      scheduler: this.name,
      numInferenceSteps: this.numInferenceSteps ?? 0,
      timesteps: [...this.timesteps],
      betas: Array.from(this.train.betas),
      alphas: Array.from(this.train.alphas),
      alphasCumprod: Array.from(this.train.alphasCumprod),
      sigmas,
      logSnr,
    };
  }
}

export function sameShape(a: Tensor, b: Tensor, what: string): void {
  if (a.data.length !== b.data.length || a.dims.length !== b.dims.length || a.dims.some((d, i) => d !== b.dims[i])) {
    throw new RangeError(`${what}: shape [${b.dims.join(", ")}] does not match the sample's [${a.dims.join(", ")}]`);
  }
}

/** a·x + b·y into a new float32 tensor. */
export function axpby(x: Tensor, a: number, y: Tensor, b: number): Tensor {
  const out = new Float32Array(x.data.length);
  const xd = x.data;
  const yd = y.data;
  for (let i = 0; i < out.length; i++) out[i] = a * xd[i]! + b * yd[i]!;
  return { dims: [...x.dims], data: out };
}

export function like(x: Tensor, data: Float32Array): Tensor {
  return { dims: [...x.dims], data };
}

/**
 * x̂₀ from a model output at a variance-preserving noise level (√ᾱ = a, √(1−ᾱ) = b):
 * ε: (x − b·ε)/a (DDPM eq. 15); v: a·x − b·v (Salimans & Ho 2022, §4); sample: the output itself.
 */
export function predictX0(type: PredictionType, out: Float32Array, model: Float32Array, x: Float32Array, a: number, b: number): Float32Array {
  if (type === "epsilon") for (let i = 0; i < out.length; i++) out[i] = (x[i]! - b * model[i]!) / a;
  else if (type === "v_prediction") for (let i = 0; i < out.length; i++) out[i] = a * x[i]! - b * model[i]!;
  else out.set(model);
  return out;
}

/** ε̂ from a model output at √ᾱ = a, √(1−ᾱ) = b (the ε a given x̂₀ implies). */
export function predictEps(type: PredictionType, out: Float32Array, model: Float32Array, x: Float32Array, a: number, b: number): Float32Array {
  if (type === "epsilon") out.set(model);
  else if (type === "v_prediction") for (let i = 0; i < out.length; i++) out[i] = a * model[i]! + b * x[i]!;
  else for (let i = 0; i < out.length; i++) out[i] = (x[i]! - a * model[i]!) / b;
  return out;
}

export function requireRng(rng: Rng | undefined, name: string, why: string): Rng {
  if (!rng) throw new Error(`${name}: step needs the pipeline's seeded rng (${why}); pass it as step(..., rng)`);
  return rng;
}

/** Batch rows of a [B, …] tensor (dynamic thresholding works per image). */
export function rows(t: Tensor): number {
  return t.dims.length > 1 ? t.dims[0]! : 1;
}

export interface SchedulerSpec<D extends Record<string, unknown>> {
  /** Plugin name (`ddim`). */
  readonly name: string;
  /** The diffusers class it reproduces (`DDIMScheduler`). */
  readonly className: string;
  readonly description: string;
  /** diffusers' `__init__` defaults for this class. */
  readonly defaults: D;
  /** Reject config values this scheduler would have to honour but does not implement. */
  readonly validate?: (cfg: ConfigWith<D>) => void;
  readonly create: (cfg: ConfigWith<D>) => Scheduler;
}

export type SchedulerPlugin = Omit<PluginDefinition<"scheduler", ResolvedSchedulerConfig>, "create"> & {
  /** Synchronous (schedulers load nothing); accepts a raw or resolved diffusers config; needs no context. */
  create(config: unknown, ctx?: PluginContext): SchedulerInstance;
  readonly className: string;
  readonly defaults: Readonly<Record<string, unknown>>;
  /** Resolve a raw diffusers config (this scheduler's defaults under it). */
  resolve(raw: unknown): ResolvedSchedulerConfig;
};

/** Wrap a scheduler class as a `scheduler` plugin whose config is a diffusers config. */
export function defineScheduler<D extends Record<string, unknown>>(spec: SchedulerSpec<D>): SchedulerPlugin {
  const resolve = (raw: unknown): ConfigWith<D> => {
    const cfg = resolveSchedulerConfig(spec.defaults, raw ?? {}) as ConfigWith<D>;
    spec.validate?.(cfg);
    return cfg;
  };
  const plugin = definePlugin<"scheduler", ResolvedSchedulerConfig>({
    name: spec.name,
    kind: "scheduler",
    description: spec.description,
    // Errors found while resolving (e.g. a value this scheduler does not support) become zod issues
    // at the offending key, so `safeParse` reports them like any other validation error.
    configSchema: schedulerConfigSchema.transform((raw, ctx) => {
      try {
        return resolve(raw);
      } catch (err) {
        if (!(err instanceof SchedulerConfigError)) throw err;
        ctx.issues.push({ code: "custom", path: [err.key], message: err.message, input: raw });
        return z.NEVER;
      }
    }) as never,
    deterministic: true,
    create(config): SchedulerInstance {
      const cfg = resolve(config ?? {});
      spec.create(cfg); // build once so a bad config fails at load time, not on the first generation
      return { config: cfg, createScheduler: () => spec.create(cfg) };
    },
  });
  return Object.freeze({
    ...plugin,
    create: plugin.create as SchedulerPlugin["create"],
    className: spec.className,
    defaults: Object.freeze({ ...spec.defaults }),
    resolve,
  });
}

export { SchedulerConfigError };
