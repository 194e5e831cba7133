/**
 * A model folder in the diffusers ONNX layout (model_index.json, text_encoder/, tokenizer/, unet/,
 * vae_decoder/, optional vae_encoder/, scheduler/scheduler_config.json) becomes a pipeline document,
 * so a real Stable Diffusion ONNX export runs with no pipeline file at all.
 *
 * Every JSON file of the folder is checked when it is read (`readModelJson` with a schema): a bad
 * one is an error naming the file and the key, not a default silently used in its place.
 */
import { z } from "zod";
import { readManifest, verifiedSource } from "./manifest.ts";
import { ModelFileError, readModelJson, type ModelSource } from "./model-source.ts";
import type { PipelineDoc } from "./pipeline-config.ts";
import type { PluginRegistry } from "./registry.ts";

/** A `[library, class]` pair as diffusers writes it (`["diffusers", "OnnxRuntimeModel"]`, or `[null, null]` for none). */
const ComponentEntry = z.tuple([z.string().nullable(), z.string().nullable()], {
  error: () => `must be a [library, class] pair such as ["diffusers", "OnnxRuntimeModel"]`,
});

/** Components a diffusers pipeline index may list; their entries must be pairs. */
export const KNOWN_COMPONENTS = [
  "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "transformer", "vae", "vae_decoder", "vae_encoder",
  "scheduler", "safety_checker", "feature_extractor", "image_encoder",
] as const;

export const ModelIndexSchema = z
  .looseObject({
    _class_name: z.string({ error: (i) => (i.input === undefined ? "missing (the diffusers pipeline class)" : "must be a string") }).min(1),
    _diffusers_version: z.string().optional(),
    ...Object.fromEntries(KNOWN_COMPONENTS.map((k) => [k, ComponentEntry.nullable().optional()])),
  })
  .superRefine((index, ctx) => {
    for (const [key, value] of Object.entries(index)) {
      if (key.startsWith("_") || (KNOWN_COMPONENTS as readonly string[]).includes(key)) continue;
      // Other keys are pipeline options (`requires_safety_checker: false`) or components of other pipelines.
      const ok = value === null || ["boolean", "number", "string"].includes(typeof value) || ComponentEntry.safeParse(value).success;
      if (!ok) ctx.addIssue({ code: "custom", path: [key], message: `${key}: must be a [library, class] pair or a scalar option, got ${JSON.stringify(value).slice(0, 60)}` });
    }
  });

const positiveInt = z.number().int().positive();

/**
 * The keys of a component's `config.json` that diffgraph reads, typed; other keys are kept as
 * documentation. A wrong type is an error naming the key instead of a silent fallback.
 */
export const ComponentConfigSchema = z.looseObject({
  _class_name: z.string().optional(),
  sample_size: positiveInt.optional(),
  latent_sample_size: positiveInt.optional(),
  in_channels: positiveInt.optional(),
  out_channels: positiveInt.optional(),
  latent_channels: positiveInt.optional(),
  scaling_factor: z.number().finite().positive().optional(),
  block_out_channels: z.array(positiveInt).min(1).optional(),
  vocab_size: positiveInt.optional(),
  max_position_embeddings: positiveInt.optional(),
  time_cond_proj_dim: positiveInt.nullable().optional(),
});
export type ComponentConfig = z.output<typeof ComponentConfigSchema>;

/** A component's config.json, checked; `{}` when the folder has none (SD 1.x ONNX exports ship none). */
export async function readComponentConfig(models: ModelSource, path: string): Promise<ComponentConfig> {
  return (await models.exists(path)) ? readModelJson(models, path, ComponentConfigSchema) : {};
}

const opened = new WeakSet<ModelSource>();

/**
 * The model folder as pipelines should read it: checked against `manifest.sha256.json` when it has
 * one, with `model_index.json` (when present) validated. Idempotent: an opened source is returned
 * as is.
 */
export async function openModelFolder(source: ModelSource): Promise<ModelSource> {
  if (opened.has(source)) return source;
  const manifest = await readManifest(source);
  const models = manifest ? verifiedSource(source, manifest) : source;
  if (await models.exists("model_index.json")) await readModelJson(models, "model_index.json", ModelIndexSchema);
  opened.add(models);
  return models;
}

/** Components a folder opened without a pipeline file must list in model_index.json. */
const REQUIRED_COMPONENTS = ["text_encoder", "tokenizer", "unet", "scheduler"] as const;

/**
 * The pipeline a diffusers/Optimum ONNX folder describes. One document covers the layouts people
 * export: Stable Diffusion 1.x/2.x (and SD-Turbo, a fixed-shape export included), SDXL (a second
 * text encoder and tokenizer; Optimum lists `vae` where the legacy exporter lists `vae_decoder`),
 * LCM (a UNet with `timestep_cond`; 4 steps by default), and inpainting UNets (9 input channels).
 * With a VAE encoder, a run with `image` is img2img and one with `image` + `mask` is inpainting.
 */
