/**
 * api/image.ts: a batch as one PNG grid. Small grids in a process without sharp loaded are encoded
 * by core/png.ts, larger ones (and any once sharp is loaded) by sharp (`gridEncoder`); both encoders
 * must give the same pixels, each image enlarged with nearest-neighbour sampling at its place.
 */
import { expect, test } from "bun:test";
import sharp from "sharp";
import { gridEncoder, gridPng, JS_PNG_MAX_PIXELS, pngSize } from "../../api/image.ts";
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

const maxDiff = (a: Uint8Array, b: Uint8Array) => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

test("the encoder rule: core/png.ts for the CLI's 256×256 until sharp is loaded, sharp above 384×384", () => {
  expect(gridEncoder(256 * 256, false)).toBe("js");
  expect(gridEncoder(JS_PNG_MAX_PIXELS, false)).toBe("js");
  expect(gridEncoder(JS_PNG_MAX_PIXELS + 1, false)).toBe("sharp");
  expect(gridEncoder(256 * 256, true)).toBe("sharp");
});

test("both encoders hold the images' pixels, enlarged in place (a 1-image 4× grid and a 2×2 one)", async () => {
  for (const [t, cols, s, W, H] of [[batch(1, 64, 64), 1, 4, 256, 256], [batch(4, 64, 64), 2, 4, 512, 512]] as const) {
    const want = expected(t, cols, s);
    const js = await gridPng(t, cols, s, "js");
    const vips = await gridPng(t, cols, s, "sharp");
    expect(js).toEqual(await encodeRgbPng(want, W, H)); // core/png.ts's own bytes
    expect(vips).not.toEqual(js);
    for (const png of [js, vips]) {
      expect(pngSize(png)).toEqual({ width: W, height: H });
      expect(maxDiff(await pixels(png), want)).toBeLessThanOrEqual(1);
    }
  }
});
