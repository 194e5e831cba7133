/**
 * CLIP-style text encoder: a Hugging Face tokenizer (`tokenizer/tokenizer.json` +
 * `tokenizer_config.json`, read with transformers.js' tokenizers) and an ONNX text tower
 * (`text_encoder/model.onnx`: `input_ids` → `last_hidden_state`, plus a pooled output).
 * Text is padded/truncated to the tokenizer's `model_max_length` with its pad token, as
 * diffusers does for Stable Diffusion.
 *
 * Prompts as people write them (AUTOMATIC1111's and compel's conventions):
 * - **Longer than the window** (77 tokens for CLIP): the tokens are cut into windows of
 *   `model_max_length − 2`, each wrapped in bos … eos and padded, each encoded on its own, and the
 *   hidden states concatenated along the token axis ([B, 77·k, D]); the pooled output is the first
 *   window's. A prompt and its negative of different lengths are evened out by the denoise node
 *   with the encoding of an empty window (`Embeddings.padding`), as A1111 pads with empty chunks.
 * - **Weighted words** (`(word:1.3)`, `(word)`, `[word]`; see prompt-weights.ts): each token's hidden
 *   state is multiplied by its weight, then the window is rescaled so its mean equals the unweighted
 *   mean (A1111's "original" emphasis), so a weight changes direction, not overall magnitude.
 * A plain prompt that fits one window is tokenised and encoded exactly as before (one call, no
 * rescaling). `"weights": false` in the config reads brackets literally.
 *
 * SDXL: `second` names a second tower (`text_encoder_2/`, `tokenizer_2/`); the two towers' hidden
 * states are concatenated along the feature axis and the pooled output is the second tower's
 * (`text_embeds`), as diffusers' StableDiffusionXLPipeline does. `zerosForEmpty` gives zero
 * embeddings for an empty text (SDXL's `force_zeros_for_empty_prompt`, for the negative prompt).
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";
import { readComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError, readModelJson, type ModelSource } from "../../core/model-source.ts";
import type { LoadOptions, OnnxModel } from "../../core/onnx.ts";
import type { Embeddings, Tensor } from "../../core/tensor.ts";
import { parsePromptWeights, type WeightedFragment } from "./prompt-weights.ts";

/**
 * Which output holds the per-token states: a name, or `"penultimate"` for the second-to-last of the
 * `hidden_states.N` outputs an Optimum export with hidden states has (SDXL conditions on those).
 */
const HiddenStates = z.string().min(1);
const Tower = z
  .object({
    model: z.string(),
    tokenizer: z.string(),
    hiddenStates: HiddenStates.default("penultimate"),
    pooled: z.array(z.string()).default(["text_embeds", "pooler_output"]),
  })
  .strict();

const Config = z
  .object({
    model: z.string().default("text_encoder/model.onnx"),
    tokenizer: z.string().default("tokenizer"),
    /** Output holding per-token states (SD: last_hidden_state; "penultimate": see above). */
    hiddenStates: HiddenStates.default("last_hidden_state"),
    /** Pooled output, if the model has one (CLIP: pooler_output or text_embeds). */
    pooled: z.array(z.string()).default(["text_embeds", "pooler_output"]),
    maxLength: z.number().int().positive().max(4096).optional(),
    /** SDXL's second text tower; its states are appended to the first's, its pooled output is used. */
    second: Tower.optional(),
    /** Zero embeddings (and pooled vector) for an empty text: SDXL's force_zeros_for_empty_prompt. */
    zerosForEmpty: z.boolean().default(false),
    /** Read `(word:1.3)`, `(word)`, `[word]` as attention weights. */
    weights: z.boolean().default(true),
    /** Symbolic axes of the model fixed to a size (onnxruntime's freeDimensionOverrides; see core/onnx.ts). */
    freeDimensions: z.record(z.string(), z.number().int().positive()).optional(),
  })
  .strict();

export interface LoadedTokenizer {
  readonly maxLength: number;
  readonly padId: number;
  /** Ids the tokenizer can produce: the largest id in its vocabulary and added tokens, plus one. */
  readonly vocabSize: number;
  /** Token ids padded/truncated to maxLength (the eos token is kept at the end when truncating). */
  encode(text: string): number[];
  /** Token ids of the text alone, without special tokens and unpadded. */
  tokens(text: string): number[];
  /** What `encode` puts before and after the text (CLIP: [bos] and [eos]); null if that could not be told. */
  readonly wrap: { readonly before: readonly number[]; readonly after: readonly number[] } | null;
}

