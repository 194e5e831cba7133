/**
 * Image tensors → PNG in plain JavaScript (fast-png), for hosts where sharp's native module cannot
 * load: web pages and edge workers. An image tensor is float32 [B, 3, H, W] in [0, 1].
 */
import { encode } from "fast-png";
import type { Tensor } from "./tensor.ts";

/** Item `index` of a [B, 3, H, W] tensor as interleaved RGB bytes (values clamped to [0, 1]). */
export function toRgb8(images: Tensor, index = 0): { data: Uint8Array; width: number; height: number } {
  const [b, c, height, width] = images.dims as [number, number, number, number];
  if (images.dims.length !== 4 || c !== 3) throw new RangeError(`expected images [B, 3, H, W], got [${images.dims.join(", ")}]`);
  if (!(index >= 0 && index < b)) throw new RangeError(`image index ${index} out of range (batch of ${b})`);
  const plane = height * width;
  const src = images.data.subarray(index * 3 * plane, (index + 1) * 3 * plane);
  const data = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < 3; ch++) {
      const v = src[ch * plane + p]!;
      // NaN → 0; round half up.
      data[p * 3 + ch] = v > 0 ? (v >= 1 ? 255 : Math.round(v * 255)) : 0;
    }
  }
  return { data, width, height };
}

/** Interleaved 8-bit RGB → PNG bytes. */
export function encodeRgbPng(data: Uint8Array, width: number, height: number): Uint8Array {
  if (data.length !== width * height * 3) throw new RangeError(`expected ${width}×${height}×3 = ${width * height * 3} bytes, got ${data.length}`);
  return encode({ width, height, data, channels: 3, depth: 8 });
}

/** Item `index` of a [B, 3, H, W] tensor as PNG. */
export function tensorToPngJs(images: Tensor, index = 0): Uint8Array {
  const { data, width, height } = toRgb8(images, index);
  return encodeRgbPng(data, width, height);
}
