/**
 * The evaluation CLIP shared by the metric plugins and `bun run eval`: an ONNX image tower
 * (`pixel_values` → `image_embeds`), an ONNX text tower (`input_ids` → `text_embeds`), a Hugging Face
 * tokenizer and a `preprocessor_config.json` (CLIPImageProcessor keys). Every file is named by path
 * inside the pipeline's model folder, defaulting to the emoji model's `clip_eval/` layout, and loaded
 * through the same `ctx.onnx` runtime layer as every other plugin.
 *
 * Image preprocessing follows CLIPImageProcessor: resize (shortest edge), centre crop, normalise with
 * image_mean/image_std. It is written here in plain TypeScript rather than with sharp because these
 * plugins run inside the DAG on every runtime diffgraph supports (browsers, Deno, edge workers) and
 * sharp is a native Node addon; images arrive as float tensors in [0, 1], not encoded files. When the
 * image already has the model's size (the emoji model: 64×64 in, 64×64 expected) resize and crop are
 * the identity and only normalisation runs, which is exact. A real resize uses bilinear interpolation
 * with half-pixel centres and area averaging when shrinking (close to, not bit-identical with, PIL's
 * bicubic that HF uses).
 */
import { z } from "zod";
import { ModelFileError, readJson, type ModelSource } from "../../core/model-source.ts";
import type { OnnxModel, OnnxRuntime } from "../../core/onnx.ts";
import type { Tensor } from "../../core/tensor.ts";
import { loadTokenizer, type LoadedTokenizer } from "../encoders/clip-text.ts";

/** Config keys every metric plugin shares: where its feature model lives. */
export const ClipEvalFiles = {
  imageModel: z.string().default("clip_eval/image_model.onnx"),
  textModel: z.string().default("clip_eval/text_model.onnx"),
  tokenizer: z.string().default("clip_eval/tokenizer"),
  preprocessor: z.string().default("clip_eval/preprocessor_config.json"),
  /** Images per image-tower call (bounds peak memory). */
  maxBatch: z.number().int().positive().max(1024).default(32),
};

export interface Preprocess {
  readonly doResize: boolean;
  /** Target of the shortest edge (or exact height/width). */
  readonly size: { shortestEdge?: number; height?: number; width?: number };
  readonly doCenterCrop: boolean;
  readonly crop: { height: number; width: number };
  readonly doNormalize: boolean;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

const OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
const OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

function dimsOf(v: unknown): { shortestEdge?: number; height?: number; width?: number } | undefined {
  if (typeof v === "number") return { shortestEdge: v };
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.shortest_edge === "number") return { shortestEdge: o.shortest_edge };
    if (typeof o.height === "number" && typeof o.width === "number") return { height: o.height, width: o.width };
  }
  return undefined;
}

/** Read CLIPImageProcessor settings; missing keys take CLIP's defaults, the size defaults to the model's input. */
export function parsePreprocessor(json: Record<string, unknown>, modelSize?: [number, number]): Preprocess {
  const size = dimsOf(json.size) ?? (modelSize ? { height: modelSize[0], width: modelSize[1] } : { shortestEdge: 224 });
  const cropDims = dimsOf(json.crop_size);
  const crop = cropDims?.height !== undefined
    ? { height: cropDims.height, width: cropDims.width! }
    : cropDims?.shortestEdge !== undefined
      ? { height: cropDims.shortestEdge, width: cropDims.shortestEdge }
      : modelSize
        ? { height: modelSize[0], width: modelSize[1] }
        : { height: 224, width: 224 };
  const triple = (v: unknown, d: readonly [number, number, number]): [number, number, number] =>
    Array.isArray(v) && v.length === 3 ? [Number(v[0]), Number(v[1]), Number(v[2])] : typeof v === "number" ? [v, v, v] : [...d];
  return {
    doResize: json.do_resize !== false,
    size,
    doCenterCrop: json.do_center_crop !== false,
    crop,
    doNormalize: json.do_normalize !== false,
    mean: triple(json.image_mean, OPENAI_CLIP_MEAN),
    std: triple(json.image_std, OPENAI_CLIP_STD),
  };
}

