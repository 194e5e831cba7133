/**
 * Tensor images → PNG. Shared by the API server and the CLI: an image tensor is float32
 * [B, 3, H, W] in [0, 1]; PNG wants interleaved 8-bit RGB.
 */
import { encodeRgbPng, toRgb8 } from "../core/png.ts";
import type { Tensor } from "../core/tensor.ts";

export { toRgb8 };

type Sharp = (typeof import("sharp"))["default"];
let sharpLoaded: Promise<Sharp | null> | undefined;
/**
 * sharp, loaded on first use; null where its native module cannot load (an edge worker bundling the
 * API): PNG encoding then falls back to core/png.ts, and decoding uploaded images is refused.
 */
function loadSharp(): Promise<Sharp | null> {
  return (sharpLoaded ??= import("sharp").then(
    (m) => ((sharpReady = true), m.default),
    () => null,
  ));
}
let sharpReady = false;

/**
 * The largest grid (pixels) `gridPng` encodes with core/png.ts (the platform's deflate) while this
 * module has not loaded sharp. Loading sharp (libvips) for one PNG would be most of a cold
 * `generate`'s PNG phase (its import cost 66 ms of CPU, measured); larger grids use sharp, and so
 * does every grid once this module has loaded it (an image input, an earlier large grid).
 */
export const JS_PNG_MAX_PIXELS = 384 * 384;

/** Which encoder `gridPng` uses for a grid of `pixels` ("auto": the rule above). */
export function gridEncoder(pixels: number, sharpLoaded: boolean): "js" | "sharp" {
  return !sharpLoaded && pixels <= JS_PNG_MAX_PIXELS ? "js" : "sharp";
}

async function requireSharp(what: string): Promise<Sharp> {
  const sharp = await loadSharp();
  if (!sharp) throw new Error(`${what} needs sharp, whose native module is not available on this host`);
  return sharp;
}

/** Encode item `index` of a [B, 3, H, W] tensor as PNG. */
export async function tensorToPng(images: Tensor, index = 0, options: { compressionLevel?: number } = {}): Promise<Uint8Array> {
  const { data, width, height } = toRgb8(images, index);
  const sharp = await loadSharp();
  if (!sharp) return encodeRgbPng(data, width, height);
  const buf = await sharp(data, { raw: { width, height, channels: 3 } })
    .png({ compressionLevel: options.compressionLevel ?? 6 })
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Every item of a batch as PNG, in order. */
export function batchToPng(images: Tensor, options: { compressionLevel?: number } = {}): Promise<Uint8Array[]> {
  return Promise.all(Array.from({ length: images.dims[0] ?? 0 }, (_, i) => tensorToPng(images, i, options)));
}

/** An image whose header declares more pixels than the caller allows (refused before decoding). */
export class ImageTooLargeError extends RangeError {}

/**
 * Decode PNG/JPEG/WebP bytes to a [1, 3, H, W] tensor in [0, 1], resized (cover) to width × height
 * when given. With `maxPixels`, the size is read from the header first and a larger image is refused
 * before any pixel is decoded (sharp's own bound, `limitInputPixels`, backs it up).
 */
export async function imageToTensor(bytes: Uint8Array, size?: { width: number; height: number }, options: { maxPixels?: number } = {}): Promise<Tensor> {
  const limit = options.maxPixels ?? 0x3fff * 0x3fff;
  const sharp = await requireSharp("decoding an image");
  const meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  if (!meta.width || !meta.height) throw new RangeError("no image size in its header");
  if (meta.width * meta.height > limit) {
    throw new ImageTooLargeError(`is ${meta.width}×${meta.height} pixels; at most ${limit} pixels are accepted`);
  }
  let img = sharp(bytes, { limitInputPixels: limit }).removeAlpha().toColourspace("srgb");
  if (size) img = img.resize(size.width, size.height, { fit: "cover" });
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  const { width, height, channels } = info;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let ch = 0; ch < 3; ch++) out[ch * plane + p] = data[p * channels + ch]! / 255;
  }
  return { dims: [1, 3, height, width], data: out };
}

export function pngDataUrl(png: Uint8Array): string {
  return `data:image/png;base64,${base64(png)}`;
}

/** Standard base64 of bytes, in chunks (String.fromCharCode takes a bounded argument list). */
export function base64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

/** Bytes of standard or URL-safe base64; null when it is not base64. */
export function fromBase64(text: string): Uint8Array | null {
  try {
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

/**
 * The whole batch as one PNG: a grid of `columns` (default ⌈√B⌉) images, each enlarged `scale`×
 * with nearest-neighbour sampling so small images stay crisp.
 */
export async function gridPng(images: Tensor, columns?: number, scale = 1, encoder: "auto" | "js" | "sharp" = "auto"): Promise<Uint8Array> {
  const [b, , h, w] = images.dims as [number, number, number, number];
  const cols = Math.max(1, Math.min(b, columns ?? Math.ceil(Math.sqrt(b))));
  const rows = Math.ceil(b / cols);
  const s = Math.max(1, Math.floor(scale));
  const W = cols * w * s;
  const H = rows * h * s;
  const out = new Uint8Array(W * H * 3);
  for (let k = 0; k < b; k++) {
    const { data } = toRgb8(images, k);
    const ox = (k % cols) * w * s;
    const oy = Math.floor(k / cols) * h * s;
    // Each source row once, widened s×; its other s − 1 copies are block copies (a cold CLI runs this
    // loop once, unoptimized: per destination pixel it cost ≈ 4 ms at 256×256).
    const span = w * s * 3;
    for (let sy = 0; sy < h; sy++) {
      const first = ((oy + sy * s) * W + ox) * 3;
      let dst = first;
      for (let x = 0; x < w; x++) {
        const src = (sy * w + x) * 3;
        const r = data[src]!;
        const g = data[src + 1]!;
        const b2 = data[src + 2]!;
        for (let rep = 0; rep < s; rep++, dst += 3) {
          out[dst] = r;
          out[dst + 1] = g;
          out[dst + 2] = b2;
        }
      }
      for (let rep = 1; rep < s; rep++) out.copyWithin(first + rep * W * 3, first, first + span);
    }
  }
  if ((encoder === "auto" ? gridEncoder(W * H, sharpReady) : encoder) === "js") return encodeRgbPng(out, W, H);
  const sharp = await loadSharp();
  if (!sharp) return encodeRgbPng(out, W, H);
  const buf = await sharp(out, { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Width and height from a PNG's IHDR chunk; undefined when the bytes are not a PNG. */
export function pngSize(png: Uint8Array | null | undefined): { width: number; height: number } | undefined {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (!png || png.length < 24 || sig.some((b, i) => png[i] !== b) || String.fromCharCode(...png.subarray(12, 16)) !== "IHDR") return undefined;
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}
