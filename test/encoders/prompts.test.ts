/**
 * Prompts as people write them (issue 16, part 7): longer than the tokenizer's window and with
 * weighted words. The reference is a raw onnxruntime session over the tiny-sd text encoder and the
 * tokenizer library, with the windowing and A1111's emphasis written out here.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { evenTokens } from "../../core/denoise.ts";
import type { Embeddings, Tensor } from "../../core/tensor.ts";
import { parsePromptWeights } from "../../plugins/encoders/prompt-weights.ts";
import { loadTiny, maxAbsDiff, tinyDoc } from "../helpers.ts";

const DIR = "models/tiny-sd";
const tok = new Tokenizer(JSON.parse(readFileSync(`${DIR}/tokenizer/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${DIR}/tokenizer/tokenizer_config.json`, "utf8")));
const BOS = tok.token_to_id("<|startoftext|>")!;
const EOS = tok.token_to_id("<|endoftext|>")!;
const raw = (t: string) => tok.encode(t, { add_special_tokens: false }).ids as number[];
const session = ort.InferenceSession.create(`${DIR}/text_encoder/model.onnx`);

/** One window through the raw session: [bos, ids, eos, pad…] → [77, 32]. */
async function window(ids: number[]): Promise<Float32Array> {
  const row = [BOS, ...ids, EOS];
  const padded = Int32Array.from([...row, ...new Array(77 - row.length).fill(EOS)]);
  const out = await (await session).run({ input_ids: new ort.Tensor("int32", padded, [1, 77]) });
  return Float32Array.from(out.last_hidden_state!.data as Float32Array);
}

/** The prompt node of tiny-sd, alone. */
async function encoder(config: Record<string, unknown> = {}) {
  const doc = tinyDoc();
  doc.nodes.prompt.config = config;
  const p = await loadTiny(doc);
  const node = p.nodes.get("prompt")!;
  return async (text: string): Promise<{ embeddings: Embeddings; pooled: Tensor }> =>
    (await node.instance.run({ text: [text] }, { signal: new AbortController().signal } as never)) as never;
}

const LONG = Array.from({ length: 30 }, (_, i) => (i % 2 ? "a photo of a red cat" : "blue dog riding on mars")).join(", ");

describe("prompt weights parser (A1111 syntax)", () => {
  test("(w:x), (w), ((w)), [w], nesting, escapes, unclosed and stray brackets", () => {
    expect(parsePromptWeights("a cat")).toEqual([{ text: "a cat", weight: 1 }]);
    expect(parsePromptWeights("a (red:1.3) cat")).toEqual([{ text: "a ", weight: 1 }, { text: "red", weight: 1.3 }, { text: " cat", weight: 1 }]);
    const nested = parsePromptWeights("((big)) [small]");
    expect(nested[0]!.text).toBe("big");
    expect(nested[0]!.weight).toBeCloseTo(1.21, 12);
    expect(nested[2]!.weight).toBeCloseTo(1 / 1.1, 12);
    expect(parsePromptWeights("(a (b:0.5) c:2)")).toEqual([{ text: "a ", weight: 2 }, { text: "b", weight: 1 }, { text: " c", weight: 2 }]);
    expect(parsePromptWeights("\\(literal\\) x)")).toEqual([{ text: "(literal) x)", weight: 1 }]);
    expect(parsePromptWeights("unclosed (word")).toEqual([{ text: "unclosed ", weight: 1 }, { text: "word", weight: 1.1 }]);
    expect(parsePromptWeights("time: 3pm")).toEqual([{ text: "time: 3pm", weight: 1 }]);
  });
});

describe("long prompts: windows of 75 tokens, concatenated", () => {
  test("a prompt over the window gives [1, 77·k, D]; each window equals the raw encoder on [bos, slice, eos, pad]", async () => {
    const enc = await encoder();
    const ids = raw(LONG);
    expect(ids.length).toBeGreaterThan(150);
    const k = Math.ceil(ids.length / 75);
    const { embeddings, pooled } = await enc(LONG);
    expect(embeddings.dims).toEqual([1, 77 * k, 32]);
    for (let j = 0; j < k; j++) {
      const ref = await window(ids.slice(75 * j, 75 * (j + 1)));
      expect(maxAbsDiff(embeddings.data.subarray(j * 77 * 32, (j + 1) * 77 * 32), ref)).toBeLessThan(1e-5);
    }
    // pooled: the first window's pooler_output
    const first = [BOS, ...ids.slice(0, 75), EOS];
    const out = await (await session).run({ input_ids: new ort.Tensor("int32", Int32Array.from(first), [1, 77]) });
    expect(maxAbsDiff(pooled.data, out.pooler_output!.data as Float32Array)).toBeLessThan(1e-5);
    // the encoding of an empty window rides along for padding a shorter negative
    expect(embeddings.padding!.dims).toEqual([1, 77, 32]);
    expect(maxAbsDiff(embeddings.padding!.data, await window([]))).toBeLessThan(1e-5);
  });

  test("a prompt that fits is encoded exactly as before (one window, tokenizer's own specials)", async () => {
    const enc = await encoder();
    const { embeddings } = await enc("a red heart");
    expect(embeddings.dims).toEqual([1, 77, 32]);
    expect(maxAbsDiff(embeddings.data, await window(raw("a red heart")))).toBeLessThan(1e-6);
  });

  test("the denoise node pads the shorter of prompt and negative with empty windows", () => {
    const pad: Tensor = { dims: [1, 2, 1], data: Float32Array.from([9, 9]) };
    const long: Tensor = { dims: [1, 4, 1], data: Float32Array.from([1, 2, 3, 4]) };
    const short: Tensor = { dims: [1, 2, 1], data: Float32Array.from([5, 6]) };
    const [a, b] = evenTokens(short, long, pad);
    expect([...a.data]).toEqual([5, 6, 9, 9]);
    expect(b).toBe(long);
    expect(() => evenTokens({ dims: [1, 3, 1], data: new Float32Array(3) }, long, pad)).toThrow(/not a whole number/);
  });

  test("end to end: words past the first window change the image (they were cut before); a long negative works too", async () => {
    const p = await loadTiny();
    const full = await p.run({ prompt: LONG, steps: 3, seed: 1 });
    const cut = await p.run({ prompt: `${LONG}, green ghost pizza`, steps: 3, seed: 1 });
    expect(full.images.dims).toEqual([1, 3, 64, 64]);
    expect(maxAbsDiff(full.images.data, cut.images.data)).toBeGreaterThan(1e-4);
    const neg = await p.run({ prompt: "cat", negativePrompt: LONG, steps: 3, seed: 1 });
    const shortNeg = await p.run({ prompt: "cat", negativePrompt: "dog", steps: 3, seed: 1 });
    expect(neg.images.data.every(Number.isFinite)).toBe(true);
    expect(maxAbsDiff(neg.images.data, shortNeg.images.data)).toBeGreaterThan(1e-4);
  });
});

