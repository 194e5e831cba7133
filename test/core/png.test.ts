/**
 * core/png.ts writes PNGs by hand around the platform's deflate: checked against independent
 * decoders (sharp's libpng/libvips and fast-png), the CRC-32 check value, and the fast-png fallback
 * for hosts without CompressionStream.
 */
import { expect, test } from "bun:test";
import { decode } from "fast-png";
import sharp from "sharp";
import { crc32, encodeRgbPng } from "../../core/png.ts";

function image(w: number, h: number, seed: number): Uint8Array<ArrayBuffer> {
  const d = new Uint8Array(w * h * 3);
  let x = seed >>> 0;
  for (let i = 0; i < d.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    // flat areas and noise, as emoji images have both
    d[i] = (i / 3) % w < w / 2 ? (i % 3) * 100 : x >>> 24;
  }
  return d;
}

test("CRC-32 gives the standard check value and PNG's IEND CRC", () => {
  expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
  expect(crc32(new TextEncoder().encode("IEND"))).toBe(0xae426082);
});

for (const [w, h] of [[1, 1], [64, 64], [256, 256], [37, 5]] as const) {
  test(`a ${w}×${h} RGB image decodes to the same bytes with sharp and with fast-png`, async () => {
    const rgb = image(w, h, w * 31 + h);
    const png = await encodeRgbPng(rgb, w, h);
    expect([...png.subarray(0, 8)]).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);
    const viaSharp = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect(viaSharp.info).toMatchObject({ width: w, height: h, channels: 3 });
    expect([...new Uint8Array(viaSharp.data)]).toEqual([...rgb]);
    const viaFast = decode(png);
    expect([viaFast.width, viaFast.height, viaFast.channels, viaFast.depth]).toEqual([w, h, 3, 8]);
    expect([...(viaFast.data as Uint8Array)]).toEqual([...rgb]);
  });
}

test("without CompressionStream it falls back to fast-png, with the same pixels", async () => {
  const rgb = image(20, 12, 7);
  const native = await encodeRgbPng(rgb, 20, 12);
  const saved = globalThis.CompressionStream;
  try {
    (globalThis as { CompressionStream?: unknown }).CompressionStream = undefined;
    const fallback = await encodeRgbPng(rgb, 20, 12);
    expect(fallback).not.toEqual(native);
    expect([...(decode(fallback).data as Uint8Array)]).toEqual([...rgb]);
  } finally {
    globalThis.CompressionStream = saved;
  }
});

test("a buffer of the wrong size, or an empty image, is refused, naming the sizes", async () => {
  await expect(encodeRgbPng(new Uint8Array(10), 2, 2)).rejects.toThrow("expected 2×2×3 = 12 bytes, got 10");
  await expect(encodeRgbPng(new Uint8Array(0), 0, 5)).rejects.toThrow("a PNG is at least 1×1 pixels, got 0×5");
});
