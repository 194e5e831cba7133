/**
 * A model folder in the diffusers ONNX layout (model_index.json, text_encoder/, tokenizer/, unet/,
 * vae_decoder/, optional vae_encoder/, scheduler/scheduler_config.json) becomes a pipeline document,
 * so a real Stable Diffusion ONNX export runs with no pipeline file at all.
 */
import { ModelFileError, readJson, type ModelSource } from "./model-source.ts";
import type { PipelineDoc } from "./pipeline-config.ts";
import type { PluginRegistry } from "./registry.ts";

export async function pipelineDocFromModelFolder(models: ModelSource, name: string, registry: PluginRegistry): Promise<PipelineDoc> {
  const index = await readJson<Record<string, unknown>>(models, "model_index.json");
  for (const part of ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]) {
    if (!(await models.exists(part))) throw new ModelFileError(`${models.root}/${part}`, "file not found (required by the diffusers ONNX layout)");
  }
  const sched = await readJson<Record<string, unknown>>(models, "scheduler/scheduler_config.json");
  const cls = String(sched._class_name ?? "");
  const schedulers = registry.list("scheduler");
  const scheduler = schedulers.find((p) => p.className === cls)?.name;
  if (!scheduler) {
    const known = schedulers.map((p) => p.className).filter(Boolean);
    throw new ModelFileError(`${models.root}/scheduler/scheduler_config.json`, `_class_name "${cls}" is not a scheduler diffgraph knows (${known.join(", ")})`);
  }
  const unet = (await models.exists("unet/config.json")) ? await readJson<Record<string, unknown>>(models, "unet/config.json") : {};
  const vae = (await models.exists("vae_decoder/config.json")) ? await readJson<Record<string, unknown>>(models, "vae_decoder/config.json") : {};
  const pixels =
    typeof vae.sample_size === "number" ? vae.sample_size : typeof unet.sample_size === "number" ? unet.sample_size * 8 : 512;
  const hasEncoder = await models.exists("vae_encoder/model.onnx");
  const hasProjection = await models.exists("preview/projection.json");
  return {
    name: name.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "model",
    description: `${String(index._class_name ?? "diffusers")} from ${models.root}`,
    defaults: { height: pixels, width: pixels },
    nodes: {
      prompt: { use: "clip-text", config: {}, inputs: { text: "$prompt" } },
      negative: { use: "clip-text", config: {}, inputs: { text: "$negativePrompt" } },
      ...(hasEncoder ? { source: { use: "vae-encoder", config: {}, inputs: { images: "$image" } } } : {}),
      denoise: {
        use: "denoise",
        config: {
          scheduler: { use: scheduler, config: {}, configFile: "scheduler/scheduler_config.json" },
          noisePredictor: { use: "onnx-unet", config: {} },
        },
        inputs: { cond: "prompt.embeddings", uncond: "negative.embeddings", ...(hasEncoder ? { init: "source.latents" } : {}) },
      },
      decode: { use: "vae-decoder", config: {}, inputs: { latents: "denoise.latents" } },
    },
    output: "decode.images",
    preview: hasProjection ? { use: "latent-preview", config: {}, source: "x0" } : { use: "vae-decoder", config: {}, source: "x0" },
  };
}
