/**
 * WebGPU residency on Deno's adapter: the same tiny-sdxl run with `gpuResidency` on and off, timed
 * (median of repeats after a warm-up), with the bytes kept on the GPU; prints one JSON line.
 *   deno run -A test/runtimes/residency-bench.ts [repeats] [on-first]
 */
import { createDiffgraph } from "../../core/diffgraph.ts";
import type { Tensor } from "../../core/tensor.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const g = globalThis as { Deno?: { args: string[] } };
const repeats = Number(g.Deno?.args[0] ?? 5);
const input = { prompt: "a photo of a (red:1.2) heart", negativePrompt: "blue", steps: 8, seed: 11, guidanceScale: 5 };
const out: Record<string, unknown> = {};
let reference: Float32Array | undefined;
for (const gpuResidency of g.Deno?.args[1] === "on-first" ? [true, false] : [false, true]) {
  const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "webgpu", log: () => {}, gpuResidency });
  const p = await dg.openPipeline("models/tiny-sdxl");
  await p.run(input);
  const ms: number[] = [];
  let latents: Float32Array | undefined;
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const r = await p.run(input);
    ms.push(performance.now() - t0);
    latents = (r.outputs.denoise!.latents as Tensor).data;
  }
  ms.sort((a, b) => a - b);
  const unet = await dg.onnx.load(dg.adapter.fileSource("models/tiny-sdxl"), "unet/model.onnx");
  reference ??= latents; // the first configuration run is the reference
  let diff = 0;
  for (let i = 0; i < latents!.length; i++) diff = Math.max(diff, Math.abs(latents![i]! - reference![i]!));
  out[gpuResidency ? "on" : "off"] = { medianMs: ms[Math.floor(ms.length / 2)], msPerStep: ms[Math.floor(ms.length / 2)]! / input.steps, maxLatentDiffVsFirst: diff, unet: unet.residency, backend: `${unet.backend}/${unet.provider}` };
  await dg.dispose();
}
console.log(JSON.stringify(out));
