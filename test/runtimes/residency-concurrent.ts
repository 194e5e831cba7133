/**
 * Two runs at once on one WebGPU UNet session, each with its own text states (no cross-run merging):
 * the resident buffers alternate between them, and each run must still get its solo latents.
 *   deno run -A test/runtimes/residency-concurrent.ts
 */
import { createDiffgraph } from "../../core/diffgraph.ts";
import { pipelineDocFromModelFolder } from "../../core/model-folder.ts";
import { Pipeline } from "../../core/pipeline.ts";
import type { Tensor } from "../../core/tensor.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const registry = builtinRegistry();
const dg = await createDiffgraph({ registry, executionProvider: "webgpu", log: () => {} });
const models = dg.adapter.fileSource("models/tiny-sdxl");
const doc = (await pipelineDocFromModelFolder(models, "tiny-sdxl", registry)) as unknown as { nodes: { denoise: { config: Record<string, unknown> } } };
doc.nodes.denoise.config.batching = false; // every run its own UNet calls, interleaved on one session
const p = await Pipeline.load(doc, { registry, onnx: dg.onnx, models });
const a = { prompt: "a photo of a red heart", steps: 6, seed: 1, guidanceScale: 5 };
const b = { prompt: "blue dog riding on mars", steps: 6, seed: 2, guidanceScale: 5 };
const lat = (r: { outputs: Record<string, Record<string, unknown>> }) => (r.outputs.denoise!.latents as Tensor).data;
const soloA = lat(await p.run(a) as never);
const soloB = lat(await p.run(b) as never);
const [ra, rb] = await Promise.all([p.run(a), p.run(b)]);
const diff = (x: Float32Array, y: Float32Array) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i]!)), 0);
const unet = await dg.onnx.load(models, "unet/model.onnx");
console.log(JSON.stringify({ a: diff(lat(ra as never), soloA), b: diff(lat(rb as never), soloB), apart: diff(soloA, soloB), residency: unet.residency }));
await dg.dispose();
