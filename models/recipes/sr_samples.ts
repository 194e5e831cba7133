// The cascade's sample grid and SR timing, through diffgraph's own pipeline path: the 16 fixed sample
// prompts (SAMPLE_PROMPTS of models/recipes/train.py), seed 0, the pipeline's defaults (ddim, 20 steps,
// guidance 4), one ONNX thread. Each tile: the 64 px base image upscaled ×4 nearest | bicubic ×4
// (plugins/decoders/upscale.ts) | the SR node's output; four prompts per row. Usage (repo root):
//   node_modules/.bin/bun models/recipes/sr_samples.ts [PIPELINE] [OUT_PNG] [OUT_JSON]
// (defaults pipelines/emoji-256.json, models/emoji-sr-256/samples.png, models/emoji-sr-256/samples.json)
import { writeFileSync } from "node:fs";
import sharp from "sharp";
import { createDiffgraph } from "../../core/diffgraph.ts";
import type { Tensor } from "../../core/tensor.ts";
import { bicubicUpscale } from "../../plugins/decoders/upscale.ts";
import { builtinRegistry } from "../../plugins/index.ts";

const [pipelinePath = "pipelines/emoji-256.json", outPng = "models/emoji-sr-256/samples.png", outJson = "models/emoji-sr-256/samples.json"] = process.argv.slice(2);
const PROMPTS = ["red heart", "grinning face", "thumbs up", "pizza", "cat face", "rocket", "sun",
  "crying face", "rainbow", "banana", "fire", "star", "ghost",
  "smiling face with sunglasses", "hamburger", "four leaf clover"];
const T = 256; // tile
const GAP = 4;
const PER_ROW = 4;

const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", threads: 1, log: () => {} });
const pipeline = await dg.openPipeline(pipelinePath);
const srNode = pipeline.doc.output.split(".")[0]!;
const baseNode = Object.entries(pipeline.doc.nodes).find(([, n]) => n.use === "vae-decoder")?.[0];
if (!baseNode) throw new Error(`${pipelinePath}: no vae-decoder node (the 64 px base image)`);

const nearest = (img: Tensor, f: number): Tensor => {
  const [b, c, h, w] = img.dims as [number, number, number, number];
  const out = new Float32Array(b * c * h * f * w * f);
  for (let p = 0; p < b * c; p++)
    for (let Y = 0; Y < h * f; Y++)
      for (let X = 0; X < w * f; X++) out[(p * h * f + Y) * w * f + X] = img.data[(p * h + Math.floor(Y / f)) * w + Math.floor(X / f)]!;
  return { dims: [b, c, h * f, w * f], data: out };
};
const rgb = (img: Tensor): Uint8Array => {
  const [, , h, w] = img.dims as [number, number, number, number];
  const out = new Uint8Array(h * w * 3);
  for (let c = 0; c < 3; c++) for (let i = 0; i < h * w; i++) out[i * 3 + c] = Math.round(Math.min(1, Math.max(0, img.data[c * h * w + i]!)) * 255);
  return out;
};

const rows = Math.ceil(PROMPTS.length / PER_ROW);
const W = PER_ROW * (3 * T + 2 * GAP) + (PER_ROW - 1) * 4 * GAP;
const H = rows * T + (rows - 1) * 4 * GAP;
const tiles: sharp.OverlayOptions[] = [];
const srMs: number[] = [];
const totalMs: number[] = [];
for (const [k, prompt] of PROMPTS.entries()) {
  const t0 = performance.now();
  const r = await pipeline.run({ prompt, seed: 0 });
  totalMs.push(performance.now() - t0);
  srMs.push(r.timings[srNode] ?? NaN);
  const base = r.outputs[baseNode]!.images as Tensor;
  const x0 = (k % PER_ROW) * (3 * T + 2 * GAP + 4 * GAP);
  const y0 = Math.floor(k / PER_ROW) * (T + 4 * GAP);
  for (const [j, img] of [nearest(base, 4), bicubicUpscale(base, 4), r.images].entries()) {
    if (img.dims[2] !== T || img.dims[3] !== T) throw new Error(`${prompt}: image ${j} is ${img.dims.join("×")}, expected 256×256`);
    tiles.push({ input: rgb(img), raw: { width: T, height: T, channels: 3 }, left: x0 + j * (T + GAP), top: y0 });
  }
  console.log(`${prompt}: SR node ${srMs.at(-1)!.toFixed(1)} ms, whole run ${totalMs.at(-1)!.toFixed(0)} ms`);
}
await sharp({ create: { width: W, height: H, channels: 3, background: "#808080" } }).composite(tiles).png({ compressionLevel: 9 }).toFile(outPng);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = { pipeline: pipelinePath, prompts: PROMPTS, seed: 0, threads: 1, srNode, srMsMedian: median(srMs), srMsMax: Math.max(...srMs), runMsMedian: median(totalMs), srMs };
writeFileSync(outJson, JSON.stringify(summary, null, 1));
console.log(`wrote ${outPng} (${W}×${H}); SR node on 1 thread: median ${summary.srMsMedian.toFixed(1)} ms, max ${summary.srMsMax.toFixed(1)} ms per image`);
await pipeline.dispose();
await dg.dispose();
