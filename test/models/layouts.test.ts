/**
 * Model layouts people run (issue 16), each on its exact-layout fixture (models/make_tiny_variants.py)
 * and checked against an independent computation: raw onnxruntime sessions, the tokenizer library,
 * and the schedule written out by hand — sharing nothing with diffgraph but the documented RNG.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { createRng } from "../../core/random.ts";
import type { Tensor } from "../../core/tensor.ts";
import { fileSource } from "../../core/adapters/node.ts";
import { pipelineDocFromModelFolder } from "../../core/model-folder.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { diffgraph, maxAbsDiff, testRuntime } from "../helpers.ts";

const T = 1000;
/** SD's scaled_linear ᾱ_t, written out. */
const ACP: number[] = (() => {
  const out: number[] = [];
  let prod = 1;
  for (let i = 0; i < T; i++) {
    prod *= 1 - (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / (T - 1)) ** 2;
    out.push(prod);
  }
  return out;
})();
const sigmaOf = (t: number) => Math.sqrt((1 - ACP[t]!) / ACP[t]!);

function tokenizer(dir: string) {
  const tok = new Tokenizer(JSON.parse(readFileSync(`${dir}/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")));
  const pad = tok.token_to_id(JSON.parse(readFileSync(`${dir}/tokenizer_config.json`, "utf8")).pad_token)!;
  return (text: string) => {
    const ids = tok.encode(text).ids.slice(0, 77) as number[];
    return Int32Array.from([...ids, ...new Array(77 - ids.length).fill(pad)]);
  };
}
const session = (path: string) => ort.InferenceSession.create(path);
const f32 = (data: Float32Array | number[], dims: number[]) => new ort.Tensor("float32", data instanceof Float32Array ? data : Float32Array.from(data), dims);
const i64 = (values: number[]) => new ort.Tensor("int64", BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
const out = async (s: ort.InferenceSession, feeds: Record<string, ort.Tensor>, name: string) => Float32Array.from((await s.run(feeds))[name]!.data as Float32Array);
const toImage = (v: Float32Array) => v.map((x) => Math.min(1, Math.max(0, (x + 1) / 2)));
/** Two [1, L, D] halves → [2, L, D] (uncond first, as the guidance batch is laid out). */
const pair = (u: Float32Array, c: Float32Array) => {
  const b = new Float32Array(u.length + c.length);
  b.set(u, 0);
  b.set(c, u.length);
  return b;
};
function latentsOf(result: { outputs: Record<string, Record<string, unknown>> }): Float32Array {
  return (result.outputs.denoise!.latents as Tensor).data;
}

describe("SDXL (Optimum ORTStableDiffusionXLPipeline layout): tiny-sdxl", () => {
  test("two text towers (penultimate states concatenated), text_embeds + time_ids, zeros for the empty negative: golden vs raw sessions + Euler by hand", async () => {
    const dir = "models/tiny-sdxl";
    const dg = await diffgraph();
    const p = await dg.openPipeline(dir);
    const prompt = "a photo of a red heart";
    const [steps, g, seed] = [3, 5, 4];
    const result = await p.run({ prompt, steps, guidanceScale: g, seed });

    const [te1, te2, unet, vae] = await Promise.all(["text_encoder", "text_encoder_2", "unet", "vae_decoder"].map((c) => session(`${dir}/${c}/model.onnx`)));
    const ids1 = tokenizer(`${dir}/tokenizer`)(prompt);
    const ids2 = tokenizer(`${dir}/tokenizer_2`)(prompt);
    expect(ids2[ids2.length - 1]).not.toBe(ids1[ids1.length - 1]); // tokenizer_2 pads with "!", tokenizer with eos
    const r1 = await te1!.run({ input_ids: new ort.Tensor("int32", ids1, [1, 77]) });
    const r2 = await te2!.run({ input_ids: new ort.Tensor("int32", ids2, [1, 77]) });
    const h1 = r1["hidden_states.1"]!.data as Float32Array; // penultimate of hidden_states.0..2
    const h2 = r2["hidden_states.1"]!.data as Float32Array;
    const cond = new Float32Array(77 * 40);
    for (let t = 0; t < 77; t++) {
      cond.set(h1.subarray(t * 16, (t + 1) * 16), t * 40);
      cond.set(h2.subarray(t * 24, (t + 1) * 24), t * 40 + 16);
    }
    const pooled = r2.text_embeds!.data as Float32Array;
    const ehs = pair(new Float32Array(cond.length), cond); // force_zeros_for_empty_prompt
    const textEmbeds = pair(new Float32Array(24), pooled);
    const timeIds = [64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64];
    // EulerDiscreteScheduler, leading spacing, steps_offset 1: t = ⌊1000/3⌋·k + 1
    const ts = [667, 334, 1];
    const sig = [...ts.map(sigmaOf), 0];
    let x = createRng(seed).fillNormal(new Float32Array(4 * 8 * 8)).map((v) => v * Math.sqrt(sig[0]! ** 2 + 1));
    for (let i = 0; i < steps; i++) {
      const inp = x.map((v) => v / Math.sqrt(sig[i]! ** 2 + 1));
      const e = await out(unet!, { sample: f32(pair(inp, inp), [2, 4, 8, 8]), timestep: i64([ts[i]!, ts[i]!]), encoder_hidden_states: f32(ehs, [2, 77, 40]), text_embeds: f32(textEmbeds, [2, 24]), time_ids: f32(timeIds, [2, 6]) }, "out_sample");
      x = x.map((v, j) => {
        const eps = e[j]! + g * (e[x.length + j]! - e[j]!);
        const x0 = v - sig[i]! * eps;
        return v + ((v - x0) / sig[i]!) * (sig[i + 1]! - sig[i]!);
      });
    }
    expect(maxAbsDiff(latentsOf(result as never), x)).toBeLessThan(1e-4);
    const img = toImage(await out(vae!, { latent_sample: f32(x.map((v) => v / 0.13025), [1, 4, 8, 8]) }, "sample"));
    expect(maxAbsDiff(result.images.data, img)).toBeLessThan(1e-4);
    expect(Math.max(...x) - Math.min(...x)).toBeGreaterThan(0.1);
    // the prompt matters, and so does a non-empty negative (no longer zeros)
    const neg = await p.run({ prompt, negativePrompt: "blue", steps, guidanceScale: g, seed });
    expect(maxAbsDiff(latentsOf(neg as never), x)).toBeGreaterThan(1e-3);
    await dg.dispose();
  });
});

describe("SD-Turbo (fixed shapes, int64 [1] timestep, trailing Euler): tiny-sd-turbo", () => {
  test("1 step, guidance 0: one batch-1 UNet call and no unconditional batch; golden vs raw sessions", async () => {
    const dir = "models/tiny-sd-turbo";
    const dg = await diffgraph();
    const p = await dg.openPipeline(dir);
    expect(p.defaults.height).toBe(64); // the export's only size
    const result = await p.run({ prompt: "a red heart", steps: 1, guidanceScale: 0, seed: 2 });
    expect(p.nodeStats().denoise).toMatchObject({ rows: 1, modelCalls: 1 });

    const [te, unet, vae] = await Promise.all(["text_encoder", "unet", "vae_decoder"].map((c) => session(`${dir}/${c}/model.onnx`)));
    const c = await out(te!, { input_ids: new ort.Tensor("int32", tokenizer(`${dir}/tokenizer`)("a red heart"), [1, 77]) }, "last_hidden_state");
    const s = sigmaOf(999); // trailing: the one step starts at t = 999, σ_max; init σ is σ_max itself
    const x = createRng(2).fillNormal(new Float32Array(256)).map((v) => v * s);
    const eps = await out(unet!, { sample: f32(x.map((v) => v / Math.sqrt(s * s + 1)), [1, 4, 8, 8]), timestep: i64([999]), encoder_hidden_states: f32(c, [1, 77, 32]) }, "out_sample");
    const x0 = x.map((v, j) => v - s * eps[j]!);
    expect(maxAbsDiff(latentsOf(result as never), x0)).toBeLessThan(1e-4);
    const img = toImage(await out(vae!, { latent_sample: f32(x0.map((v) => v / 0.18215), [1, 4, 8, 8]) }, "sample"));
    expect(maxAbsDiff(result.images.data, img)).toBeLessThan(1e-4);
    await dg.dispose();
  });

  test("a batch-1 export still runs guidance and batches: rows go through in slices of one", async () => {
    const dg = await diffgraph();
    const p = await dg.openPipeline("models/tiny-sd-turbo");
    const guided = await p.run({ prompt: "a red heart", steps: 2, guidanceScale: 3, seed: 2, batchSize: 2 });
    expect(guided.images.dims).toEqual([2, 3, 64, 64]);
    const single = await p.run({ prompt: "a red heart", steps: 2, guidanceScale: 3, seed: 3 });
    expect(maxAbsDiff(guided.images.data.subarray(3 * 64 * 64), single.images.data)).toBeLessThan(1e-5);
    await expect(p.run({ prompt: "x", steps: 1, height: 128, width: 128 })).rejects.toThrow(/takes only 64×64/);
    await dg.dispose();
  });
});

describe("LCM (timestep_cond guidance embedding, LCMScheduler): tiny-lcm", () => {
  test("4 steps and guidance 8.5 by default, no unconditional batch; golden vs raw sessions + LCM written out", async () => {
    const dir = "models/tiny-lcm";
    const dg = await diffgraph();
    const p = await dg.openPipeline(dir);
    expect(p.defaults).toMatchObject({ steps: 4, guidanceScale: 8.5 });
    const seed = 6;
    const result = await p.run({ prompt: "a green cat", negativePrompt: "ignored: no unconditional batch", seed });
    expect(p.nodeStats().denoise).toMatchObject({ rows: 4, modelCalls: 4 });

    const [te, unet, vae] = await Promise.all(["text_encoder", "unet", "vae_decoder"].map((c) => session(`${dir}/${c}/model.onnx`)));
    const c = await out(te!, { input_ids: new ort.Tensor("int32", tokenizer(`${dir}/tokenizer`)("a green cat"), [1, 77]) }, "last_hidden_state");
    // w = 8.5 − 1, ×1000, sinusoidal over 4 frequencies exp(−k·ln(10⁴)/3)
    const w = 7.5 * 1000;
    const freqs = [0, 1, 2, 3].map((k) => Math.exp((-k * Math.log(10000)) / 3));
    const cond = [...freqs.map((f) => Math.sin(w * f)), ...freqs.map((f) => Math.cos(w * f))];
    // 50 distillation steps (19, 39, …, 999), 4 of them: indices ⌊k·50/4⌋ of the reversed list
    const ts = [999, 759, 499, 259];
    const stepRng = createRng(seed).fork();
    let x = createRng(seed).fillNormal(new Float32Array(256));
    for (let i = 0; i < 4; i++) {
      const t = ts[i]!;
      const eps = await out(unet!, { sample: f32(x, [1, 4, 8, 8]), timestep: i64([t]), encoder_hidden_states: f32(c, [1, 77, 32]), timestep_cond: f32(cond, [1, 8]) }, "out_sample");
      const a = ACP[t]!;
      const st = t * 10;
      const cSkip = 0.25 / (st * st + 0.25);
      const cOut = st / Math.sqrt(st * st + 0.25);
      const den = x.map((v, j) => cOut * ((v - Math.sqrt(1 - a) * eps[j]!) / Math.sqrt(a)) + cSkip * v);
      if (i === 3) x = den;
      else {
        const ap = ACP[ts[i + 1]!]!;
        x = den.map((v) => Math.sqrt(ap) * v + Math.sqrt(1 - ap) * stepRng.normal());
      }
    }
    expect(maxAbsDiff(latentsOf(result as never), x)).toBeLessThan(1e-4);
    const img = toImage(await out(vae!, { latent_sample: f32(x.map((v) => v / 0.18215), [1, 4, 8, 8]) }, "sample"));
    expect(maxAbsDiff(result.images.data, img)).toBeLessThan(1e-4);
    // the guidance scale reaches the UNet through the embedding
    const other = await p.run({ prompt: "a green cat", guidanceScale: 2, seed });
    expect(maxAbsDiff(latentsOf(other as never), x)).toBeGreaterThan(1e-4);
    await dg.dispose();
  });
});

describe("cross-run batching carries the extra conditioning", () => {
  for (const [fixture, input] of [
    ["tiny-sdxl", { steps: 4, guidanceScale: 5 }],
    ["tiny-lcm", { steps: 4 }],
  ] as const) {
    test(`${fixture}: concurrent runs share UNet calls and each gets its solo image`, async () => {
      const registry = builtinRegistry();
      const models = fileSource(`models/${fixture}`);
      const doc = (await pipelineDocFromModelFolder(models, fixture, registry)) as any;
      // Always merge calls that wait together (no speed measurement), so the test does not hang on timing.
      doc.nodes.denoise.config.batching = { maxRows: 64, maxWaitMs: 2000, adaptive: false };
      const p = await Pipeline.load(doc, { registry, onnx: testRuntime(), models });
      const a = { prompt: "a red heart", seed: 1, ...input };
      const b = { prompt: "blue dog", seed: 2, ...input, ...(fixture === "tiny-lcm" ? { guidanceScale: 3 } : {}) };
      const soloA = await p.run(a);
      const soloB = await p.run(b);
      const before = p.nodeStats().denoise!;
      const [ra, rb] = await Promise.all([p.run(a), p.run(b)]);
      const after = p.nodeStats().denoise!;
      expect(after.maxMerged).toBeGreaterThanOrEqual(2);
      expect(after.modelCalls! - before.modelCalls!).toBeLessThan(2 * 4);
      expect(maxAbsDiff(ra.images.data, soloA.images.data)).toBeLessThan(1e-4);
      expect(maxAbsDiff(rb.images.data, soloB.images.data)).toBeLessThan(1e-4);
      expect(maxAbsDiff(ra.images.data, rb.images.data)).toBeGreaterThan(1e-3);
      await p.dispose();
    });
  }
});

describe("SDXL-Turbo settings on the SDXL layout (tiny-sdxl)", () => {
  test("EulerAncestral with trailing spacing, 1 step, guidance 0: one conditional row; golden vs raw sessions", async () => {
    const dir = "models/tiny-sdxl";
    const registry = builtinRegistry();
    const models = fileSource(dir);
    const doc = (await pipelineDocFromModelFolder(models, "sdxl-turbo", registry)) as any;
    // SDXL-Turbo's scheduler_config.json: EulerAncestralDiscreteScheduler, timestep_spacing "trailing"
    doc.nodes.denoise.config.scheduler = { use: "euler-ancestral", config: { timestep_spacing: "trailing" }, configFile: "scheduler/scheduler_config.json" };
    const p = await Pipeline.load(doc, { registry, onnx: testRuntime(), models });
    const prompt = "a photo of a red heart";
    const result = await p.run({ prompt, steps: 1, guidanceScale: 0, seed: 8 });
    expect(p.nodeStats().denoise).toMatchObject({ rows: 1, modelCalls: 1 });

    const [te1, te2, unet] = await Promise.all(["text_encoder", "text_encoder_2", "unet"].map((c) => session(`${dir}/${c}/model.onnx`)));
    const r1 = await te1!.run({ input_ids: new ort.Tensor("int32", tokenizer(`${dir}/tokenizer`)(prompt), [1, 77]) });
    const r2 = await te2!.run({ input_ids: new ort.Tensor("int32", tokenizer(`${dir}/tokenizer_2`)(prompt), [1, 77]) });
    const ehs = new Float32Array(77 * 40);
    for (let t = 0; t < 77; t++) {
      ehs.set((r1["hidden_states.1"]!.data as Float32Array).subarray(t * 16, (t + 1) * 16), t * 40);
      ehs.set((r2["hidden_states.1"]!.data as Float32Array).subarray(t * 24, (t + 1) * 24), t * 40 + 16);
    }
    const s = sigmaOf(999); // trailing: the one step starts at t = 999; init σ is σ_max itself (not √(σ²+1))
    const x = createRng(8).fillNormal(new Float32Array(256)).map((v) => v * s);
    const eps = await out(unet!, { sample: f32(x.map((v) => v / Math.sqrt(s * s + 1)), [1, 4, 8, 8]), timestep: i64([999]), encoder_hidden_states: f32(ehs, [1, 77, 40]), text_embeds: f32(r2.text_embeds!.data as Float32Array, [1, 24]), time_ids: f32([64, 64, 0, 0, 64, 64], [1, 6]) }, "out_sample");
    // to σ = 0 the ancestral step adds no noise: x₀ = x − σ·ε
    expect(maxAbsDiff(latentsOf(result as never), x.map((v, j) => v - s * eps[j]!))).toBeLessThan(1e-4);
  });
});
