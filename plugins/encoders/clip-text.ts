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
import { ModelFileError, readJson } from "../../core/model-source.ts";
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
  /** Token ids padded/truncated to maxLength (the eos token is kept at the end when truncating). */
  encode(text: string): number[];
}

export async function loadTokenizer(models: import("../../core/model-source.ts").ModelSource, dir: string, maxLength?: number): Promise<LoadedTokenizer> {
  const json = await readJson<Record<string, unknown>>(models, `${dir}/tokenizer.json`);
  const config = (await models.exists(`${dir}/tokenizer_config.json`))
    ? await readJson<Record<string, unknown>>(models, `${dir}/tokenizer_config.json`)
    : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (err) {
    throw new ModelFileError(`${models.root}/${dir}/tokenizer.json`, `is not a tokenizer the tokenizers library can load (${(err as Error).message})`);
  }
  const len = maxLength ?? (typeof config.model_max_length === "number" && config.model_max_length < 1e6 ? config.model_max_length : 77);
  const padToken = typeof config.pad_token === "string" ? config.pad_token : (config.pad_token as { content?: string } | undefined)?.content;
  const eosToken = typeof config.eos_token === "string" ? config.eos_token : (config.eos_token as { content?: string } | undefined)?.content;
  const idOf = (t: string | undefined) => (t === undefined ? undefined : tok.token_to_id(t));
  const padId = idOf(padToken) ?? idOf(eosToken) ?? 0;
  const eosId = idOf(eosToken);
  return {
    maxLength: len,
    padId,
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
    model.input("input_ids");
    if (!model.outputs.some((o) => o.name === config.hiddenStates)) {
      throw new ModelFileError(model.file, `has no output "${config.hiddenStates}" (outputs: ${model.outputs.map((o) => o.name).join(", ")})`);
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
