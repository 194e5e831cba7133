/**
 * `bun bench/fp16.ts`: emoji-64-fp16 (float16 weight storage) beside emoji-64 (float32) on the 16
 * sample prompts of the model's recipe: download size, ms/step per provider, and how far each image
 * is from the float32 model's (same seed), as max and mean |Δ| per pixel in [0, 1].
 *   bun bench/fp16.ts [--providers cpu,wasm] [--steps 20]
 */
import { statSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createDiffgraph } from "../core/diffgraph.ts";
import type { ExecutionProvider } from "../core/onnx.ts";
import { builtinRegistry } from "../plugins/index.ts";

export const SAMPLE_PROMPTS = ["red heart", "grinning face", "thumbs up", "pizza", "cat face", "rocket", "sun", "crying face", "rainbow", "banana", "fire", "star", "ghost", "smiling face with sunglasses", "hamburger", "four leaf clover"];

const { values } = parseArgs({ options: { providers: { type: "string", default: "cpu,wasm" }, steps: { type: "string", default: "20" } } });
const steps = Number(values.steps);

function generatorBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".onnx") && !join(e.parentPath, e.name).includes("clip_eval"))
    .reduce((n, e) => n + statSync(join(e.parentPath, e.name)).size, 0);
}

console.log(`generator ONNX (text encoder, UNet, VAE): emoji-64 ${(generatorBytes("models/emoji-64") / 1e6).toFixed(2)} MB, emoji-64-fp16 ${(generatorBytes("models/emoji-64-fp16") / 1e6).toFixed(2)} MB`);
for (const provider of values.providers!.split(",") as ExecutionProvider[]) {
  const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: provider, log: () => {}, threads: 1 });
  const f32 = await dg.openPipeline("pipelines/emoji-64.json");
  const f16 = await dg.openPipeline("pipelines/emoji-64-fp16.json");
  const ms = { f32: 0, f16: 0 };
  let max = 0;
  let sum = 0;
  let n = 0;
  const clip = { f32: 0, f16: 0 };
  for (const [i, prompt] of SAMPLE_PROMPTS.entries()) {
    const input = { prompt, seed: i, steps };
    let t = performance.now();
    const a = await f32.run(input, { metrics: true });
    ms.f32 += performance.now() - t;
    t = performance.now();
    const b = await f16.run(input, { metrics: true });
    ms.f16 += performance.now() - t;
    for (let k = 0; k < a.images.data.length; k++) {
      const d = Math.abs(a.images.data[k]! - b.images.data[k]!);
      max = Math.max(max, d);
      sum += d;
      n++;
    }
    const score = (m: Readonly<Record<string, number>>) => Object.entries(m).find(([k]) => k.startsWith("clip."))?.[1] ?? NaN;
    clip.f32 += score(a.metrics);
    clip.f16 += score(b.metrics);
  }
  const per = (x: number) => (x / SAMPLE_PROMPTS.length / steps).toFixed(2);
  console.log(`${provider}: ms/step (incl. decode, 1 thread) float32 ${per(ms.f32)}, fp16 weights ${per(ms.f16)}; fp16 vs float32 image: max |Δ| ${max.toFixed(4)}, mean |Δ| ${(sum / n).toFixed(5)}; mean CLIP score float32 ${(clip.f32 / SAMPLE_PROMPTS.length).toFixed(2)}, fp16 ${(clip.f16 / SAMPLE_PROMPTS.length).toFixed(2)} over ${SAMPLE_PROMPTS.length} prompts`);
  await dg.dispose();
}
