// Checks an exported super-resolution ONNX file with onnxruntime-node against torch's outputs on the
// same inputs, and times one 64 px image on one intra-op thread. Called by models/recipes/train_sr.py
// (stage export); usage (repo root):
//   node_modules/.bin/bun models/recipes/check_sr.ts MODEL_ONNX REF_JSON
// REF_JSON: {"dims": [B,3,64,64], "input": [...], "output": [...]}. The last line printed is JSON:
// {"maxAbsDiff": …, "msPerImage": …, "msMin": …}. Exits 1 when the difference exceeds 1e-4.
import * as ort from "onnxruntime-node";
import { readFileSync } from "node:fs";

const [modelPath, refPath] = process.argv.slice(2);
if (!modelPath || !refPath) throw new Error("usage: check_sr.ts MODEL_ONNX REF_JSON");
const ref = JSON.parse(readFileSync(refPath, "utf8")) as { dims: number[]; input: number[]; output: number[] };
const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1 });
const inName = session.inputNames[0]!;
const outName = session.outputNames[0]!;
const out = await session.run({ [inName]: new ort.Tensor("float32", Float32Array.from(ref.input), ref.dims) });
const got = out[outName]!;
const [b, c, h, w] = ref.dims as [number, number, number, number];
if (got.dims.join(",") !== [b, c, h * 4, w * 4].join(",")) throw new Error(`${modelPath}: output ${outName} is [${got.dims.join(", ")}], expected [${b}, ${c}, ${h * 4}, ${w * 4}]`);
const data = got.data as Float32Array;
let maxAbsDiff = 0;
for (let i = 0; i < ref.output.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(data[i]! - ref.output[i]!));
console.log(`${inName} [${ref.dims.join(", ")}] -> ${outName} [${got.dims.join(", ")}]: max abs diff vs torch ${maxAbsDiff.toExponential(2)} over ${ref.output.length} values`);

const one = new ort.Tensor("float32", Float32Array.from(ref.input.slice(0, c * h * w)), [1, c, h, w]);
await session.run({ [inName]: one });
const ts: number[] = [];
for (let k = 0; k < 9; k++) {
  const t0 = performance.now();
  await session.run({ [inName]: one });
  ts.push(performance.now() - t0);
}
ts.sort((x, y) => x - y);
console.log(`one ${h}x${w} image on 1 thread: median ${ts[4]!.toFixed(1)} ms (min ${ts[0]!.toFixed(1)} ms)`);
console.log(JSON.stringify({ maxAbsDiff, msPerImage: ts[4], msMin: ts[0] }));
process.exit(maxAbsDiff <= 1e-4 ? 0 : 1);