/** The model types @huggingface/tokenizers implements (it guesses, silently, for anything else). */
export const TOKENIZER_MODELS = ["BPE", "WordPiece", "Unigram"] as const;

/**
 * A vocabulary, checked entry by entry with a plain loop: zod's record and tuple schemas cost about
 * 5 µs an entry, 20 ms for emoji-64's 4,286 tokens on every cold start (a CLIP BPE has 49,408, a
 * Unigram 250,000), for a check that is one typeof per entry.
 */
type VocabShape = Record<string, number> | [string, number][];
const Vocab = z.custom<VocabShape>().superRefine((v, ctx) => {
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const e = v[i] as unknown;
      if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== "string" || typeof e[1] !== "number") {
        ctx.addIssue({ code: "custom", path: [i], message: `must be a [token, score] pair, got ${JSON.stringify(e)?.slice(0, 60)}` });
        return;
      }
    }
    return;
  }
  if (v === null || typeof v !== "object") {
    ctx.addIssue({ code: "custom", message: "vocab must be an object of token → id (BPE, WordPiece) or a list of [token, score] (Unigram)" });
    return;
  }
  for (const key in v) {
    const id = (v as Record<string, unknown>)[key];
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
      ctx.addIssue({ code: "custom", path: [key], message: `id must be a whole number ≥ 0, got ${JSON.stringify(id)?.slice(0, 60)}` });
      return;
    }
  }
});

const TokenizerJson = z.looseObject({
  model: z
    .looseObject({
      type: z.enum(TOKENIZER_MODELS, {
        error: (i) => `${i.input === undefined ? "missing" : `${JSON.stringify(i.input)} is not a tokenizer model the tokenizers library supports`} (supported: ${TOKENIZER_MODELS.join(", ")})`,
      }),
      vocab: Vocab,
      merges: z.array(z.unknown()).optional(),
    })
    .superRefine((m, ctx) => {
      if (m.vocab === null || typeof m.vocab !== "object") return; // reported by Vocab
      const size = Array.isArray(m.vocab) ? m.vocab.length : Object.keys(m.vocab).length;
      if (size === 0) ctx.addIssue({ code: "custom", path: ["vocab"], message: "vocab is empty" });
      if (m.type === "BPE" && !m.merges) ctx.addIssue({ code: "custom", path: ["merges"], message: "merges: missing (a BPE tokenizer needs its merge list)" });
      if (m.type === "Unigram" && !Array.isArray(m.vocab)) ctx.addIssue({ code: "custom", path: ["vocab"], message: "vocab of a Unigram tokenizer is a list of [token, score]" });
      if (m.type !== "Unigram" && Array.isArray(m.vocab)) ctx.addIssue({ code: "custom", path: ["vocab"], message: `vocab of a ${m.type} tokenizer is an object of token → id` });
    }),
  added_tokens: z.array(z.looseObject({ id: z.number().int().nonnegative(), content: z.string() })).default([]),
});

const SpecialToken = z
  .union([z.string(), z.looseObject({ content: z.string() })], { error: () => 'must be a token: a string, or {"content": "…"}' })
  .nullable()
  .optional();
const SPECIAL = ["bos_token", "eos_token", "pad_token", "unk_token"] as const;
const SpecialTokens = z.looseObject(Object.fromEntries(SPECIAL.map((k) => [k, SpecialToken])) as Record<(typeof SPECIAL)[number], typeof SpecialToken>);
const TokenizerConfig = SpecialTokens.extend({
  /** transformers writes 1e30 for "no limit". */
  model_max_length: z.number().positive().optional(),
});

const tokenText = (t: z.output<typeof SpecialToken>): string | undefined => (t == null ? undefined : typeof t === "string" ? t : t.content);

/**
 * Tokenizers already loaded from a model source (the object a pipeline's nodes share): a pipeline's
 * prompt and negative-prompt encoders use the same tokenizer, which is read, checked and built once.
 * A later open gets a new source, so a changed file is read again.
 */
const loaded = new WeakMap<ModelSource, Map<string, Promise<LoadedTokenizer>>>();

