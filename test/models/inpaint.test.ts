/**
 * Inpainting (issue 16, part 3): a `mask` run input (1 = repaint). (a) The 9-channel inpainting UNet
 * of tiny-sd-inpaint gets [latents, mask, masked-image latents], checked against raw sessions and
 * DDIM written out; (b) any other model (tiny-sd, 4 channels) keeps the known region by blending it
 * back from the noised source latents each step: its unmasked region then equals the VAE round trip
 * of the source, its masked region changes.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { latentMask } from "../../core/denoise.ts";
import { createRng } from "../../core/random.ts";
import type { Tensor } from "../../core/tensor.ts";
import { diffgraph, loadTiny, maxAbsDiff, testRuntime } from "../helpers.ts";

const H = 64;
/** A smooth RGB source image in [0, 1], [1, 3, 64, 64]. */
const SOURCE: Tensor = {
  dims: [1, 3, H, H],
  data: Float32Array.from({ length: 3 * H * H }, (_, i) => {
    const c = Math.floor(i / (H * H));
    const y = Math.floor(i / H) % H;
    const x = i % H;
    return 0.5 + 0.4 * Math.sin((x + 2 * y) / (9 + 3 * c));
  }),
};
/** Repaint the left 24 columns (3 latent cells), keep the rest. */
const MASK: Tensor = { dims: [1, 1, H, H], data: Float32Array.from({ length: H * H }, (_, i) => (i % H < 24 ? 1 : 0)) };

const session = (p: string) => ort.InferenceSession.create(p);
const run = async (s: ort.InferenceSession, feeds: Record<string, ort.Tensor>, name: string) => Float32Array.from((await s.run(feeds))[name]!.data as Float32Array);
const f32 = (d: Float32Array, dims: number[]) => new ort.Tensor("float32", d, dims);
const ACP: number[] = (() => {
  const out: number[] = [];
  let prod = 1;
  for (let i = 0; i < 1000; i++) {
    prod *= 1 - (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / 999) ** 2;
    out.push(prod);
  }
  return out;
})();

describe("latent mask", () => {
  test("binarised at 0.5 and taken at each cell's top-left pixel (torch interpolate, nearest)", () => {
    const m: Tensor = { dims: [1, 1, 16, 16], data: new Float32Array(256) };
    m.data[0] = 0.6; // cell (0,0) top-left
    m.data[16 * 8 + 9] = 1; // inside cell (1,1), not its top-left
    m.data[8] = 0.4; // cell (0,1) top-left, below 0.5
    expect([...latentMask(m, 1, 16, 16, 2, 2).data]).toEqual([1, 0, 0, 0]);
    expect(() => latentMask({ dims: [1, 1, 8, 8], data: new Float32Array(64) }, 1, 16, 16, 2, 2)).toThrow(/mask: must be \[1, 1 or 3, 16, 16\]/);
  });
});

