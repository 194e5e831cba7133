/**
 * onnxruntime's free-dimension overrides (`freeDimensions` on the ONNX plugins): an export with
 * symbolic axes (tiny-lcm: batch_size, num_channels, height, width, sequence_length, as Optimum names
 * them) pinned to one shape, as the onnxruntime-web WebGPU demo pins SD-Turbo. The pinned axes are
 * reported at their size, so the pipeline takes only that image size and runs a batch (and the
 * guidance rows) in slices; the images equal the unpinned model's.
 */
import { describe, expect, test } from "bun:test";
import { fileSource } from "../../core/adapters/node.ts";
import { pipelineDocFromModelFolder } from "../../core/model-folder.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { maxAbsDiff, testRuntime } from "../helpers.ts";

async function lcm(provider: "cpu" | "wasm", pin: boolean) {
  const registry = builtinRegistry();
  const models = fileSource("models/tiny-lcm");
  const doc = (await pipelineDocFromModelFolder(models, "tiny-lcm", registry)) as any;
  if (pin) {
    doc.nodes.denoise.config.noisePredictor.config.freeDimensions = { batch_size: 1, num_channels: 4, height: 8, width: 8 };
    for (const n of ["prompt", "negative"]) doc.nodes[n].config.freeDimensions = { batch_size: 1, sequence_length: 77 };
    doc.nodes.decode.config.freeDimensions = { batch_size: 1, num_channels_latent: 4, height_latent: 8, width_latent: 8 };
    doc.preview.config.freeDimensions = doc.nodes.decode.config.freeDimensions;
  }
  delete doc.defaults.height;
  delete doc.defaults.width;
  doc.defaults = { ...doc.defaults, height: 512, width: 512 }; // what a folder without a size in its configs gets
  return Pipeline.load(doc, { registry, onnx: testRuntime(provider), models });
}

describe("free-dimension overrides (tiny-lcm pinned to batch 1, 8×8 latents)", () => {
  for (const provider of ["cpu", "wasm"] as const) {
    test(`${provider}: the pinned size becomes the default and the only size; a batch of 2 runs in slices; same images`, async () => {
      const pinned = await lcm(provider, true);
      const unet = [...pinned.nodes.values()].find((n) => n.name === "denoise")!.instance;
      expect(unet.sizes).toEqual({ multipleOf: 8, fixed: { height: 64, width: 64 } });
      expect(pinned.defaults).toMatchObject({ height: 64, width: 64 });
      const input = { prompt: "a green cat", seed: 4, batchSize: 2 };
      const a = await pinned.run(input);
      const free = await lcm(provider, false);
      const b = await free.run({ ...input, height: 64, width: 64 });
      expect(a.images.dims).toEqual([2, 3, 64, 64]);
      expect(maxAbsDiff(a.images.data, b.images.data)).toBeLessThan(1e-5);
      await expect(pinned.run({ ...input, height: 128, width: 128 })).rejects.toThrow(/takes only 64×64/);
    });
  }

  test("a bad size is an error naming the axis", async () => {
    const rt = testRuntime();
    await expect(rt.load(fileSource("models/tiny-lcm"), "unet/model.onnx", { freeDimensions: { height: 0 } })).rejects.toThrow("freeDimensions.height: must be a positive whole number, got 0");
  });
});