export async function pipelineDocFromModelFolder(models: ModelSource, name: string, registry: PluginRegistry): Promise<PipelineDoc> {
  models = await openModelFolder(models);
  if (!(await models.exists("model_index.json"))) throw new ModelFileError(`${models.root}/model_index.json`, "file not found (required by the diffusers ONNX layout)");
  const index = await readModelJson(models, "model_index.json", ModelIndexSchema);
  const listed = (c: string) => {
    const entry = index[c] as [string | null, string | null] | null | undefined;
    return !!entry && entry[1] !== null;
  };
  for (const c of REQUIRED_COMPONENTS) {
    if (!listed(c)) throw new ModelFileError(`${models.root}/model_index.json`, `${c}: missing; a diffusers ONNX pipeline lists ${REQUIRED_COMPONENTS.join(", ")} and vae_decoder (or vae)`);
  }
  if (!listed("vae_decoder") && !listed("vae")) throw new ModelFileError(`${models.root}/model_index.json`, "vae_decoder: missing (and no vae); a diffusers ONNX pipeline lists a VAE decoder");
  const sdxl = listed("text_encoder_2");
  const parts = ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", ...(sdxl ? ["text_encoder_2/model.onnx", "tokenizer_2/tokenizer.json"] : [])];
  for (const part of parts) {
    if (!(await models.exists(part))) throw new ModelFileError(`${models.root}/${part}`, `file not found (required by the ${sdxl ? "SDXL " : ""}diffusers ONNX layout)`);
  }
  const sched = await readModelJson(models, "scheduler/scheduler_config.json", z.looseObject({}));
  const cls = String(sched._class_name ?? "");
  const schedulers = registry.list("scheduler");
  const scheduler = schedulers.find((p) => p.className === cls)?.name;
  if (!scheduler) {
    const known = schedulers.map((p) => p.className).filter(Boolean);
    throw new ModelFileError(`${models.root}/scheduler/scheduler_config.json`, `_class_name "${cls}" is not a scheduler diffgraph knows (${known.join(", ")})`);
  }
  const unet = await readComponentConfig(models, "unet/config.json");
  const vae = await readComponentConfig(models, "vae_decoder/config.json");
  const pixels = vae.sample_size ?? (unet.sample_size !== undefined ? unet.sample_size * 8 : 512);
  const hasEncoder = await models.exists("vae_encoder/model.onnx");
  const hasProjection = await models.exists("preview/projection.json");
  // 9 input channels = latents + mask + masked-image latents (SD inpainting); the UNet plugin checks the model itself.
  const inpaint = unet.in_channels === 9 || /Inpaint/.test(index._class_name);
  if (inpaint && !hasEncoder) throw new ModelFileError(`${models.root}/vae_encoder/model.onnx`, "file not found (an inpainting UNet needs the VAE encoder for the masked image's latents)");
  // SDXL's negative prompt, when empty, is zeros rather than the encoding of "" (diffusers: force_zeros_for_empty_prompt, default true).
  const zeros = sdxl && index.force_zeros_for_empty_prompt !== false;
  const text = sdxl
    ? { hiddenStates: "penultimate", second: { model: "text_encoder_2/model.onnx", tokenizer: "tokenizer_2", hiddenStates: "penultimate", pooled: ["text_embeds"] } }
    : {};
  const lcm = cls === "LCMScheduler";
  return {
    name: name.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "model",
    description: `${index._class_name} from ${models.root}`,
    defaults: { height: pixels, width: pixels, ...(lcm ? { steps: 4, guidanceScale: 8.5 } : {}) },
    nodes: {
      prompt: { use: "clip-text", config: { ...text }, inputs: { text: "$prompt" } },
      negative: { use: "clip-text", config: { ...text, ...(zeros ? { zerosForEmpty: true } : {}) }, inputs: { text: "$negativePrompt" } },
      ...(hasEncoder ? { source: { use: "vae-encoder", config: {}, inputs: { images: "$image" } } } : {}),
      ...(inpaint
        ? {
            masked: { use: "masked-image", config: {}, inputs: { images: "$image", mask: "$mask" } },
            maskedSource: { use: "vae-encoder", config: {}, inputs: { images: "masked.images" } },
          }
        : {}),
      denoise: {
        use: "denoise",
        config: {
          scheduler: { use: scheduler, config: {}, configFile: "scheduler/scheduler_config.json" },
          noisePredictor: { use: "onnx-unet", config: inpaint ? { inpaint: true } : {} },
        },
        inputs: {
          cond: "prompt.embeddings",
          uncond: "negative.embeddings",
          ...(hasEncoder ? { init: "source.latents", mask: "$mask" } : {}),
          ...(sdxl ? { pooled: "prompt.pooled", uncondPooled: "negative.pooled" } : {}),
          ...(inpaint ? { maskedLatents: "maskedSource.latents" } : {}),
        },
      },
      decode: { use: "vae-decoder", config: {}, inputs: { latents: "denoise.latents" } },
    },
    output: "decode.images",
    // Without a fitted projection the preview is the VAE decoder itself (slower, never wrong).
    preview: hasProjection ? { use: "latent-preview", config: {}, source: "x0" } : { use: "vae-decoder", config: {}, source: "x0" },
  };
}