describe("9-channel inpainting UNet: tiny-sd-inpaint", () => {
  test("golden vs raw sessions: [latents, mask, masked-image latents] on the UNet's channels, DDIM by hand", async () => {
    const dir = "models/tiny-sd-inpaint";
    const dg = await diffgraph();
    const p = await dg.openPipeline(dir);
    const [steps, g, seed] = [4, 5, 9];
    const result = await p.run({ prompt: "a red heart", steps, guidanceScale: g, seed, image: SOURCE, mask: MASK, strength: 1, scheduler: "ddim" });

    const [te, unet, enc, dec] = await Promise.all(["text_encoder", "unet", "vae_encoder", "vae_decoder"].map((c) => session(`${dir}/${c}/model.onnx`)));
    const tok = new Tokenizer(JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer_config.json`, "utf8")));
    const eos = tok.token_to_id("<|endoftext|>")!;
    const ids = (t: string) => { const x = tok.encode(t).ids as number[]; return Int32Array.from([...x, ...new Array(77 - x.length).fill(eos)]); };
    const encode = (t: string) => run(te!, { input_ids: new ort.Tensor("int32", ids(t), [1, 77]) }, "last_hidden_state");
    const [c, u] = [await encode("a red heart"), await encode("")];
    const ehs = new Float32Array(2 * c.length);
    ehs.set(u);
    ehs.set(c, c.length);
    const latentsOf = async (img: Float32Array) => (await run(enc!, { sample: f32(img.map((v) => v * 2 - 1), [1, 3, H, H]) }, "latent_sample")).map((v) => v * 0.18215);
    const init = await latentsOf(SOURCE.data);
    const maskedImg = SOURCE.data.map((v, i) => (MASK.data[i % (H * H)]! >= 0.5 ? 0.5 : v));
    const masked = await latentsOf(maskedImg);
    const m = Float32Array.from({ length: 64 }, (_, k) => (k % 8 < 3 ? 1 : 0)); // left 3 of 8 latent columns
    // DDIM, leading spacing with steps_offset 1 (the folder's PNDM config reused), set_alpha_to_one false
    const ts = [751, 501, 251, 1];
    const noise = createRng(seed).fillNormal(new Float32Array(256));
    let x = init.map((v, j) => Math.sqrt(ACP[751]!) * v + Math.sqrt(1 - ACP[751]!) * noise[j]!); // strength 1 starts at t₀ from the source
    for (let i = 0; i < steps; i++) {
      const t = ts[i]!;
      const one = new Float32Array(9 * 64);
      one.set(x, 0);
      one.set(m, 4 * 64);
      one.set(masked, 5 * 64);
      const both = new Float32Array(2 * one.length);
      both.set(one);
      both.set(one, one.length);
      const e = await run(unet!, { sample: f32(both, [2, 9, 8, 8]), timestep: f32(Float32Array.from([t, t]), [2]), encoder_hidden_states: f32(ehs, [2, 77, 32]) }, "out_sample");
      const a = ACP[t]!;
      const prev = i + 1 < steps ? ACP[ts[i + 1]!]! : ACP[0]!;
      x = x.map((v, j) => {
        const eps = e[j]! + g * (e[256 + j]! - e[j]!);
        const x0 = (v - Math.sqrt(1 - a) * eps) / Math.sqrt(a);
        return Math.sqrt(prev) * x0 + Math.sqrt(1 - prev) * eps;
      });
    }
    expect(maxAbsDiff((result.outputs.denoise!.latents as Tensor).data, x)).toBeLessThan(1e-4);
    const img = (await run(dec!, { latent_sample: f32(x.map((v) => v / 0.18215), [1, 4, 8, 8]) }, "sample")).map((v) => Math.min(1, Math.max(0, (v + 1) / 2)));
    expect(maxAbsDiff(result.images.data, img)).toBeLessThan(1e-4);
    await expect(p.run({ prompt: "a red heart", steps, seed, image: SOURCE })).rejects.toThrow(/inpainting UNet .* needs an image and a mask/);
    await dg.dispose();
  });
});

describe("any other model: the known region blended back each step (tiny-sd, 4 channels)", () => {
  test("unmasked region = VAE round trip of the source; masked region changes", async () => {
    const dg = await diffgraph();
    const p = await dg.openPipeline("models/tiny-sd");
    const result = await p.run({ prompt: "a red heart", steps: 6, seed: 3, image: SOURCE, mask: MASK, strength: 1, scheduler: "ddim", height: H, width: H });
    const enc = await session("models/tiny-sd/vae_encoder/model.onnx");
    const dec = await session("models/tiny-sd/vae_decoder/model.onnx");
    const z = await run(enc, { sample: f32(SOURCE.data.map((v) => v * 2 - 1), [1, 3, H, H]) }, "latent_sample");
    const roundTrip = (await run(dec, { latent_sample: f32(z, [1, 4, 8, 8]) }, "sample")).map((v) => Math.min(1, Math.max(0, (v + 1) / 2)));
    // The final latents equal the source latents wherever the mask is 0 …
    const lat = (result.outputs.denoise!.latents as Tensor).data;
    for (let c = 0; c < 4; c++) for (let k = 0; k < 64; k++) if (k % 8 >= 3) expect(Math.abs(lat[c * 64 + k]! - z[c * 64 + k]! * 0.18215)).toBeLessThan(1e-5);
    // … so pixels of cells whose decoder neighbourhood (3×3 cells) is unmasked are the round trip's.
    let keptDiff = 0;
    let changed = 0;
    let n = 0;
    for (let ch = 0; ch < 3; ch++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < H; x++) {
          const i = (ch * H + y) * H + x;
          if (Math.floor(x / 8) >= 4) keptDiff = Math.max(keptDiff, Math.abs(result.images.data[i]! - roundTrip[i]!));
          if (x < 16) {
            changed += Math.abs(result.images.data[i]! - roundTrip[i]!);
            n++;
          }
        }
    expect(keptDiff).toBeLessThan(1e-4);
    expect(changed / n).toBeGreaterThan(0.05);
    // without an image the mask has nothing to keep
    await expect(p.run({ prompt: "x", steps: 2, mask: MASK, height: H, width: H })).rejects.toThrow(/a mask needs the source image/);
    await dg.dispose();
  });

  test("on the trained emoji-64 VAE the kept region matches the source within the VAE's round-trip error", async () => {
    const dg = await diffgraph();
    const p = await dg.openPipeline("pipelines/emoji-64.json");
    const inpainted = await p.run({ prompt: "red heart", steps: 8, seed: 3, image: SOURCE, mask: MASK, strength: 1 });
    const errOf = (img: Float32Array, from: number) => {
      let s = 0;
      let k = 0;
      for (let ch = 0; ch < 3; ch++) for (let y = 0; y < H; y++) for (let x = from; x < H; x++) { s += Math.abs(img[(ch * H + y) * H + x]! - SOURCE.data[(ch * H + y) * H + x]!); k++; }
      return s / k;
    };
    const vaeErr = await roundTripError(dg, p);
    const kept = errOf(inpainted.images.data, 40);
    expect(kept).toBeLessThan(vaeErr * 1.5 + 0.01);
    // the repainted region moves away from the source much more than the kept one
    let repaint = 0;
    for (let ch = 0; ch < 3; ch++) for (let y = 0; y < H; y++) for (let x = 0; x < 16; x++) repaint += Math.abs(inpainted.images.data[(ch * H + y) * H + x]! - SOURCE.data[(ch * H + y) * H + x]!);
    expect(repaint / (3 * H * 16)).toBeGreaterThan(2 * kept);
    console.log(`emoji-64 inpainting: kept-region error ${kept.toFixed(4)}, VAE round-trip error ${vaeErr.toFixed(4)}, repainted-region change ${(repaint / (3 * H * 16)).toFixed(4)}`);
    // a pipeline whose denoise node does not read $mask refuses one instead of repainting everything
    const doc = JSON.parse(readFileSync("pipelines/emoji-64.json", "utf8"));
    delete doc.nodes.denoise.inputs.mask;
    delete doc.model;
    const unwired = await loadTiny(doc, testRuntime(), "models/emoji-64");
    await expect(unwired.run({ prompt: "x", steps: 2, image: SOURCE, mask: MASK })).rejects.toThrow(/mask: this pipeline does not take a mask/);
    await dg.dispose();
  });
});

/** Mean |decode(encode(x)) − x| of the source over the kept columns, through the pipeline's own VAE nodes. */
async function roundTripError(_dg: unknown, p: { nodes: ReadonlyMap<string, { instance: { run(i: unknown, r: unknown): Promise<Record<string, unknown>> } }> }): Promise<number> {
  const ctx = { signal: new AbortController().signal } as never;
  const { latents } = (await p.nodes.get("source")!.instance.run({ images: SOURCE }, ctx)) as { latents: Tensor };
  const { images } = (await p.nodes.get("decode")!.instance.run({ latents }, ctx)) as { images: Tensor };
  let s = 0;
  let k = 0;
  for (let ch = 0; ch < 3; ch++) for (let y = 0; y < H; y++) for (let x = 40; x < H; x++) { s += Math.abs(images.data[(ch * H + y) * H + x]! - SOURCE.data[(ch * H + y) * H + x]!); k++; }
  return s / k;
}
