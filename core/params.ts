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

/** Scalars a run may set; a pipeline's `defaults` fills what the caller leaves out. */
export const ParamsSchema = z
  .object({
    prompt: z.string().max(LIMITS.promptChars),
    negativePrompt: z.string().max(LIMITS.promptChars).default(""),
    steps: z.number().int().min(LIMITS.steps.min).max(LIMITS.steps.max),
    guidanceScale: z.number().min(LIMITS.guidanceScale.min).max(LIMITS.guidanceScale.max),
    seed: z.number().int().min(LIMITS.seed.min).max(LIMITS.seed.max),
    batchSize: z.number().int().min(LIMITS.batchSize.min).max(LIMITS.batchSize.max),
    height: size,
    width: size,
    /** img2img: how much of the schedule to run over the source image (1 = ignore it entirely). */
    strength: z.number().gt(0).max(1),
    /** Override the pipeline's scheduler by plugin name, reusing its config (diffusers from_config). */
    scheduler: z.string().optional(),
  })
  .strict();

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
