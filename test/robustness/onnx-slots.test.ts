/**
 * A model with the right input names but the wrong ranks or dtypes for its slot (an export for
 * another purpose) fails when the plugin loads, naming the file — not on the first generation.
 * The models are fakes (onnxruntime's session API, metadata given), so each rank is exact.
 */
import { expect, test } from "bun:test";
import { memorySource } from "../../core/model-source.ts";
import { OnnxRuntime, type OrtModuleLike, type OrtValueMetadata } from "../../core/onnx.ts";
import type { PluginContext } from "../../core/plugin.ts";
import onnxUnet from "../../plugins/noise-predictors/onnx-unet.ts";
import vaeDecoder from "../../plugins/decoders/vae-decoder.ts";

type IO = readonly [name: string, type: string, shape: readonly (number | string)[]];

/** A fake backend whose model n (the file's second byte) has the given inputs and outputs. */
function fakeOrt(models: readonly { inputs: readonly IO[]; outputs: readonly IO[] }[]): OrtModuleLike {
  const meta = (ios: readonly IO[]): OrtValueMetadata[] => ios.map(([name, type, shape]) => ({ name, isTensor: true, type, shape }));
  return {
    InferenceSession: {
      async create(bytes: Uint8Array) {
        const m = models[bytes[1]!]!;
        return { inputNames: m.inputs.map((i) => i[0]), outputNames: m.outputs.map((o) => o[0]), inputMetadata: meta(m.inputs), outputMetadata: meta(m.outputs), run: async () => ({}), release: async () => {} };
      },
    },
    Tensor: class {} as never,
  };
}

const file = (n: number) => Uint8Array.from([0x08, n, ...new Array(30).fill(1)]);
const UNET_OUT: IO[] = [["out_sample", "float32", ["b", 4, 8, 8]]];

const cases: { what: string; plugin: typeof onnxUnet | typeof vaeDecoder; path: string; inputs: IO[]; outputs: IO[]; error: RegExp }[] = [
  { what: "UNet sample of rank 3", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 64]], ["timestep", "float32", ["b"]], ["encoder_hidden_states", "float32", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "sample" has rank 3 \[b,4,64\], expected rank 4/ },
  { what: "UNet timestep of rank 2", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 8, 8]], ["timestep", "float32", ["b", 1]], ["encoder_hidden_states", "float32", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "timestep" has rank 2 \[b,1\], expected rank 0 or 1/ },
  { what: "UNet text embeddings of dtype int64", plugin: onnxUnet, path: "unet/model.onnx", inputs: [["sample", "float32", ["b", 4, 8, 8]], ["timestep", "float32", ["b"]], ["encoder_hidden_states", "int64", ["b", 77, 32]]], outputs: UNET_OUT, error: /unet\/model\.onnx: input "encoder_hidden_states" has dtype int64, expected float32 or float16/ },
  { what: "VAE decoder latents of rank 2", plugin: vaeDecoder, path: "vae_decoder/model.onnx", inputs: [["latent_sample", "float32", ["b", 256]]], outputs: [["sample", "float32", ["b", 3, 64, 64]]], error: /vae_decoder\/model\.onnx: input "latent_sample" has rank 2 \[b,256\], expected rank 4/ },
];

for (const [i, c] of cases.entries()) {
  test(`${c.what}: rejected at load, naming the file`, async () => {
    const models = memorySource({ [c.path]: file(i) }, "m");
    const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => fakeOrt(cases) }, executionProvider: "cpu" });
    const ctx: PluginContext = { models, onnx, log: () => {} };
    await expect((async () => c.plugin.create(c.plugin.configSchema.parse({}) as never, ctx))()).rejects.toThrow(c.error);
  });
}
