/**
 * CLIP-style text encoder: a Hugging Face tokenizer (`tokenizer/tokenizer.json` +
 * `tokenizer_config.json`, read with transformers.js' tokenizers) and an ONNX text tower
 * (`text_encoder/model.onnx`: `input_ids` → `last_hidden_state`, plus a pooled output).
 * Text is padded/truncated to the tokenizer's `model_max_length` with its pad token, as
 * diffusers does for Stable Diffusion.
 */
import { Tokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";
import { readComponentConfig } from "../../core/model-folder.ts";
import { ModelFileError, readModelJson, type ModelSource } from "../../core/model-source.ts";
import type { Tensor } from "../../core/tensor.ts";

const Config = z
  .object({
    model: z.string().default("text_encoder/model.onnx"),
    tokenizer: z.string().default("tokenizer"),
    /** Output holding per-token states (SD: last_hidden_state). */
    hiddenStates: z.string().default("last_hidden_state"),
    /** Pooled output, if the model has one (CLIP: pooler_output or text_embeds). */
    pooled: z.array(z.string()).default(["text_embeds", "pooler_output"]),
    maxLength: z.number().int().positive().max(4096).optional(),
  })
  .strict();

export interface LoadedTokenizer {
  readonly maxLength: number;
  readonly padId: number;
  /** Ids the tokenizer can produce: the largest id in its vocabulary and added tokens, plus one. */
  readonly vocabSize: number;
  /** Token ids padded/truncated to maxLength (the eos token is kept at the end when truncating). */
  encode(text: string): number[];
}

/** The model types @huggingface/tokenizers implements (it guesses, silently, for anything else). */
export const TOKENIZER_MODELS = ["BPE", "WordPiece", "Unigram"] as const;

const TokenizerJson = z.looseObject({
  model: z
    .looseObject({
      type: z.enum(TOKENIZER_MODELS, {
        error: (i) => `${i.input === undefined ? "missing" : `${JSON.stringify(i.input)} is not a tokenizer model the tokenizers library supports`} (supported: ${TOKENIZER_MODELS.join(", ")})`,
      }),
      vocab: z.union([z.record(z.string(), z.number().int().nonnegative()), z.array(z.tuple([z.string(), z.number()]))], {
        error: () => "vocab must be an object of token → id (BPE, WordPiece) or a list of [token, score] (Unigram)",
      }),
      merges: z.array(z.unknown()).optional(),
    })
    .superRefine((m, ctx) => {
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

export async function loadTokenizer(models: ModelSource, dir: string, maxLength?: number): Promise<LoadedTokenizer> {
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
  return {
    maxLength: len,
    padId,
    vocabSize,
    encode(text) {
      let ids = tok.encode(text).ids as number[];
      if (ids.length > len) ids = eosId !== undefined && ids[ids.length - 1] === eosId ? [...ids.slice(0, len - 1), eosId] : ids.slice(0, len);
      return ids.length < len ? [...ids, ...new Array<number>(len - ids.length).fill(padId)] : ids;
    },
  };
}

export default definePlugin({
  name: "clip-text",
  kind: "encoder",
  description: "Tokenizer + ONNX CLIP text tower (Stable Diffusion's text_encoder): prompt → token embeddings",
  configSchema: Config,
  inputs: { text: "text" },
  outputs: { embeddings: "embeddings", pooled: "vector" },
  deterministic: true,
  async create(config, ctx) {
    const [tokenizer, model] = await Promise.all([
      loadTokenizer(ctx.models, config.tokenizer, config.maxLength),
      ctx.onnx.load(ctx.models, config.model),
    ]);
    const ids = model.expectInput("input_ids", { rank: 2, types: ["int32", "int64"] });
    model.expectOutput(config.hiddenStates, { rank: 3 });
    const tokLen = ids.shape[1];
    if (typeof tokLen === "number" && tokLen !== tokenizer.maxLength) {
      throw new ModelFileError(`${ctx.models.root}/${config.tokenizer}/tokenizer_config.json`, `model_max_length: prompts are padded to ${tokenizer.maxLength} tokens but ${model.file} takes input_ids of length ${tokLen}`);
    }
    // The text tower's own config, when the folder has one, bounds what the tokenizer may produce.
    const towerConfig = `${config.model.replace(/[^/]*$/, "")}config.json`;
    const tower = await readComponentConfig(ctx.models, towerConfig);
    if (tower.vocab_size !== undefined && tokenizer.vocabSize > tower.vocab_size) {
      throw new ModelFileError(`${ctx.models.root}/${towerConfig}`, `vocab_size: ${tower.vocab_size}, but ${ctx.models.root}/${config.tokenizer}/tokenizer.json has ids up to ${tokenizer.vocabSize - 1}`);
    }
    if (tower.max_position_embeddings !== undefined && tokenizer.maxLength > tower.max_position_embeddings) {
      throw new ModelFileError(`${ctx.models.root}/${towerConfig}`, `max_position_embeddings: ${tower.max_position_embeddings}, but ${ctx.models.root}/${config.tokenizer}/tokenizer_config.json pads prompts to ${tokenizer.maxLength} tokens`);
    }
    const pooledName = config.pooled.find((n) => model.outputs.some((o) => o.name === n));
    return {
      async run({ text }) {
        const ids = text.flatMap((t) => tokenizer.encode(t));
        const out = await model.run({ input_ids: { dims: [text.length, tokenizer.maxLength], ints: ids } });
        const embeddings = out[config.hiddenStates]!;
        // Without a pooled output, fall back to the state at the last real token (CLIP pools at eos).
        const pooled: Tensor = pooledName ? out[pooledName]! : lastToken(embeddings, text.map((t) => Math.min(tokenizer.encode(t).indexOf(tokenizer.padId), tokenizer.maxLength) - 1));
        return { embeddings, pooled };
      },
    };
  },
});

function lastToken(states: Tensor, index: number[]): Tensor {
  const [b, l, d] = states.dims as [number, number, number];
  const out = new Float32Array(b * d);
  for (let i = 0; i < b; i++) {
    const k = index[i]! < 0 ? l - 1 : index[i]!;
    out.set(states.data.subarray((i * l + k) * d, (i * l + k + 1) * d), i * d);
  }
  return { dims: [b, d], data: out };
}
