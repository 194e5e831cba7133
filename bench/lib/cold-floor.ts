/**
 * The floor of a cold text-to-image process on this machine: the smallest program that does what a
 * cold `generate` does, written straight against onnxruntime-node and @huggingface/tokenizers with no
 * framework — no config checks, no manifest, no events, no plugins. It loads the same optimized graphs
 * (paths from the bench: diffgraph's graph cache, the graphs the CLI made for its sizes, so its sessions
 * start as fast as diffgraph's do), with
 * the same threads, encodes "red heart" and "" (one call each, as the CLI's graph takes), runs DDIM (v-prediction, trailing
 * timesteps, cosine schedule) with guidance at the CFG batch, decodes, writes a PNG and exits. What it
 * costs outside denoising, no framework can avoid; `bench/overhead.ts` (c) spawns it beside the CLI.
 *
 *   bun bench/lib/cold-floor.ts MODEL_DIR TE.onnx UNET.onnx VAE.onnx STEPS GUIDANCE CORES OUT.png
 *
 * Prints one JSON line: marks (ms since the time origin) main, teLoaded (tokenizer, onnxruntime's start
 * and the text encoder's session), encoded, unetLoaded, denoiseStart, denoiseEnd, decoded (the VAE's
 * session and run), png.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import * as ort from "onnxruntime-node";
import { encodeRgbPng } from "../../core/png.ts";

const marks: Record<string, number> = { main: performance.now() };
const args = process.argv.slice(2);
if (args.length !== 8) throw new Error("usage: cold-floor.ts MODEL_DIR TE.onnx UNET.onnx VAE.onnx STEPS GUIDANCE CORES OUT.png");
const [dir, teFile, unetFile, vaeFile, stepsArg, guidanceArg, coresArg, out] = args as [string, string, string, string, string, string, string, string];
const steps = Number(stepsArg);
const w = Number(guidanceArg);
const thread = (n: number) => ({ intraOpNumThreads: n, interOpNumThreads: 1, executionMode: "sequential" as const, graphOptimizationLevel: "disabled" as const, extra: { "session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0" } });

const tok = new Tokenizer(JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer_config.json`, "utf8")));
const te = await ort.InferenceSession.create(teFile, thread(1));
marks.teLoaded = performance.now();
const L = 16;
// One prompt per call, as the CLI's text encoder graph takes (made for batch 1, 16 tokens: `pinShapes`).
const ctx = new Float32Array(2 * L * 128);
for (const [row, text] of [[0, ""], [1, "red heart"]] as const) {
  const ids = new BigInt64Array(L).fill(2n); // pad = <|endoftext|> (id 2)
  tok.encode(text).ids.slice(0, L).forEach((id, i) => (ids[i] = BigInt(id)));
  ctx.set((await te.run({ input_ids: new ort.Tensor("int64", ids, [1, L]) })).last_hidden_state!.data as Float32Array, row * L * 128);
}
const states = new ort.Tensor("float32", ctx, [2, L, 128]);
marks.encoded = performance.now();

const unet = await ort.InferenceSession.create(unetFile, thread(Number(coresArg)));
marks.unetLoaded = performance.now();
// DDIM, v-prediction, squaredcos_cap_v2 betas, trailing timesteps, set_alpha_to_one false.
const T = 1000;
const abar: number[] = [];
let prod = 1;
const f = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
for (let i = 0; i < T; i++) abar.push((prod *= 1 - Math.min(1 - f((i + 1) / T) / f(i / T), 0.999)));
const ts = Array.from({ length: steps }, (_, i) => Math.round(T - (i * T) / steps) - 1);
let seed = 7;
const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) + 0.5) / 2 ** 32;
const n = 4 * 8 * 8;
const x = Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand()));
const sample = new Float32Array(2 * n);
marks.denoiseStart = performance.now();
for (let i = 0; i < steps; i++) {
  const t = ts[i]!;
  sample.set(x, 0);
  sample.set(x, n);
  const o = (await unet.run({ sample: new ort.Tensor("float32", sample, [2, 4, 8, 8]), timestep: new ort.Tensor("float32", Float32Array.of(t, t), [2]), encoder_hidden_states: states })).out_sample!.data as Float32Array;
  const a = abar[t]!;
  const ap = i + 1 < steps ? abar[ts[i + 1]!]! : abar[0]!;
  for (let k = 0; k < n; k++) {
    const v = o[k]! + w * (o[n + k]! - o[k]!);
    const x0 = Math.sqrt(a) * x[k]! - Math.sqrt(1 - a) * v;
    const eps = Math.sqrt(a) * v + Math.sqrt(1 - a) * x[k]!;
    x[k] = Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * eps;
  }
}
marks.denoiseEnd = performance.now();
const sf = JSON.parse(readFileSync(`${dir}/vae_decoder/config.json`, "utf8")).scaling_factor as number;
const vae = await ort.InferenceSession.create(vaeFile, thread(1));
const img = (await vae.run({ latent_sample: new ort.Tensor("float32", x.map((v) => v / sf), [1, 4, 8, 8]) })).sample!.data as Float32Array;
marks.decoded = performance.now();
const P = 64 * 64;
const rgb = new Uint8Array(P * 3);
for (let p = 0; p < P; p++) for (let c = 0; c < 3; c++) rgb[p * 3 + c] = Math.round(Math.min(1, Math.max(0, (img[c * P + p]! + 1) / 2)) * 255);
writeFileSync(out, await encodeRgbPng(rgb, 64, 64));
marks.png = performance.now();
console.log(JSON.stringify({ floor: { timeOrigin: performance.timeOrigin, marks } }));
process.exit(0);