export function loadTokenizer(models: ModelSource, dir: string, maxLength?: number): Promise<LoadedTokenizer> {
  return once(loaded, models, `${dir}\n${maxLength ?? ""}`, () => readTokenizer(models, dir, maxLength));
}

/**
 * `make()`'s promise, made once per `owner` and `key` (kept as long as the owner lives); a failure is
 * not kept, so the next call tries again and reports it afresh.
 */
function once<O extends object, V>(store: WeakMap<O, Map<string, Promise<V>>>, owner: O, key: string, make: () => Promise<V>): Promise<V> {
  let byKey = store.get(owner);
  if (!byKey) store.set(owner, (byKey = new Map()));
  let p = byKey.get(key);
  if (!p) {
    p = make();
    byKey.set(key, p);
    p.catch(() => byKey!.delete(key));
  }
  return p;
}

async function readTokenizer(models: ModelSource, dir: string, maxLength?: number): Promise<LoadedTokenizer> {
  const jsonFile = `${dir}/tokenizer.json`;
  const configFile = `${dir}/tokenizer_config.json`;
  const mapFile = `${dir}/special_tokens_map.json`;
  const json = await readModelJson(models, jsonFile, TokenizerJson);
  if (!(await models.exists(configFile))) {
    throw new ModelFileError(`${models.root}/${configFile}`, "file not found (it gives the padded length, model_max_length, and the pad/eos tokens)");
  }
  const config = await readModelJson(models, configFile, TokenizerConfig);
  // transformers fills special tokens that tokenizer_config.json leaves out from special_tokens_map.json.
  const map = (await models.exists(mapFile)) ? await readModelJson(models, mapFile, SpecialTokens) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (err) {
    throw new ModelFileError(`${models.root}/${jsonFile}`, `is not a tokenizer the tokenizers library can load (${(err as Error).message})`);
  }
  const ids = [...(Array.isArray(json.model.vocab) ? json.model.vocab.map((_, i) => i) : Object.values(json.model.vocab)), ...json.added_tokens.map((t) => t.id)];
  const vocabSize = ids.reduce((a, b) => Math.max(a, b), -1) + 1;
  const special: Partial<Record<(typeof SPECIAL)[number], number>> = {};
  for (const key of SPECIAL) {
    for (const [file, tokens] of [[configFile, config], [mapFile, map]] as const) {
      const text = tokenText(tokens[key]);
      if (text === undefined) continue;
      const id = tok.token_to_id(text);
      if (id === undefined) throw new ModelFileError(`${models.root}/${file}`, `${key}: ${JSON.stringify(text)} is not a token of ${models.root}/${jsonFile}`);
      special[key] ??= id;
    }
  }
  const padId = special.pad_token ?? special.eos_token;
  if (padId === undefined) throw new ModelFileError(`${models.root}/${configFile}`, "pad_token and eos_token are both missing: prompts cannot be padded");
  const eosId = special.eos_token;
  const declared = config.model_max_length;
  if (declared !== undefined && declared < 1e6 && !Number.isInteger(declared)) {
    throw new ModelFileError(`${models.root}/${configFile}`, `model_max_length: ${declared} is not a whole number of tokens`);
  }
  const len = maxLength ?? (declared !== undefined && declared < 1e6 ? declared : 77);
  const tokens = (text: string) => tok.encode(text, { add_special_tokens: false }).ids as number[];
  return {
    maxLength: len,
    padId,
    vocabSize,
    tokens,
    wrap: specialWrap(tok.encode("a").ids as number[], tokens("a")),
    encode(text) {
      let ids = tok.encode(text).ids as number[];
      if (ids.length > len) ids = eosId !== undefined && ids[ids.length - 1] === eosId ? [...ids.slice(0, len - 1), eosId] : ids.slice(0, len);
      return ids.length < len ? [...ids, ...new Array<number>(len - ids.length).fill(padId)] : ids;
    },
  };
}

/** Where the text sits among the ids `encode` gives: the ids before and after it. */
function specialWrap(full: number[], inner: number[]): { before: number[]; after: number[] } | null {
  if (inner.length === 0) return null;
  for (let o = 0; o + inner.length <= full.length; o++) {
    if (inner.every((id, k) => full[o + k] === id)) return { before: full.slice(0, o), after: full.slice(o + inner.length) };
  }
  return null;
}

