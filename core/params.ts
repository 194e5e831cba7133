/**
 * Per-run generation parameters and their documented bounds. The CLI, the API and `Pipeline.run`
 * all validate through this one schema, so a bound is stated once.
 */
import { z } from "zod";
import type { Tensor } from "./tensor.ts";

export const LIMITS = Object.freeze({
  promptChars: 1000,
  steps: { min: 1, max: 1000 },
  guidanceScale: { min: 0, max: 50 },
  batchSize: { min: 1, max: 16 },
  size: { min: 8, max: 2048, multipleOf: 8 },
  seed: { min: 0, max: Number.MAX_SAFE_INTEGER },
});

const size = z.number().int().min(LIMITS.size.min).max(LIMITS.size.max).multipleOf(LIMITS.size.multipleOf);

/**
 * A generation parameter, declared once: its schema (type and bounds), its description, its GraphQL
 * scalar (input; `output` when a stored value can exceed it) and its CLI flag. The GraphQL input,
 * the stored job parameters, the pipeline defaults type and the CLI flags are all derived from
 * `PARAMS`, so a new parameter is one entry here.
 */
export interface ParamSpec {
  readonly schema: z.ZodType;
  readonly description: string;
  readonly graphql: "String" | "Int" | "Float";
  /** GraphQL scalar of the stored value, when it differs (a seed may exceed GraphQL's 32-bit Int). */
  readonly output?: "Float";
  /** `--flag` of `bun run generate`. */
  readonly flag: string;
}

function spec<S extends z.ZodType>(schema: S, rest: Omit<ParamSpec, "schema">): ParamSpec & { readonly schema: S } {
  return { schema, ...rest };
}

export const PARAMS = {
  prompt: spec(z.string().max(LIMITS.promptChars), { graphql: "String", flag: "prompt", description: `Text prompt (≤ ${LIMITS.promptChars} characters).` }),
  negativePrompt: spec(z.string().max(LIMITS.promptChars).default(""), { graphql: "String", flag: "negative", description: "What to steer away from." }),
  steps: spec(z.number().int().min(LIMITS.steps.min).max(LIMITS.steps.max), { graphql: "Int", flag: "steps", description: `Denoising steps (${LIMITS.steps.min}–${LIMITS.steps.max}).` }),
  guidanceScale: spec(z.number().min(LIMITS.guidanceScale.min).max(LIMITS.guidanceScale.max), {
    graphql: "Float",
    flag: "guidance",
    description: `Classifier-free guidance scale (${LIMITS.guidanceScale.min}–${LIMITS.guidanceScale.max}; 1 or less: no unconditional pass).`,
  }),
  seed: spec(z.number().int().min(LIMITS.seed.min).max(LIMITS.seed.max), { graphql: "Int", output: "Float", flag: "seed", description: "Random seed (≥ 0); image k of a batch uses seed + k." }),
  batchSize: spec(z.number().int().min(LIMITS.batchSize.min).max(LIMITS.batchSize.max), { graphql: "Int", flag: "batch", description: `Images per run (${LIMITS.batchSize.min}–${LIMITS.batchSize.max}).` }),
  height: spec(size, { graphql: "Int", flag: "height", description: `Height in pixels (${LIMITS.size.min}–${LIMITS.size.max}, a multiple of ${LIMITS.size.multipleOf}, and what the model takes).` }),
  width: spec(size, { graphql: "Int", flag: "width", description: `Width in pixels (${LIMITS.size.min}–${LIMITS.size.max}, a multiple of ${LIMITS.size.multipleOf}, and what the model takes).` }),
  strength: spec(z.number().gt(0).max(1), { graphql: "Float", flag: "strength", description: "img2img: how much of the schedule runs over the source image (0 < strength ≤ 1; 1 ignores it)." }),
  scheduler: spec(z.string().optional(), {
    graphql: "String",
    flag: "scheduler",
    description: "Scheduler plugin to use instead of the pipeline's, reusing its config (diffusers from_config).",
  }),
} as const;

export type ParamName = keyof typeof PARAMS;
export const PARAM_NAMES = Object.keys(PARAMS) as ParamName[];

type Shape = { [K in ParamName]: (typeof PARAMS)[K]["schema"] };

/** Scalars a run may set; a pipeline's `defaults` fills what the caller leaves out. */
export const ParamsSchema = z.object(Object.fromEntries(PARAM_NAMES.map((k) => [k, PARAMS[k].schema])) as Shape).strict();

export type ResolvedParams = z.output<typeof ParamsSchema>;
export type ParamDefaults = Partial<Omit<ResolvedParams, "prompt">>;

export const BUILTIN_DEFAULTS: Readonly<Omit<ResolvedParams, "prompt" | "height" | "width">> = Object.freeze({
  negativePrompt: "",
  steps: 20,
  guidanceScale: 7.5,
  seed: 0,
  batchSize: 1,
  strength: 0.8,
});

export interface GenerationInput extends Partial<Omit<ResolvedParams, "prompt">> {
  prompt: string;
  /** img2img source, RGB in [0, 1], [1, 3, H, W]. */
  image?: Tensor;
  /** Inpainting: which pixels of `image` to repaint (≥ 0.5) and which to keep, [1, 1 or 3, H, W] in [0, 1]. */
  mask?: Tensor;
}

/** Zod issues → one message naming each bad field: "steps: Too big: expected number to be <=1000". */
export function formatIssues(error: z.ZodError, prefix = ""): string {
  return error.issues
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter(Boolean).join(".");
      return `${path || "(root)"}: ${i.message}`;
    })
    .join("; ");
}

/** Image sizes a model takes: multiples of `multipleOf`, or exactly `fixed` when its input shape is static. */
export interface SizeRule {
  readonly multipleOf: number;
  readonly fixed?: { readonly height: number; readonly width: number };
}

/** Why a size does not fit a rule (naming the field and the allowed values), or null when it fits. */
export function sizeProblem(rule: SizeRule, height: number, width: number): { field: "height" | "width"; message: string } | null {
  if (rule.fixed) {
    if (height !== rule.fixed.height) return { field: "height", message: `this pipeline's model takes only ${rule.fixed.width}×${rule.fixed.height} images; height must be ${rule.fixed.height}, got ${height}` };
    if (width !== rule.fixed.width) return { field: "width", message: `this pipeline's model takes only ${rule.fixed.width}×${rule.fixed.height} images; width must be ${rule.fixed.width}, got ${width}` };
    return null;
  }
  if (height % rule.multipleOf) return { field: "height", message: `must be a multiple of ${rule.multipleOf} for this pipeline's model, got ${height}` };
  if (width % rule.multipleOf) return { field: "width", message: `must be a multiple of ${rule.multipleOf} for this pipeline's model, got ${width}` };
  return null;
}

/** A run's parameters do not fit the schema; the message names each bad field. */
export class ParamsError extends Error {
  constructor(
    message: string,
    /** The first field at fault ("steps", "height"). */
    readonly field?: string,
  ) {
    super(message);
    this.name = "ParamsError";
  }
}

/** A graph's defaults under a run's input, validated: what the run will use. */
export function resolveParams(defaults: ParamDefaults, input: GenerationInput): ResolvedParams {
  const { image: _image, mask: _mask, ...scalars } = input;
  const merged = { ...defaults, ...Object.fromEntries(Object.entries(scalars).filter(([, v]) => v !== undefined && v !== null)) };
  const r = ParamsSchema.safeParse(merged);
  if (!r.success) throw new ParamsError(formatIssues(r.error), r.error.issues[0]?.path.map(String).join("."));
  return r.data;
}
