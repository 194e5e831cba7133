/**
 * The one tensor shape diffgraph passes between plugins: dense float32, row-major (NCHW for images
 * and latents). ONNX-specific dtypes (float16, int64) are converted at the ONNX boundary
 * (`core/onnx.ts`), never here.
 */
export interface Tensor {
  readonly dims: readonly number[];
  readonly data: Float32Array;
}

/**
 * Token embeddings [B, T, D] as a text encoder gives them, with what a shorter sequence is padded
 * with when two must be evened out (the encoding of an empty prompt window, [1, L, D]): a long
 * prompt spans several windows, its negative may span fewer.
 */
export interface Embeddings extends Tensor {
  readonly padding?: Tensor;
}

export function tensor(dims: readonly number[], data?: Float32Array): Tensor {
  const size = numel(dims);
  if (data && data.length !== size) {
    throw new RangeError(`tensor data has ${data.length} elements but dims [${dims.join(", ")}] need ${size}`);
  }
  return { dims: [...dims], data: data ?? new Float32Array(size) };
}

export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid dimension ${d} in [${dims.join(", ")}]`);
    n *= d;
  }
  return n;
}

export function sameDims(a: readonly number[], b: readonly number[]): boolean {
  // A plain loop: the ONNX layer asks this for every feed of every denoising step.
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Concatenate along the first axis (used to batch the unconditional and conditional halves). */
export function concat0(parts: readonly Tensor[]): Tensor {
  if (parts.length === 0) throw new RangeError("concat0 needs at least one tensor");
  const rest = parts[0]!.dims.slice(1);
  let rows = 0;
  for (const p of parts) {
    if (!sameDims(p.dims.slice(1), rest)) {
      throw new RangeError(`concat0: shapes [${p.dims}] and [${parts[0]!.dims}] differ past axis 0`);
    }
    rows += p.dims[0]!;
  }
  const out = new Float32Array(rows * numel(rest));
  let off = 0;
  for (const p of parts) {
    out.set(p.data, off);
    off += p.data.length;
  }
  return { dims: [rows, ...rest], data: out };
}

/** Rows [start, end) along the first axis, as a view (no copy). */
/** [B, C1, h, w] and [B, C2, h, w] stacked on the channel axis (an inpainting UNet's latents + mask + masked image). */
export function stackChannels(a: Tensor, b: Tensor): Tensor {
  const [B, ca, h, w] = a.dims as [number, number, number, number];
  const cb = b.dims[1]!;
  const plane = h * w;
  const out = new Float32Array(B * (ca + cb) * plane);
  for (let r = 0; r < B; r++) {
    out.set(a.data.subarray(r * ca * plane, (r + 1) * ca * plane), r * (ca + cb) * plane);
    out.set(b.data.subarray(r * cb * plane, (r + 1) * cb * plane), (r * (ca + cb) + ca) * plane);
  }
  return { dims: [B, ca + cb, h, w], data: out };
}

export function slice0(t: Tensor, start: number, end: number): Tensor {
  const row = numel(t.dims.slice(1));
  return { dims: [end - start, ...t.dims.slice(1)], data: t.data.subarray(start * row, end * row) };
}

/** Repeat each row `times` times along the first axis ([a,b] ×2 → [a,a,b,b]). */
export function repeatRows(t: Tensor, times: number): Tensor {
  if (times === 1) return t;
  const rows = t.dims[0]!;
  const row = numel(t.dims.slice(1));
  const out = new Float32Array(rows * times * row);
  for (let r = 0; r < rows; r++) {
    const src = t.data.subarray(r * row, (r + 1) * row);
    for (let k = 0; k < times; k++) out.set(src, (r * times + k) * row);
  }
  return { dims: [rows * times, ...t.dims.slice(1)], data: out };
}
