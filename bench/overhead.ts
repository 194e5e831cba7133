/**
 * `bun run bench [--pipeline FILE] [--steps N] [--repeats R]`
 *
 * Framework overhead per denoising step: the pipeline's denoise node (scheduler, guidance, events
 * with latent copies, previews off) against a bare loop of `session.run` on the same UNet session with
 * the same batched inputs, measured in the same process, interleaved, for every execution provider
 * that loads here. Reports medians and the ratio; asserts nothing (numbers go in the README).
 */
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { createDiffgraph } from "../core/diffgraph.ts";
import type { ExecutionProvider } from "../core/onnx.ts";
import { builtinRegistry } from "../plugins/index.ts";
import { fileSource } from "../core/adapters/node.ts";
import type { Tensor } from "../core/tensor.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { pipeline: { type: "string" }, steps: { type: "string" }, repeats: { type: "string" }, providers: { type: "string" } },
});
const pipelinePath = values.pipeline ?? (existsSync("models/emoji-64/unet/model.onnx") ? "pipelines/emoji-64.json" : "pipelines/tiny-sd.json");
const steps = Number(values.steps ?? 20);
const repeats = Number(values.repeats ?? 5);
const providers = (values.providers ?? "cpu,wasm").split(",") as ExecutionProvider[];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`diffgraph overhead benchmark — ${pipelinePath}, ${steps} steps, guidance on (batch 2 per UNet call), ${repeats} repeats, median`);
console.log(`host ${"Bun" in globalThis ? `bun ${Bun.version}` : "node"}; ${navigator.hardwareConcurrency} cores\n`);
console.log("provider | framework ms/step | bare session.run ms/step | overhead | steps/s");
console.log("---|---|---|---|---");
for (const provider of providers) {
  const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: provider, log: () => {} });
  let pipeline;
  try {
    pipeline = await dg.openPipeline(pipelinePath);
  } catch (err) {
    console.log(`${provider} | unavailable: ${(err as Error).message.slice(0, 120)} | | |`);
    continue;
  }
  const modelDir = pipeline.doc.model ? `${pipelinePath.replace(/[^/]+$/, "")}${pipeline.doc.model}` : pipelinePath;
  const unet = await dg.onnx.load(fileSource(modelDir), "unet/model.onnx"); // the same cached session the pipeline uses
  const params = { prompt: "red heart", steps, seed: 1, guidanceScale: 4, scheduler: "ddim" };
  const first = await pipeline.run(params); // warm-up, and the shapes for the bare loop
  const [, c, h, w] = (first.outputs.denoise!.latents as Tensor).dims;
  const ehs = first.outputs.prompt!.embeddings as { dims: number[]; data: Float32Array };
  const ehs2 = { dims: [2, ...ehs.dims.slice(1)], data: new Float32Array(ehs.data.length * 2) };
  ehs2.data.set(ehs.data, 0);
  ehs2.data.set(ehs.data, ehs.data.length);
  const sample = { dims: [2, c!, h!, w!], data: new Float32Array(2 * c! * h! * w!).fill(0.1) };
  const tsInfo = unet.input("timestep");
  const tFeed = (t: number) =>
    tsInfo.type.startsWith("int")
      ? { dims: tsInfo.shape.length === 0 ? [] : tsInfo.shape[0] === 1 ? [1] : [2], ints: [t, t].slice(0, tsInfo.shape[0] === 1 ? 1 : 2) }
      : { dims: tsInfo.shape.length === 0 ? [] : [2], data: new Float32Array(tsInfo.shape.length === 0 ? 1 : 2).fill(t) };

  const fw: number[] = [];
  const bare: number[] = [];
  for (let r = 0; r < repeats; r++) {
    let t0 = performance.now();
    for (let i = 0; i < steps; i++) await unet.run({ sample, timestep: tFeed(999 - i * 50), encoder_hidden_states: ehs2 });
    bare.push((performance.now() - t0) / steps);
    const res = await pipeline.run({ ...params, seed: r + 2 });
    fw.push(res.timings.denoise! / steps);
  }
  const f = median(fw);
  const b = median(bare);
  console.log(`${provider} (${unet.backend}) | ${f.toFixed(3)} | ${b.toFixed(3)} | ${(((f - b) / b) * 100).toFixed(2)} % | ${(1000 / f).toFixed(1)}`);
  await dg.dispose();
}
