import { expect, test } from "bun:test";
import { bicubicUpscale } from "../../plugins/decoders/upscale.ts";
import { loadTiny, tinyDoc } from "../helpers.ts";

test("bicubic (Keys, a = −0.5) reproduces a quadratic exactly away from the border", () => {
  const h = 12, w = 10, f = 3;
  const fn = (x: number, y: number) => 0.2 + 0.01 * x + 0.02 * y + 0.001 * x * x - 0.0005 * y * y;
  const img = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) img[y * w + x] = fn(x, y);
  const up = bicubicUpscale({ dims: [1, 1, h, w], data: img }, f);
  expect(up.dims).toEqual([1, 1, h * f, w * f]);
  let worst = 0;
  for (let Y = 2 * f; Y < (h - 2) * f; Y++) {
    for (let X = 2 * f; X < (w - 2) * f; X++) {
      const sx = (X + 0.5) / f - 0.5, sy = (Y + 0.5) / f - 0.5; // half-pixel centres
      worst = Math.max(worst, Math.abs(up.data[Y * w * f + X]! - fn(sx, sy)));
    }
  }
  expect(worst).toBeLessThan(1e-6);
});

test("a cascade is a config edit: an upscale node after the VAE doubles the output size", async () => {
  const doc = tinyDoc();
  doc.nodes.up = { use: "upscale", config: { factor: 2 }, inputs: { images: "decode.images" } };
  doc.output = "up.images";
  const r = await (await loadTiny(doc)).run({ prompt: "rocket", steps: 2, seed: 1 });
  expect(r.images.dims).toEqual([1, 3, 128, 128]);
  // every 2×2 block averages close to the source pixel it came from
  const src = r.outputs.decode!.images as { data: Float32Array };
  let worst = 0;
  for (let y = 8; y < 56; y++) for (let x = 8; x < 56; x++) {
    const m = (r.images.data[2 * y * 128 + 2 * x]! + r.images.data[2 * y * 128 + 2 * x + 1]! + r.images.data[(2 * y + 1) * 128 + 2 * x]! + r.images.data[(2 * y + 1) * 128 + 2 * x + 1]!) / 4;
    worst = Math.max(worst, Math.abs(m - src.data[y * 64 + x]!));
  }
  expect(worst).toBeLessThan(0.35);
});