describe("BREAK", () => {
  test("starts a new window: [bos, before, pad…, eos] then [bos, after, eos, pad…]", async () => {
    expect(parsePromptWeights("a cat BREAK (dog:1.2)")).toEqual([{ text: "a cat", weight: 1 }, { text: "", weight: 1, break: true }, { text: "dog", weight: 1.2 }]);
    const enc = await encoder();
    const { embeddings } = await enc("a red cat BREAK blue dog");
    expect(embeddings.dims).toEqual([1, 2 * 77, 32]);
    const first = raw("a red cat");
    // the first window's body is padded to 75 tokens before its eos (tiny-sd pads with eos, so this is also [bos, …, eos, pad…])
    expect(maxAbsDiff(embeddings.data.subarray(0, 77 * 32), await window([...first, ...new Array(75 - first.length).fill(EOS)].slice(0, 75)))).toBeLessThan(1e-5);
    expect(maxAbsDiff(embeddings.data.subarray(77 * 32), await window(raw("blue dog")))).toBeLessThan(1e-5);
    const joined = (await enc("a red cat blue dog")).embeddings;
    expect(joined.dims).toEqual([1, 77, 32]);
  });
});

describe("weighted words", () => {
  test("(red:1.5): the red token's states × 1.5, then the window rescaled to the unweighted mean", async () => {
    const enc = await encoder();
    const { embeddings } = await enc("a (red:1.5) heart");
    const parts = [raw("a "), raw("red"), raw(" heart")];
    const ids = parts.flat();
    const ref = await window(ids);
    const before = ref.reduce((a, b) => a + b, 0);
    const redAt = 1 + parts[0]!.length; // after bos
    for (let t = redAt; t < redAt + parts[1]!.length; t++) for (let d = 0; d < 32; d++) ref[t * 32 + d]! *= 1.5;
    const after = ref.reduce((a, b) => a + b, 0);
    for (let i = 0; i < ref.length; i++) ref[i]! *= before / after;
    expect(maxAbsDiff(embeddings.data, ref)).toBeLessThan(1e-4);
    const plain = (await enc("a red heart")).embeddings;
    expect(maxAbsDiff(embeddings.data, plain.data)).toBeGreaterThan(1e-3);
  });

  test("weight 1 is the plain prompt; weights: false reads brackets literally", async () => {
    const enc = await encoder();
    const one = (await enc("a (red:1) heart")).embeddings;
    expect(maxAbsDiff(one.data, await window([...raw("a "), ...raw("red"), ...raw(" heart")]))).toBeLessThan(1e-5);
    const literal = await encoder({ weights: false });
    const lit = (await literal("a (red:1.5) heart")).embeddings;
    expect(maxAbsDiff(lit.data, await window(raw("a (red:1.5) heart")))).toBeLessThan(1e-6);
  });

  test("weights in a long prompt apply in whichever window the word lands", async () => {
    const enc = await encoder();
    const plain = (await enc(LONG)).embeddings;
    const weighted = (await enc(`${LONG}, (pizza:1.4)`)).embeddings;
    const base = (await enc(`${LONG}, pizza`)).embeddings;
    expect(weighted.dims).toEqual(base.dims);
    expect(plain.dims[1]).toBeLessThanOrEqual(base.dims[1]!);
    // first window identical, last window (holding pizza) changed
    expect(maxAbsDiff(weighted.data.subarray(0, 77 * 32), base.data.subarray(0, 77 * 32))).toBeLessThan(1e-6);
    const last = (base.dims[1]! / 77 - 1) * 77 * 32;
    expect(maxAbsDiff(weighted.data.subarray(last), base.data.subarray(last))).toBeGreaterThan(1e-3);
  });
});