/** A text tower: tokenizer + ONNX model, checked against each other. */
interface TowerInstance {
  readonly tokenizer: LoadedTokenizer;
  readonly model: OnnxModel;
  readonly hidden: string;
  readonly pooled: string | undefined;
}

async function loadTower(ctx: { models: ModelSource; onnx: { load(s: ModelSource, p: string, o?: LoadOptions): Promise<OnnxModel> } }, cfg: { model: string; tokenizer: string; hiddenStates: string; pooled: readonly string[] }, maxLength?: number, freeDimensions?: Readonly<Record<string, number>>): Promise<TowerInstance> {
  const [tokenizer, model] = await Promise.all([loadTokenizer(ctx.models, cfg.tokenizer, maxLength), ctx.onnx.load(ctx.models, cfg.model, freeDimensions ? { freeDimensions } : {})]);
  const ids = model.expectInput("input_ids", { rank: 2, types: ["int32", "int64"] });
  let hidden = cfg.hiddenStates;
  if (hidden === "penultimate") {
    const layers = model.outputs.map((o) => /^hidden_states\.(\d+)$/.exec(o.name)?.[1]).filter((n): n is string => n !== undefined).map(Number);
    if (layers.length < 2) {
      throw new ModelFileError(model.file, `has no hidden_states.N outputs to take the penultimate layer from (outputs: ${model.outputs.map((o) => o.name).join(", ")}); export it with hidden states (Optimum does for SDXL)`);
    }
    hidden = `hidden_states.${Math.max(...layers) - 1}`;
  }
  model.expectOutput(hidden, { rank: 3 });
  const tokLen = ids.shape[1];
  if (typeof tokLen === "number" && tokLen !== tokenizer.maxLength) {
    throw new ModelFileError(`${ctx.models.root}/${cfg.tokenizer}/tokenizer_config.json`, `model_max_length: prompts are padded to ${tokenizer.maxLength} tokens but ${model.file} takes input_ids of length ${tokLen}`);
  }
  // The text tower's own config, when the folder has one, bounds what the tokenizer may produce.
  const towerConfig = `${cfg.model.replace(/[^/]*$/, "")}config.json`;
  const tower = await readComponentConfig(ctx.models, towerConfig);
  if (tower.vocab_size !== undefined && tokenizer.vocabSize > tower.vocab_size) {
    throw new ModelFileError(`${ctx.models.root}/${towerConfig}`, `vocab_size: ${tower.vocab_size}, but ${ctx.models.root}/${cfg.tokenizer}/tokenizer.json has ids up to ${tokenizer.vocabSize - 1}`);
  }
  if (tower.max_position_embeddings !== undefined && tokenizer.maxLength > tower.max_position_embeddings) {
    throw new ModelFileError(`${ctx.models.root}/${towerConfig}`, `max_position_embeddings: ${tower.max_position_embeddings}, but ${ctx.models.root}/${cfg.tokenizer}/tokenizer_config.json pads prompts to ${tokenizer.maxLength} tokens`);
  }
  return { tokenizer, model, hidden, pooled: cfg.pooled.find((n) => model.outputs.some((o) => o.name === n)) };
}

/** One text as windows of `maxLength` ids, with a weight per id (1 for special and pad tokens). */
interface Windows {
  readonly ids: number[][];
  readonly weights: number[][] | null;
}

