/**
 * A model with the right input names but the wrong ranks or dtypes for its slot (an export for
 * another purpose) fails when the plugin loads, naming the file — not on the first generation.
 * The models are minimal ONNX files declaring exactly those inputs (`test/onnx-bytes.ts`): the check
 * reads the file's own declarations, before any session exists.
 */
import { expect, test } from "bun:test";
import { memorySource } from "../../core/model-source.ts";
import { OnnxRuntime, type OrtModuleLike } from "../../core/onnx.ts";
import type { PluginContext } from "../../core/plugin.ts";
import onnxUnet from "../../plugins/noise-predictors/onnx-unet.ts";
import vaeDecoder from "../../plugins/decoders/vae-decoder.ts";
import { fakeSessionFor, onnxModelBytes, type IO } from "../onnx-bytes.ts";

/** A fake backend: each session declares what its file declares (`onnxModelBytes`). */
const fakeOrt: OrtModuleLike = {
  InferenceSession: { create: async (bytes) => fakeSessionFor(bytes as Uint8Array) },
  Tensor: class {} as never,
};

const UNET_OUT: IO[] = [["out_sample", "float32", ["b", 4, 8, 8]]];

const cases: { what: string; plugin: typeof onnxUnet | typeof vaeDecoder; path: string; inputs: IO[]; outputs: IO[]; error: RegExp }[] = [
  { what: "UNet sample of rank 3", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 64]], ["timestep", "float32", ["b"]], ["encoder_hidden_states", "float32", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "sample" has rank 3 \[b,4,64\], expected rank 4/ },
  { what: "UNet timestep of rank 2", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 8, 8]], ["timestep", "float32", ["b", 1]], ["encoder_hidden_states", "float32", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "timestep" has rank 2 \[b,1\], expected rank 0 or 1/ },
  { what: "UNet text embeddings of dtype int64", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 8, 8]], ["timestep", "float32", ["b"]], ["encoder_hidden_states", "int64", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "encoder_hidden_states" has dtype int64, expected float32 or float16/ },
  { what: "VAE decoder latents of rank 2", plugin: vaeDecoder, path: "vae_decoder/model.onnx", inputs: [["latent_sample", "float32", ["b", 256]]], outputs: [["sample", "float32", ["b", 3, 64, 64]]], error: /vae_decoder\/model\.onnx: input "latent_sample" has rank 2 \[b,256\], expected rank 4/ },
];

for (const c of cases) {
  test(`${c.what}: rejected at load, naming the file`, async () => {
    const models = memorySource({ [c.path]: onnxModelBytes(c.inputs, c.outputs) }, "m");
    const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => fakeOrt }, executionProvider: "cpu" });
    const ctx: PluginContext = { models, onnx, log: () => {} };
    await expect((async () => c.plugin.create(c.plugin.configSchema.parse({}) as never, ctx))()).rejects.toThrow(c.error);
  });
}
