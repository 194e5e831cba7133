/**
 * Image tensors → PNG in plain JavaScript, for hosts where sharp's native module cannot load (web
 * pages, edge workers) and for one small image where loading sharp would cost more than the image
 * (the CLI). An image tensor is float32 [B, 3, H, W] in [0, 1].
 *
 * The deflate is the platform's `CompressionStream("deflate")` (zlib format, as PNG's IDAT wants;
 * native in Bun, Deno, browsers and workerd); only the PNG framing is written here, because fast-png
 * (kept as the fallback where `CompressionStream` is missing) costs a cold CLI ≈ 35 ms to import and
 * run its JavaScript deflate on a 256×256 image, against ≈ 4 ms for this (measured side by side).
 */
import { concatBytes } from "./bytes.ts";
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

let crcTable: Uint32Array | undefined;

/** CRC-32 (ISO 3309, as PNG chunks use) of `bytes`. */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** One PNG chunk: length, type, data, CRC over type + data. */
function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

const SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

/** Interleaved 8-bit RGB → PNG bytes (colour type 2, no interlace, filter "none" on every row). */
export async function encodeRgbPng(data: Uint8Array, width: number, height: number): Promise<Uint8Array> {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) throw new RangeError(`a PNG is at least 1×1 pixels, got ${width}×${height}`);
  if (data.length !== width * height * 3) throw new RangeError(`expected ${width}×${height}×3 = ${width * height * 3} bytes, got ${data.length}`);
  if (typeof CompressionStream !== "function") {
    const { encode } = await import("fast-png");
    return encode({ width, height, data, channels: 3, depth: 8 });
  }
  const row = width * 3;
  const raw = new Uint8Array(height * (row + 1)); // each row: filter byte 0, then its pixels
  for (let y = 0; y < height; y++) raw.set(data.subarray(y * row, (y + 1) * row), y * (row + 1) + 1);
  const zlib = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 2, 0, 0, 0], 8); // bit depth 8, RGB, deflate, adaptive filtering, no interlace
  return concatBytes([SIGNATURE, chunk("IHDR", ihdr), chunk("IDAT", zlib), chunk("IEND", new Uint8Array(0))]);
}

/** Item `index` of a [B, 3, H, W] tensor as PNG. */
export function tensorToPngJs(images: Tensor, index = 0): Promise<Uint8Array> {
  const { data, width, height } = toRgb8(images, index);
  return encodeRgbPng(data, width, height);
}
