/**
 * Scheduler config, key for key compatible with diffusers' `scheduler_config.json`.
 *
 * One zod schema covers the keys of every diffusers scheduler this family knows, so a config written
 * for one scheduler can build another, as diffusers' `from_config` allows: keys meant for another
 * scheduler are kept (and shown in the resolved config) but ignored; a key no scheduler knows is an
 * error naming it; `_class_name`, `_diffusers_version` and other `_`-prefixed keys are metadata.
 *
 * Each scheduler declares its defaults (diffusers' `__init__` defaults); `resolveSchedulerConfig`
 * merges them under the given config and returns a frozen object, so a resolved config is a plain
 * record that can be displayed, stored, and passed to another scheduler.
 */
import { z } from "zod";

export const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;
export const PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"] as const;
export const TIMESTEP_SPACINGS = ["leading", "trailing", "linspace"] as const;
/** Upper bound on `num_train_timesteps` (and the length of `trained_betas`). */
export const MAX_TRAIN_TIMESTEPS = 10_000;

const bool = z.boolean();
const positiveNumber = z.number().finite().positive();

/** Every key any supported diffusers scheduler accepts. Values are checked even when the key is ignored. */
const KNOWN = {
  // Released models train with 1,000 (a few with 4,000); the bound keeps a config from asking for
  // gigabytes of schedule arrays (10^8 took 27 s and 5.9 GB).
  num_train_timesteps: z.number().int().positive().max(MAX_TRAIN_TIMESTEPS),
  beta_start: positiveNumber,
  beta_end: positiveNumber,
  beta_schedule: z.enum(BETA_SCHEDULES, {
    error: (i) => `beta_schedule ${JSON.stringify(i.input)} is unknown (expected one of ${BETA_SCHEDULES.join(", ")})`,
  }),
  trained_betas: z.array(z.number().finite().gt(0).lt(1)).max(MAX_TRAIN_TIMESTEPS).nullable(),
  prediction_type: z.enum(PREDICTION_TYPES, {
    error: (i) => `prediction_type ${JSON.stringify(i.input)} is unknown (expected one of ${PREDICTION_TYPES.join(", ")})`,
  }),
  timestep_spacing: z.enum(TIMESTEP_SPACINGS, {
    error: (i) => `timestep_spacing ${JSON.stringify(i.input)} is unknown (expected one of ${TIMESTEP_SPACINGS.join(", ")})`,
  }),
  steps_offset: z.number().int().nonnegative(),
  clip_sample: bool,
  clip_sample_range: positiveNumber,
  set_alpha_to_one: bool,
  thresholding: bool,
  dynamic_thresholding_ratio: z.number().gt(0).lte(1),
  sample_max_value: positiveNumber,
  use_karras_sigmas: bool.nullable(),
  use_exponential_sigmas: bool.nullable(),
  use_beta_sigmas: bool.nullable(),
  use_lu_lambdas: bool.nullable(),
  rescale_betas_zero_snr: bool,
  final_sigmas_type: z.enum(["zero", "sigma_min"]).nullable(),
  variance_type: z
    .enum(["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"])
    .nullable(),
  /** DDIM's η (a `step` argument in diffusers; a config key here so pipelines can set it). */
  eta: z.number().finite().min(0),
  // PNDM
  skip_prk_steps: bool,
  // DPM-Solver / UniPC / DEIS
  solver_order: z.number().int().min(1).max(3),
  solver_type: z.string(),
  algorithm_type: z.string(),
  lower_order_final: bool,
  euler_at_final: bool,
  lambda_min_clipped: z.union([z.number(), z.literal(-Infinity)]),
  predict_x0: bool,
  solver_p: z.unknown(),
  disable_corrector: z.array(z.number().int()),
  // LCM
  original_inference_steps: z.number().int().positive(),
  timestep_scaling: positiveNumber,
  // Euler family
  interpolation_type: z.enum(["linear", "log_linear"]),
  timestep_type: z.enum(["discrete", "continuous"]),
  sigma_min: z.number().positive().nullable(),
  sigma_max: z.number().positive().nullable(),
  // Flow-matching keys some configs carry (unsupported here; accepted so such configs parse)
  use_flow_sigmas: bool.nullable(),
  flow_shift: z.number().nullable(),
  shift: z.number().nullable(),
  // Resolution-dependent shifting of flow-matching schedules (current diffusers writes these keys
  // into DPM-Solver++ and UniPC configs with their defaults; only the defaults are implemented).
  use_dynamic_shifting: bool,
  time_shift_type: z.enum(["exponential", "linear"], {
    error: (i) => `time_shift_type ${JSON.stringify(i.input)} is unknown (expected "exponential" or "linear")`,
  }),
  shift_terminal: z.number().finite().nullable(),
} as const;

export type KnownKey = keyof typeof KNOWN;
export const KNOWN_KEYS = Object.keys(KNOWN) as KnownKey[];

/** A validated config: diffusers keys, values as in `scheduler_config.json`. */
export type SchedulerConfig = { [K in KnownKey]?: z.infer<(typeof KNOWN)[K]> } & Record<string, unknown>;