function toWindows(t: LoadedTokenizer, text: string, weighted: boolean, where: string): Windows {
  const frags: WeightedFragment[] = weighted ? parsePromptWeights(text) : [{ text, weight: 1 }];
  const plain = frags.length === 1 && frags[0]!.weight === 1;
  const plainText = frags.length === 1 ? frags[0]!.text : text;
  const wrap = t.wrap;
  const room = wrap ? t.maxLength - wrap.before.length - wrap.after.length : t.maxLength;
  if (plain && (!wrap || t.tokens(plainText).length <= room)) return { ids: [t.encode(plainText)], weights: null };
  if (!wrap || room < 1) throw new RangeError(`${where}: this tokenizer's special tokens could not be told apart from the text, so a long or weighted prompt cannot be split into windows`);
  const ids: number[] = [];
  const ws: number[] = [];
  for (const f of frags) {
    if (f.break) {
      // BREAK: pad the current window (A1111 pads with the pad token), so the next words start a new one.
      const fill = ids.length % room === 0 ? 0 : room - (ids.length % room);
      ids.push(...new Array<number>(fill).fill(t.padId));
      ws.push(...new Array<number>(fill).fill(1));
      continue;
    }
    const part = t.tokens(f.text);
    ids.push(...part);
    ws.push(...new Array<number>(part.length).fill(f.weight));
  }
  const out: Windows = { ids: [], weights: [] };
  for (let at = 0; at === 0 || at < ids.length; at += room) {
    const body = ids.slice(at, at + room);
    const row = [...wrap.before, ...body, ...wrap.after];
    const w = [...wrap.before.map(() => 1), ...ws.slice(at, at + room), ...wrap.after.map(() => 1)];
    out.ids.push([...row, ...new Array<number>(t.maxLength - row.length).fill(t.padId)]);
    out.weights!.push([...w, ...new Array<number>(t.maxLength - w.length).fill(1)]);
  }
  return plain ? { ids: out.ids, weights: null } : out;
}

/** The ids of an empty window: what every text is padded with to the longest text's window count. */
const emptyWindow = (t: LoadedTokenizer): number[] => t.encode("");

/**
 * Encode texts through one tower: [B, k·L, D] states (k windows per text, shorter texts padded with
 * empty windows), weights applied per window, and the pooled output of each text's first window.
 */
async function encodeTower(tower: TowerInstance, texts: readonly string[], weighted: boolean, k?: number): Promise<{ states: Tensor; pooled: Tensor; windows: number }> {
  const t = tower.tokenizer;
  const per = texts.map((x, i) => toWindows(t, x, weighted, `text[${i}]`));
  const windows = k ?? Math.max(...per.map((w) => w.ids.length));
  const L = t.maxLength;
  const ids: number[] = [];
  for (const w of per) {
    for (let j = 0; j < windows; j++) ids.push(...(w.ids[j] ?? emptyWindow(t)));
  }
  const rows = texts.length * windows;
  // Only the states and the pooled vector are read back (on WebGPU the other layers stay on the GPU).
  const out = await tower.model.run({ input_ids: { dims: [rows, L], ints: ids } }, [tower.hidden, ...(tower.pooled ? [tower.pooled] : [])]);
  const states = out[tower.hidden]!;
  const D = states.dims[2]!;
  per.forEach((w, b) => {
    w.weights?.forEach((weights, j) => emphasize(states.data.subarray((b * windows + j) * L * D, (b * windows + j + 1) * L * D), weights, D));
  });
  let pooled: Tensor;
  if (tower.pooled) {
    const all = out[tower.pooled]!;
    pooled = windows === 1 ? all : firstRows(all, texts.length, windows);
  } else {
    // Without a pooled output, the state at the last real token of the first window (CLIP pools at eos).
    pooled = lastToken(states, per.map((w) => Math.min(w.ids[0]!.indexOf(t.padId), L) - 1), windows);
  }
  return { states: { dims: [texts.length, windows * L, D], data: states.data }, pooled, windows };
}

/**
 * A1111's "original" emphasis: each token's state × its weight, then the window rescaled so its mean
 * is the unweighted mean.
 */
function emphasize(window: Float32Array, weights: readonly number[], D: number): void {
  let before = 0;
  for (let i = 0; i < window.length; i++) before += window[i]!;
  for (let tkn = 0; tkn < weights.length; tkn++) {
    const w = weights[tkn]!;
    if (w !== 1) for (let d = 0; d < D; d++) window[tkn * D + d]! *= w;
  }
  let after = 0;
  for (let i = 0; i < window.length; i++) after += window[i]!;
  if (after !== 0 && Number.isFinite(before / after)) {
    const r = before / after;
    for (let i = 0; i < window.length; i++) window[i]! *= r;
  }
}

/** Rows 0, k, 2k, … of a [B·k, E] tensor: each text's first window. */
function firstRows(t: Tensor, texts: number, k: number): Tensor {
  const e = t.dims[1]!;
  const out = new Float32Array(texts * e);
  for (let b = 0; b < texts; b++) out.set(t.data.subarray(b * k * e, (b * k + 1) * e), b * e);
  return { dims: [texts, e], data: out };
}

