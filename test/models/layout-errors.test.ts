/** What a user sees when a folder is almost one of the supported layouts (the README's "not supported" column). */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { memorySource } from "../../core/model-source.ts";
import { pipelineDocFromModelFolder } from "../../core/model-folder.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { testRuntime } from "../helpers.ts";

function files(dir: string, edit: (files: Record<string, Uint8Array | string>) => void = () => {}) {
  const out: Record<string, Uint8Array | string> = {};
  const walk = (d: string) => {
    for (const n of readdirSync(d)) {
      const f = join(d, n);
      if (statSync(f).isDirectory()) walk(f);
      else if (!n.startsWith("manifest")) out[relative(dir, f)] = new Uint8Array(readFileSync(f));
    }
  };
  walk(dir);
  edit(out);
  return memorySource(out, "models/x");
}
const json = (f: Record<string, Uint8Array | string>, path: string, change: (j: any) => void) => {
  const j = JSON.parse(new TextDecoder().decode(f[path] as Uint8Array));
  change(j);
  f[path] = JSON.stringify(j);
};
async function open(models: ReturnType<typeof memorySource>) {
  const registry = builtinRegistry();
  const doc = await pipelineDocFromModelFolder(models, "x", registry);
  return Pipeline.load(doc, { registry, onnx: testRuntime(), models });
}

describe("near-miss layouts fail naming the file and what is missing", () => {
  test("SDXL without text_encoder_2/model.onnx", async () => {
    await expect(open(files("models/tiny-sdxl", (f) => delete f["text_encoder_2/model.onnx"]))).rejects.toThrow("models/x/text_encoder_2/model.onnx: file not found (required by the SDXL diffusers ONNX layout)");
  });
  test("an SDXL text tower exported without hidden states", async () => {
    // tiny-sd's text encoder has only last_hidden_state and pooler_output
    const sd = new Uint8Array(readFileSync("models/tiny-sd/text_encoder/model.onnx"));
    await expect(open(files("models/tiny-sdxl", (f) => (f["text_encoder/model.onnx"] = sd)))).rejects.toThrow(
      "models/x/text_encoder/model.onnx: has no hidden_states.N outputs to take the penultimate layer from (outputs: last_hidden_state, pooler_output); export it with hidden states (Optimum does for SDXL)",
    );
  });
  test("the SDXL refiner (no text_encoder)", async () => {
    await expect(open(files("models/tiny-sdxl", (f) => json(f, "model_index.json", (j) => (j.text_encoder = [null, null]))))).rejects.toThrow(
      "models/x/model_index.json: text_encoder: missing; a diffusers ONNX pipeline lists text_encoder, tokenizer, unet, scheduler and vae_decoder (or vae)",
    );
  });
  test("SD 3 / Flux (a transformer instead of a unet)", async () => {
    await expect(open(files("models/tiny-sd", (f) => json(f, "model_index.json", (j) => { delete j.unet; j.transformer = ["diffusers", "SD3Transformer2DModel"]; })))).rejects.toThrow("models/x/model_index.json: unet: missing");
  });
  test("an inpainting folder without its VAE encoder", async () => {
    await expect(open(files("models/tiny-sd-inpaint", (f) => delete f["vae_encoder/model.onnx"]))).rejects.toThrow("models/x/vae_encoder/model.onnx: file not found (an inpainting UNet needs the VAE encoder for the masked image's latents)");
  });
  test("a pipeline file that does not wire SDXL's pooled embedding", async () => {
    const registry = builtinRegistry();
    const models = files("models/tiny-sdxl");
    const doc = (await pipelineDocFromModelFolder(models, "x", registry)) as any;
    delete doc.nodes.denoise.inputs.pooled;
    delete doc.nodes.denoise.inputs.uncondPooled;
    const p = await Pipeline.load(doc, { registry, onnx: testRuntime(), models });
    await expect(p.run({ prompt: "x", steps: 1 })).rejects.toThrow("denoise: this UNet takes pooled text embeddings (SDXL's text_embeds); wire the text encoder's pooled output to the denoise node's pooled input");
  });
});