/** Bilinear resize of one [3, H, W] image (half-pixel centres; box-averaged taps when shrinking). */
export function resizeBilinear(src: Float32Array, h: number, w: number, oh: number, ow: number): Float32Array {
  if (oh === h && ow === w) return src;
  const out = new Float32Array(3 * oh * ow);
  const sy = h / oh;
  const sx = w / ow;
  // When shrinking, average `ky`×`kx` bilinear taps spread over the source footprint (antialiasing).
  const ky = Math.max(1, Math.ceil(sy));
  const kx = Math.max(1, Math.ceil(sx));
  const sample = (plane: number, y: number, x: number) => {
    const yc = Math.min(Math.max(y, 0), h - 1);
    const xc = Math.min(Math.max(x, 0), w - 1);
    const y0 = Math.floor(yc);
    const x0 = Math.floor(xc);
    const y1 = Math.min(y0 + 1, h - 1);
    const x1 = Math.min(x0 + 1, w - 1);
    const fy = yc - y0;
    const fx = xc - x0;
    const p = plane * h * w;
    const top = src[p + y0 * w + x0]! * (1 - fx) + src[p + y0 * w + x1]! * fx;
    const bot = src[p + y1 * w + x0]! * (1 - fx) + src[p + y1 * w + x1]! * fx;
    return top * (1 - fy) + bot * fy;
  };
  for (let c = 0; c < 3; c++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let s = 0;
        for (let iy = 0; iy < ky; iy++) {
          for (let ix = 0; ix < kx; ix++) {
            const y = oy * sy + ((iy + 0.5) * sy) / ky - 0.5;
            const x = ox * sx + ((ix + 0.5) * sx) / kx - 0.5;
            s += sample(c, y, x);
          }
        }
        out[c * oh * ow + oy * ow + ox] = s / (ky * kx);
      }
    }
  }
  return out;
}

/** [B, 3, H, W] in [0, 1] → the model's pixel_values (resize, centre crop, normalise). */
export function preprocessImages(images: Tensor, p: Preprocess): Tensor {
  const [b, c, h, w] = images.dims as [number, number, number, number];
  if (images.dims.length !== 4 || c !== 3) throw new RangeError(`expected images [B,3,H,W], got [${images.dims.join(",")}]`);
  let rh = h;
  let rw = w;
  if (p.doResize) {
    if (p.size.shortestEdge !== undefined) {
      const s = p.size.shortestEdge;
      if (h <= w) [rh, rw] = [s, Math.round((w * s) / h)];
      else [rh, rw] = [Math.round((h * s) / w), s];
    } else [rh, rw] = [p.size.height!, p.size.width!];
  }
  const [ch, cw] = p.doCenterCrop ? [p.crop.height, p.crop.width] : [rh, rw];
  if (ch > rh || cw > rw) throw new RangeError(`crop ${ch}×${cw} is larger than the resized image ${rh}×${rw}`);
  const top = Math.floor((rh - ch) / 2);
  const left = Math.floor((rw - cw) / 2);
  const out = new Float32Array(b * 3 * ch * cw);
  for (let i = 0; i < b; i++) {
    const img = resizeBilinear(images.data.subarray(i * 3 * h * w, (i + 1) * 3 * h * w), h, w, rh, rw);
    for (let k = 0; k < 3; k++) {
      const m = p.doNormalize ? p.mean[k]! : 0;
      const sd = p.doNormalize ? p.std[k]! : 1;
      for (let y = 0; y < ch; y++) {
        for (let x = 0; x < cw; x++) {
          out[((i * 3 + k) * ch + y) * cw + x] = (img[k * rh * rw + (y + top) * rw + (x + left)]! - m) / sd;
        }
      }
    }
  }
  return { dims: [b, 3, ch, cw], data: out };
}

/** Rows scaled to unit length (float64 accumulation; a zero row stays zero). */
export function l2normalize(t: Tensor): Tensor {
  const [b, d] = t.dims as [number, number];
  const out = new Float32Array(t.data.length);
  for (let i = 0; i < b; i++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += t.data[i * d + j]! ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let j = 0; j < d; j++) out[i * d + j] = t.data[i * d + j]! * inv;
  }
  return { dims: [b, d], data: out };
}

