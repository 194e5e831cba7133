/**
 * Upscaler decoder for cascades (a small image made bigger, as in Imagen / DALL-E 2's later
 * stages): images → images, by an ONNX super-resolution model when one is configured, else by
 * bicubic convolution (Keys 1981, a = −0.5, half-pixel centres as in PIL/OpenCV/torch
 * `align_corners=False`). The bicubic path is written here because the image libraries that do it
 * (sharp) are native and absent in browsers and edge workers, where this plugin must also run.
 */
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";
import type { Tensor } from "../../core/tensor.ts";

const Config = z
  .object({
    factor: z.number().int().min(2).max(8).default(2),
    /** ONNX model in the model folder: input [B,3,H,W] in [0,1] → [B,3,fH,fW]. */
    model: z.string().optional(),
  })
  .strict();

function cubic(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t <= 1) return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1;
  if (t < 2) return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a;
  return 0;
}

/** Per output coordinate: the 4 source indices (clamped at the border) and their weights. */
function taps(outSize: number, inSize: number): { idx: Int32Array; w: Float64Array } {
  const idx = new Int32Array(outSize * 4);
  const w = new Float64Array(outSize * 4);
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const src = (o + 0.5) * scale - 0.5;
    const base = Math.floor(src);
    for (let k = 0; k < 4; k++) {
      const i = base - 1 + k;
      idx[o * 4 + k] = Math.min(inSize - 1, Math.max(0, i));
      w[o * 4 + k] = cubic(src - i);
    }
  }
  return { idx, w };
}

export function bicubicUpscale(images: Tensor, factor: number): Tensor {
  const [b, c, h, w] = images.dims as [number, number, number, number];
  const H = h * factor;
  const W = w * factor;
  const ty = taps(H, h);
  const tx = taps(W, w);
  const out = new Float32Array(b * c * H * W);
  const row = new Float64Array(W * h); // horizontal pass result for one plane
  for (let p = 0; p < b * c; p++) {
    const src = images.data.subarray(p * h * w, (p + 1) * h * w);
    for (let y = 0; y < h; y++) {
      for (let X = 0; X < W; X++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += tx.w[X * 4 + k]! * src[y * w + tx.idx[X * 4 + k]!]!;
        row[y * W + X] = s;
      }
    }
    const dst = out.subarray(p * H * W, (p + 1) * H * W);
    for (let Y = 0; Y < H; Y++) {
      for (let X = 0; X < W; X++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += ty.w[Y * 4 + k]! * row[ty.idx[Y * 4 + k]! * W + X]!;
        dst[Y * W + X] = Math.min(1, Math.max(0, s));
      }
    }
  }
  return { dims: [b, c, H, W], data: out };
}

export default definePlugin({
  name: "upscale",
  kind: "decoder",
  description: "Make images bigger: an ONNX super-resolution model, or bicubic interpolation",
  configSchema: Config,
  inputs: { images: "images" },
  outputs: { images: "images" },
  deterministic: true,
  async create(config, ctx) {
    if (!config.model) return { run: async ({ images }) => ({ images: bicubicUpscale(images, config.factor) }) };
    const model = await ctx.onnx.load(ctx.models, config.model);
    const inName = model.inputs[0]!.name;
    const outName = model.outputs[0]!.name;
    return { run: async ({ images }) => ({ images: (await model.run({ [inName]: images }, [outName]))[outName]! }) };
  },
});