/** Concatenate [B, T, D1] and [B, T, D2] along the last axis. */
function concatLast(a: Tensor, b: Tensor): Tensor {
  const [B, T, d1] = a.dims as [number, number, number];
  const d2 = b.dims[2]!;
  if (b.dims[0] !== B || b.dims[1] !== T) throw new RangeError(`clip-text: the two towers' states are [${a.dims}] and [${b.dims}]; they must agree in batch and tokens`);
  const out = new Float32Array(B * T * (d1 + d2));
  for (let r = 0; r < B * T; r++) {
    out.set(a.data.subarray(r * d1, (r + 1) * d1), r * (d1 + d2));
    out.set(b.data.subarray(r * d2, (r + 1) * d2), r * (d1 + d2) + d1);
  }
  return { dims: [B, T, d1 + d2], data: out };
}

/** Zero the rows of an empty text. */
function zeroRows(t: Tensor, rows: readonly boolean[]): Tensor {
  if (!rows.some(Boolean)) return t;
  const data = t.data.slice();
  const per = data.length / t.dims[0]!;
  rows.forEach((z, b) => z && data.fill(0, b * per, (b + 1) * per));
  return { dims: t.dims, data };
}

export default definePlugin({
  name: "clip-text",
  kind: "encoder",
  description: "Tokenizer + ONNX CLIP text tower (Stable Diffusion's text_encoder; SDXL's pair): prompt → token embeddings, long and weighted prompts",
  configSchema: Config,
  inputs: { text: "text" },
  outputs: { embeddings: "embeddings", pooled: "vector" },
  deterministic: true,
  async create(config, ctx) {
    const towers = [await loadTower(ctx, config, config.maxLength, config.freeDimensions)];
    if (config.second) towers.push(await loadTower(ctx, config.second, config.maxLength, config.freeDimensions));
    let padding: Promise<Tensor> | undefined;
    const encode = async (texts: readonly string[], k?: number): Promise<{ embeddings: Tensor; pooled: Tensor }> => {
      const first = await encodeTower(towers[0]!, texts, config.weights, k);
      let embeddings = first.states;
      let pooled = first.pooled;
      if (towers[1]) {
        const second = await encodeTower(towers[1], texts, config.weights, first.windows);
        embeddings = concatLast(embeddings, second.states);
        pooled = second.pooled;
      }
      if (config.zerosForEmpty) {
        const empty = texts.map((t) => t === "");
        embeddings = zeroRows(embeddings, empty);
        pooled = zeroRows(pooled, empty);
      }
      return { embeddings, pooled };
    };
    // The empty text's encoding, shared by every node of this model folder with this whole config (the
    // prompt and negative encoders): a cold run encodes "" once, not once per node and again as
    // padding. Any config difference (window length, hidden layer, tokenizer, second tower) is another
    // entry, even where the ONNX model is shared.
    const variant = JSON.stringify([ctx.models.root, config]);
    const empty = () => once(emptyEncodings, towers[0]!.model, variant, () => encode([""], 1));
    return {
      async run({ text }) {
        const { embeddings, pooled } = text.length === 1 && text[0] === "" ? await empty() : await encode(text);
        // What a shorter prompt is padded with when the denoise node evens out prompt and negative.
        padding ??= config.zerosForEmpty
          ? Promise.resolve({ dims: [1, towers[0]!.tokenizer.maxLength, embeddings.dims[2]!], data: new Float32Array(towers[0]!.tokenizer.maxLength * embeddings.dims[2]!) })
          : empty().then((e) => e.embeddings);
        const out: Embeddings = { ...embeddings, padding: await padding };
        return { embeddings: out, pooled };
      },
    };
  },
});

/** `encode([""], 1)` per text tower (one OnnxModel per file) and config variant. */
const emptyEncodings = new WeakMap<OnnxModel, Map<string, Promise<{ embeddings: Tensor; pooled: Tensor }>>>();

function lastToken(states: Tensor, index: number[], k = 1): Tensor {
  const [rows, l, d] = states.dims as [number, number, number];
  const b = rows / k;
  const out = new Float32Array(b * d);
  for (let i = 0; i < b; i++) {
    const at = i * k; // the text's first window
    const j = index[i]! < 0 ? l - 1 : index[i]!;
    out.set(states.data.subarray((at * l + j) * d, (at * l + j + 1) * d), i * d);
  }
  return { dims: [b, d], data: out };
}
