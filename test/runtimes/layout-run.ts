/**
 * One issue-16 fixture folder end to end on whatever runtime runs this file, printing one JSON line
 * (the image and the final latents) for `layouts-runtimes.test.ts` to compare across runtimes.
 *   deno run -A test/runtimes/layout-run.ts webgpu models/tiny-sdxl
 */
import { createDiffgraph } from "../../core/diffgraph.ts";
import type { ExecutionProvider } from "../../core/onnx.ts";
import type { Tensor } from "../../core/tensor.ts";
import { detectHost } from "../../core/runtime.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const g = globalThis as { Deno?: { args: string[] }; process?: { argv: string[] } };
const args = g.Deno ? g.Deno.args : (g.process?.argv.slice(2) ?? []);
const provider = (args[0] ?? "auto") as ExecutionProvider;
const folder = args[1] ?? "models/tiny-sdxl";
const logs: string[] = [];
const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: provider, log: (m) => logs.push(m) });
const pipeline = await dg.openPipeline(folder);
const t0 = performance.now();
const r = await pipeline.run({ prompt: "a photo of a (red:1.2) heart", negativePrompt: "blue", steps: 3, seed: 11, guidanceScale: 5 });
const latents = r.outputs.denoise!.latents as Tensor;
console.log(JSON.stringify({ host: detectHost(), provider, folder, ms: performance.now() - t0, dims: r.images.dims, data: Array.from(r.images.data), latents: Array.from(latents.data), logs }));
await dg.dispose();
