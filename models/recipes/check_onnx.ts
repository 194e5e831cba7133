// Checks the exported ONNX files with onnxruntime-node against torch reference outputs, and the
// tokenizer against the Python tokenizer. Usage (from the repo root):
//   node_modules/.bin/bun models/recipes/check_onnx.ts MODEL_DIR REF_JSON
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { readFileSync } from "node:fs";

const [dir, refPath] = process.argv.slice(2);
const ref = JSON.parse(readFileSync(refPath, "utf8"));
const J = (p: string) => JSON.parse(readFileSync(`${dir}/${p}`, "utf8"));
let worst = 0;
function cmp(name: string, got: Float32Array | number[], want: number[]) {
  let m = 0;
  for (let i = 0; i < want.length; i++) m = Math.max(m, Math.abs(got[i] - want[i]));
  worst = Math.max(worst, m);
  console.log(`${name}: max abs diff ${m.toExponential(2)} over ${want.length} values`);
}
// tokenizer
const tok = new Tokenizer(J("tokenizer/tokenizer.json"), J("tokenizer/tokenizer_config.json"));
const texts = ["red heart", "thumbs up: medium skin tone"];
const L = J("tokenizer/tokenizer_config.json").model_max_length;
const pad = J("tokenizer/tokenizer.json").model.vocab[J("tokenizer/tokenizer_config.json").pad_token];
const ids: number[][] = texts.map((t) => {
  const e = tok.encode(t).ids.slice(0, L);
  while (e.length < L) e.push(pad);
  return e;
});
const same = JSON.stringify(ids) === JSON.stringify(ref.text_encoder.input_ids);
console.log(`tokenizer ids match python: ${same}`, JSON.stringify(ids[1]));
if (!same) process.exit(1);
const B = ids.length;
const idsT = new ort.Tensor("int64", BigInt64Array.from(ids.flat().map(BigInt)), [B, L]);
const te = await ort.InferenceSession.create(`${dir}/text_encoder/model.onnx`);
const to = await te.run({ input_ids: idsT });
cmp("text_encoder.last_hidden_state", to.last_hidden_state.data as Float32Array, ref.text_encoder.last_hidden_state);
cmp("text_encoder.text_embeds", to.text_embeds.data as Float32Array, ref.text_encoder.text_embeds);
const un = await ort.InferenceSession.create(`${dir}/unet/model.onnx`);
const uo = await un.run({
  sample: new ort.Tensor("float32", Float32Array.from(ref.unet.sample), [B, 4, 8, 8]),
  timestep: new ort.Tensor("float32", Float32Array.from(ref.unet.timestep), [B]),
  encoder_hidden_states: to.last_hidden_state,
});
cmp("unet.out_sample", uo.out_sample.data as Float32Array, ref.unet.out_sample);
const vd = await ort.InferenceSession.create(`${dir}/vae_decoder/model.onnx`);
const vo = await vd.run({ latent_sample: new ort.Tensor("float32", Float32Array.from(ref.unet.sample), [B, 4, 8, 8]) });
cmp("vae_decoder.sample", vo.sample.data as Float32Array, ref.vae_decoder.sample);
const ve = await ort.InferenceSession.create(`${dir}/vae_encoder/model.onnx`);
const eo = await ve.run({ sample: vo.sample });
cmp("vae_encoder.latent_sample", eo.latent_sample.data as Float32Array, ref.vae_encoder.latent_sample);
const ct = await ort.InferenceSession.create(`${dir}/clip_eval/text_model.onnx`);
cmp("clip_eval.text_embeds", (await ct.run({ input_ids: idsT })).text_embeds.data as Float32Array, ref.clip_eval_text.text_embeds);
const ci = await ort.InferenceSession.create(`${dir}/clip_eval/image_model.onnx`);
cmp("clip_eval.image_embeds", (await ci.run({ pixel_values: vo.sample })).image_embeds.data as Float32Array, ref.clip_eval_image.image_embeds);
for (const [n, s] of [["text_encoder", te], ["unet", un], ["vae_decoder", vd], ["vae_encoder", ve], ["clip_eval/text", ct], ["clip_eval/image", ci]] as const)
  console.log(`${n}: inputs ${s.inputNames.join(",")} -> outputs ${s.outputNames.join(",")}`);
console.log(`worst ${worst.toExponential(2)}`);
const ok = worst < 1e-3;

// timing: one image, 20 steps with classifier-free guidance (UNet batch 2), one intra-op thread
{
  const o = { intraOpNumThreads: 1, interOpNumThreads: 1 };
  const te1 = await ort.InferenceSession.create(`${dir}/text_encoder/model.onnx`, o);
  const un1 = await ort.InferenceSession.create(`${dir}/unet/model.onnx`, o);
  const vd1 = await ort.InferenceSession.create(`${dir}/vae_decoder/model.onnx`, o);
  const run = async () => {
    const h = (await te1.run({ input_ids: idsT })).last_hidden_state; // [uncond-ish, cond] pair
    let x = new ort.Tensor("float32", new Float32Array(2 * 256).fill(0.1), [2, 4, 8, 8]);
    for (let i = 0; i < 20; i++)
      x = (await un1.run({ sample: x, timestep: new ort.Tensor("float32", Float32Array.from([999 - 50 * i, 999 - 50 * i]), [2]), encoder_hidden_states: h })).out_sample as ort.Tensor;
    await vd1.run({ latent_sample: new ort.Tensor("float32", (x.data as Float32Array).slice(0, 256), [1, 4, 8, 8]) });
  };
  await run();
  const ts: number[] = [];
  for (let k = 0; k < 5; k++) { const t0 = performance.now(); await run(); ts.push(performance.now() - t0); }
  ts.sort((a, b) => a - b);
  console.log(`one image, 20 steps + guidance, 1 thread: median ${ts[2].toFixed(0)} ms (min ${ts[0].toFixed(0)} ms)`);
}
process.exit(ok ? 0 : 1);
