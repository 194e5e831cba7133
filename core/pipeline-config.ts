/**
 * The pipeline document: a JSON DAG of nodes, each naming a plugin (or a core node such as
 * `denoise`) with its config, and wiring its inputs to other nodes' outputs ("encode.embeddings")
 * or to run inputs ("$prompt", "$negativePrompt", "$image").
 *
 * ```json
 * { "name": "tiny-sd", "model": "../models/tiny-sd",
 *   "nodes": {
 *     "prompt":   { "use": "clip-text", "inputs": { "text": "$prompt" } },
 *     "negative": { "use": "clip-text", "inputs": { "text": "$negativePrompt" } },
 *     "denoise":  { "use": "denoise", "inputs": { "cond": "prompt.embeddings", "uncond": "negative.embeddings" },
 *                   "config": { "scheduler": { "use": "pndm", "configFile": "scheduler/scheduler_config.json" },
 *                               "noisePredictor": { "use": "onnx-unet" } } },
 *     "decode":   { "use": "vae-decoder", "inputs": { "latents": "denoise.latents" } } },
 *   "output": "decode.images",
 *   "preview": { "use": "latent-preview", "source": "x0" } }
 * ```
 */
import { z } from "zod";
import { ParamsSchema } from "./params.ts";

export class PipelineConfigError extends Error {
  constructor(
    /** Dotted path of the offending field: "nodes.denoise.config.scheduler.use". */
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = "PipelineConfigError";
  }
}

const NAME = /^[a-z0-9][a-z0-9-]*$/;
const NODE_NAME = /^[A-Za-z_][A-Za-z0-9_-]*$/;

export const ComponentRefSchema = z
  .object({
    /** A registered plugin name, or a module path relative to the pipeline file. */
    use: z.string().min(1),
    config: z.record(z.string(), z.unknown()).default({}),
    /** A JSON file in the model folder whose keys are merged under `config` (e.g. scheduler_config.json). */
    configFile: z.string().optional(),
  })
  .strict();
export type ComponentRef = z.output<typeof ComponentRefSchema>;

export const NodeSchema = ComponentRefSchema.extend({
  inputs: z.record(z.string(), z.string()).default({}),
  /**
   * This node's own model folder, relative to the pipeline file (the same rule as the document's
   * `model`); its plugin files and `configFile` resolve inside it. For a cascade whose later stage
   * (a super-resolution model) ships in a folder of its own. Default: the document's `model`.
   */
  model: z.string().min(1).optional(),
}).strict();
export type NodeConfig = z.output<typeof NodeSchema>;

export const PipelineDocSchema = z
  .object({
    $schema: z.string().optional(),
    name: z.string().regex(NAME, "must be lowercase letters, digits and dashes"),
    description: z.string().default(""),
    /** Model folder (diffusers ONNX layout) relative to the pipeline file; plugin file paths resolve inside it. */
    model: z.string().optional(),
    defaults: ParamsSchema.omit({ prompt: true }).partial().default({}),
    nodes: z.record(z.string().regex(NODE_NAME, "node names are identifiers"), NodeSchema),
    /** The node output that holds the final images, "node.port". */
    output: z.string(),
    preview: ComponentRefSchema.extend({ source: z.enum(["x0", "latents"]).default("x0") }).strict().optional(),
  })
  .strict();
export type PipelineDoc = z.output<typeof PipelineDocSchema>;

/** Run inputs a node may read with "$name", and the port type each carries. */
export const RUN_INPUTS = { prompt: "text", negativePrompt: "text", image: "images", mask: "images" } as const;

export function parsePipelineDoc(json: unknown): PipelineDoc {
  const r = PipelineDocSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new PipelineConfigError(i.path.map(String).join(".") || "(root)", i.message);
  }
  return r.data;
}

/** "node.port" → [node, port]; "$name" → ["$", name]. */
export function parseRef(ref: string, at: string): [string, string] {
  if (ref.startsWith("$")) return ["$", ref.slice(1)];
  const m = /^([A-Za-z_][A-Za-z0-9_-]*)\.([A-Za-z_][A-Za-z0-9_]*)$/.exec(ref);
  if (!m) throw new PipelineConfigError(at, `"${ref}" is not a reference: write "node.output" or "$runInput"`);
  return [m[1]!, m[2]!];
}