/** A config with every default of one scheduler filled in. */
export interface ResolvedSchedulerConfig extends Readonly<Record<string, unknown>> {
  readonly num_train_timesteps: number;
  readonly beta_start: number;
  readonly beta_end: number;
  readonly beta_schedule: (typeof BETA_SCHEDULES)[number];
  readonly trained_betas: readonly number[] | null;
  readonly prediction_type: (typeof PREDICTION_TYPES)[number];
  readonly timestep_spacing: (typeof TIMESTEP_SPACINGS)[number];
  readonly steps_offset: number;
  readonly rescale_betas_zero_snr: boolean;
}

/** A scheduler's resolved config: the shared keys keep their full types, its own keys come from its defaults. */
export type ConfigWith<D> = ResolvedSchedulerConfig & Omit<D, SharedKey>;
export type SharedKey =
  | "num_train_timesteps"
  | "beta_start"
  | "beta_end"
  | "beta_schedule"
  | "trained_betas"
  | "prediction_type"
  | "timestep_spacing"
  | "steps_offset"
  | "rescale_betas_zero_snr";

/** Error for a bad config or argument; `key` names the config key (or argument) at fault. */
export class SchedulerConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message.startsWith(key) ? message : `${key}: ${message}`);
    this.name = "SchedulerConfigError";
  }
}

/** The shared schema: known keys typed, `_` metadata allowed, anything else rejected by name. */
export const schedulerConfigSchema = z
  .looseObject(Object.fromEntries(KNOWN_KEYS.map((k) => [k, KNOWN[k].optional()])) as { [K in KnownKey]: z.ZodOptional<(typeof KNOWN)[K]> })
  .superRefine((cfg, ctx) => {
    for (const key of Object.keys(cfg)) {
      if (key.startsWith("_") || key in KNOWN) continue;
      ctx.addIssue({
        code: "custom",
        path: [key],
        message: `${key} is not a config key of any diffusers scheduler diffgraph knows (check the spelling; metadata keys start with "_")`,
      });
    }
    const { beta_start: start, beta_end: end, trained_betas: trained, num_train_timesteps: T } = cfg;
    if (start !== undefined && end !== undefined && end < start) {
      ctx.addIssue({ code: "custom", path: ["beta_end"], message: `beta_end (${end}) must be ≥ beta_start (${start})` });
    }
    const offset = cfg.steps_offset;
    if (offset !== undefined && T !== undefined && Number.isInteger(T) && T > 0 && offset >= T) {
      // "leading" spacing adds it to every timestep; even one step would land past the last one.
      ctx.addIssue({
        code: "custom",
        path: ["steps_offset"],
        message: `steps_offset (${offset}) is past the schedule: training timesteps run 0..${T - 1}`,
      });
    }
    if (trained && T !== undefined && trained.length !== T) {
      ctx.addIssue({
        code: "custom",
        path: ["trained_betas"],
        message: `trained_betas has ${trained.length} values but num_train_timesteps is ${T}`,
      });
    }
  });

/** Parse a raw config (e.g. a `scheduler_config.json` object), throwing an error that names the key. */
export function parseSchedulerConfig(raw: unknown): SchedulerConfig {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new SchedulerConfigError("config", "config: a scheduler config must be a JSON object");
  }
  const result = schedulerConfigSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.map(String).join(".") || "config";
    const more = result.error.issues.length > 1 ? ` (and ${result.error.issues.length - 1} more)` : "";
    throw new SchedulerConfigError(key, `${issue.message.startsWith(key) ? issue.message : `${key}: ${issue.message}`}${more}`);
  }
  return result.data as SchedulerConfig;
}

/**
 * Merge a scheduler's defaults under a config and freeze it. `trained_betas`, when given, makes the
 * schedule keys beside it irrelevant but they are kept as written.
 */
export function resolveSchedulerConfig<D extends Record<string, unknown>>(
  defaults: D,
  raw: unknown,
  overrides: Record<string, unknown> = {},
): ResolvedSchedulerConfig & D {
  const parsed = parseSchedulerConfig({ ...(raw as object), ...overrides });
  const merged: Record<string, unknown> = { ...defaults };
  for (const [k, v] of Object.entries(parsed)) if (v !== undefined) merged[k] = v;
  // Validate the merged result too: a default beta_start can exceed a given beta_end.
  parseSchedulerConfig(merged);
  if (Array.isArray(merged.trained_betas)) merged.trained_betas = Object.freeze([...(merged.trained_betas as number[])]);
  return Object.freeze(merged) as ResolvedSchedulerConfig & D;
}

/** Common diffusers defaults, shared by most schedulers (each scheduler spreads and overrides). */
export const BASE_DEFAULTS = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
} as const;

/**
 * Reject values a scheduler would have to honour but this implementation does not (rather than
 * silently sampling something else). `supported` maps key → allowed values.
 */
export function requireSupported(
  scheduler: string,
  cfg: Readonly<Record<string, unknown>>,
  supported: Record<string, readonly unknown[]>,
): void {
  for (const [key, allowed] of Object.entries(supported)) {
    const value = cfg[key];
    if (value === undefined) continue;
    if (!allowed.includes(value as never)) {
      throw new SchedulerConfigError(
        key,
        `${key} (${JSON.stringify(value)}) is not supported by the ${scheduler} scheduler (supported: ${allowed.map((a) => JSON.stringify(a)).join(", ")})`,
      );
    }
  }
}
