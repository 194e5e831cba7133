/**
 * api/image.ts: a batch as one PNG grid. Small grids in a process without sharp loaded are encoded
 * by fast-png, larger ones (and any once sharp is loaded) by sharp; both must give the same pixels,
 * each image enlarged with nearest-neighbour sampling at its place in the grid.
 */
import { expect, test } from "bun:test";
import sharp from "sharp";
import { gridPng, JS_PNG_MAX_PIXELS, pngSize } from "../../api/image.ts";
import { encodeRgbPng } from "../../core/png.ts";
import type { Tensor } from "../../core/tensor.ts";

function batch(b: number, h: number, w: number): Tensor {
  const data = new Float32Array(b * 3 * h * w);
  for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) % 1000) / 999;
  return { dims: [b, 3, h, w], data };
}

async function pixels(png: Uint8Array): Promise<Uint8Array> {
  const { data } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return new Uint8Array(data);
}

/** What the grid must hold: item k at column k % cols, row ⌊k / cols⌋, each pixel repeated s×s. */
function expected(t: Tensor, cols: number, s: number): Uint8Array {
  const [b, , h, w] = t.dims as [number, number, number, number];
  const rows = Math.ceil(b / cols);
  const W = cols * w * s;
  const out = new Uint8Array(W * rows * h * s * 3);
  for (let k = 0; k < b; k++)
    for (let y = 0; y < h * s; y++)
      for (let x = 0; x < w * s; x++)
        for (let c = 0; c < 3; c++) {
          const v = t.data[((k * 3 + c) * h + Math.floor(y / s)) * w + Math.floor(x / s)]!;
          out[((Math.floor(k / cols) * h * s + y) * W + (k % cols) * w * s + x) * 3 + c] = Math.round(Math.min(1, Math.max(0, v)) * 255);
        }
  return out;
}

test("a small grid (the CLI's 64×64 at 4×, fast-png) and a large one (sharp) hold the same pixels as the images", async () => {
  const small = batch(1, 64, 64);
  const a = await gridPng(small, undefined, 4);
  expect(pngSize(a)).toEqual({ width: 256, height: 256 });
  expect(256 * 256).toBeLessThanOrEqual(JS_PNG_MAX_PIXELS);
  const want = expected(small, 1, 4);
  // fast-png's bytes exactly (sharp's would differ): no libvips was loaded for it.
  expect(a).toEqual(encodeRgbPng(want, 256, 256));
  const got = await pixels(a);
  let diff = 0;
  for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i]! - got[i]!));
  expect(diff).toBeLessThanOrEqual(1);

  const large = batch(4, 64, 64);
  const b = await gridPng(large, 2, 4);
  expect(pngSize(b)).toEqual({ width: 512, height: 512 });
  expect(512 * 512).toBeGreaterThan(JS_PNG_MAX_PIXELS);
  const want2 = expected(large, 2, 4);
  const got2 = await pixels(b);
  diff = 0;
  for (let i = 0; i < want2.length; i++) diff = Math.max(diff, Math.abs(want2[i]! - got2[i]!));
  expect(diff).toBeLessThanOrEqual(1);
  expect(b).not.toEqual(encodeRgbPng(want2, 512, 512));
  // sharp is loaded now: the small grid goes through it too (other bytes), with the same pixels.
  const c = await gridPng(small, undefined, 4);
  expect(c).not.toEqual(a);
  expect(await pixels(c)).toEqual(got);
});