/** Cosine similarity of row i of `a` with row i of `b` (float64). */
export function rowCosine(a: Tensor, b: Tensor, i: number, j = i): number {
  const d = a.dims[1]!;
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let k = 0; k < d; k++) {
    const x = a.data[i * d + k]!;
    const y = b.data[j * d + k]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

function pickOutput(model: OnnxModel, preferred: readonly string[]): string {
  const name = preferred.find((n) => model.outputs.some((o) => o.name === n)) ?? model.outputs[0]?.name;
  if (!name) throw new ModelFileError(model.file, "has no outputs");
  return name;
}

export interface ClipEvalConfig {
  imageModel: string;
  textModel: string;
  tokenizer: string;
  preprocessor: string;
  maxBatch: number;
}

/** The image tower alone (all the Fréchet distance needs). */
export class ClipImageTower {
  private constructor(
    readonly model: OnnxModel,
    readonly preprocess: Preprocess,
    private readonly inputName: string,
    private readonly outputName: string,
    private readonly maxBatch: number,
  ) {}

  static async load(models: ModelSource, onnx: OnnxRuntime, config: Pick<ClipEvalConfig, "imageModel" | "preprocessor" | "maxBatch">): Promise<ClipImageTower> {
    const model = await onnx.load(models, config.imageModel);
    const input = model.inputs.find((i) => i.name === "pixel_values") ?? model.inputs[0];
    if (!input) throw new ModelFileError(model.file, "has no inputs");
    const shape = input.shape;
    const modelSize = typeof shape[2] === "number" && typeof shape[3] === "number" ? ([shape[2], shape[3]] as [number, number]) : undefined;
    const json = (await models.exists(config.preprocessor)) ? await readJson<Record<string, unknown>>(models, config.preprocessor) : {};
    return new ClipImageTower(model, parsePreprocessor(json, modelSize), input.name, pickOutput(model, ["image_embeds", "pooler_output"]), config.maxBatch);
  }

  /** Image features [B, E] (as the model outputs them, not normalised). */
  async embed(images: Tensor): Promise<Tensor> {
    const b = images.dims[0]!;
    const per = images.data.length / b;
    const parts: Float32Array[] = [];
    let dim = 0;
    for (let i = 0; i < b; i += this.maxBatch) {
      const n = Math.min(this.maxBatch, b - i);
      const px = preprocessImages({ dims: [n, ...images.dims.slice(1)], data: images.data.subarray(i * per, (i + n) * per) }, this.preprocess);
      const out = (await this.model.run({ [this.inputName]: px }, [this.outputName]))[this.outputName]!;
      dim = out.data.length / n;
      parts.push(out.data);
    }
    const data = new Float32Array(b * dim);
    let off = 0;
    for (const p of parts) {
      data.set(p, off);
      off += p.length;
    }
    return { dims: [b, dim], data };
  }
}

/** Text tower + tokenizer. */
export class ClipTextTower {
  private readonly cache = new Map<string, Float32Array>();
  private constructor(
    readonly model: OnnxModel,
    readonly tokenizer: LoadedTokenizer,
    private readonly outputName: string,
    private readonly maxBatch: number,
  ) {}

  static async load(models: ModelSource, onnx: OnnxRuntime, config: Pick<ClipEvalConfig, "textModel" | "tokenizer" | "maxBatch">): Promise<ClipTextTower> {
    const model = await onnx.load(models, config.textModel);
    const ids = model.input("input_ids");
    const fixedLen = typeof ids.shape[1] === "number" ? ids.shape[1] : undefined;
    const tokenizer = await loadTokenizer(models, config.tokenizer, fixedLen);
    return new ClipTextTower(model, tokenizer, pickOutput(model, ["text_embeds", "pooler_output"]), config.maxBatch);
  }

  /** Text features [N, E] (not normalised); repeated strings are embedded once per tower. */
  async embed(texts: readonly string[]): Promise<Tensor> {
    const todo = [...new Set(texts.filter((t) => !this.cache.has(t)))];
    for (let i = 0; i < todo.length; i += this.maxBatch) {
      const chunk = todo.slice(i, i + this.maxBatch);
      const len = this.tokenizer.maxLength;
      const ids = chunk.flatMap((t) => this.tokenizer.encode(t));
      const feeds: Record<string, { dims: number[]; ints: number[] }> = { input_ids: { dims: [chunk.length, len], ints: ids } };
      if (this.model.hasInput("attention_mask")) {
        feeds.attention_mask = { dims: [chunk.length, len], ints: chunk.flatMap((t) => attentionMask(this.tokenizer, t)) };
      }
      const out = (await this.model.run(feeds, [this.outputName]))[this.outputName]!;
      const d = out.data.length / chunk.length;
      chunk.forEach((t, k) => this.cache.set(t, out.data.slice(k * d, (k + 1) * d)));
    }
    const d = texts.length ? this.cache.get(texts[0]!)!.length : 0;
    const data = new Float32Array(texts.length * d);
    texts.forEach((t, k) => data.set(this.cache.get(t)!, k * d));
    return { dims: [texts.length, d], data };
  }
}

/** 1 for real tokens, 0 for the padding after the first end-of-text. */
function attentionMask(tok: LoadedTokenizer, text: string): number[] {
  const ids = tok.encode(text);
  const firstPad = ids.indexOf(tok.padId);
  // CLIP pads with its eos token: keep the first eos (it is the pooled position), mask the rest.
  const keep = firstPad < 0 ? ids.length : firstPad + 1;
  return ids.map((_, i) => (i < keep ? 1 : 0));
}

/** Broadcast one prompt to every image of a batch, or check one per image. */
export function promptsFor(text: readonly string[], batch: number, node: string): string[] {
  if (text.length === batch) return [...text];
  if (text.length === 1) return new Array<string>(batch).fill(text[0]!);
  throw new RangeError(`${node}: ${text.length} texts for ${batch} images (give one, or one per image)`);
}
