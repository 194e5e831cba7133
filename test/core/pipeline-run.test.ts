import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import type { PipelineEvent, StepEvent } from "../../core/node.ts";
import { createRng } from "../../core/random.ts";
import { loadTiny, maxAbsDiff, testRuntime, tinyDoc } from "../helpers.ts";

const STEPS = 4;

function ddimDoc() {
  const d = tinyDoc();
  d.nodes.denoise.config.scheduler.use = "ddim";
  return d;
}

describe("text-to-image on the tiny-sd fixture", () => {
  test("matches an independent reference: raw onnxruntime sessions + DDIM written out by hand", async () => {
    const pipeline = await loadTiny(ddimDoc());
    const prompt = "a red heart";
    const negative = "blue";
    const g = 5;
    const seed = 11;
    const result = await pipeline.run({ prompt, negativePrompt: negative, steps: STEPS, guidanceScale: g, seed });

    // --- reference, sharing nothing with diffgraph but the documented RNG ---
    const dir = "models/tiny-sd";
    const tok = new Tokenizer(JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer.json`, "utf8")), JSON.parse(readFileSync(`${dir}/tokenizer/tokenizer_config.json`, "utf8")));
    const eos = tok.token_to_id("<|endoftext|>")!;
    const ids = (t: string) => {
      const x = tok.encode(t).ids.slice(0, 77);
      return Int32Array.from([...x, ...new Array(77 - x.length).fill(eos)]);
    };
    const sess = async (p: string) => ort.InferenceSession.create(`${dir}/${p}/model.onnx`);
    const [te, unet, vae] = await Promise.all([sess("text_encoder"), sess("unet"), sess("vae_decoder")]);
    const encode = async (t: string) => ((await te.run({ input_ids: new ort.Tensor("int32", ids(t), [1, 77]) })).last_hidden_state as ort.Tensor).data as Float32Array;
    const c = await encode(prompt);
    const u = await encode(negative);
    const ehs = new Float32Array(2 * c.length);
    ehs.set(u, 0);
    ehs.set(c, c.length);
    // scaled_linear betas, ᾱ, leading spacing with steps_offset 1, set_alpha_to_one false (SD 1.x config)
    const T = 1000;
    const acp: number[] = [];
    let prod = 1;
    for (let i = 0; i < T; i++) {
      const b = (Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * i) / (T - 1)) ** 2;
      prod *= 1 - b;
      acp.push(prod);
    }
    const ratio = Math.floor(T / STEPS);
    const ts = Array.from({ length: STEPS }, (_, i) => (STEPS - 1 - i) * ratio + 1);
    let x = createRng(seed).fillNormal(new Float32Array(4 * 8 * 8));
    for (const t of ts) {
      const both = new Float32Array(2 * x.length);
      both.set(x, 0);
      both.set(x, x.length);
      const out = (await unet.run({
        sample: new ort.Tensor("float32", both, [2, 4, 8, 8]),
        timestep: new ort.Tensor("float32", Float32Array.from([t, t]), [2]),
        encoder_hidden_states: new ort.Tensor("float32", ehs, [2, 77, 32]),
      })).out_sample!.data as Float32Array;
      const a = acp[t]!;
      const prev = t - ratio >= 0 ? acp[t - ratio]! : acp[0]!;
      const next = new Float32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const eps = out[i]! + g * (out[x.length + i]! - out[i]!);
        const x0 = (x[i]! - Math.sqrt(1 - a) * eps) / Math.sqrt(a);
        next[i] = Math.sqrt(prev) * x0 + Math.sqrt(1 - prev) * eps;
      }
      x = next;
    }
    const img = (await vae.run({ latent_sample: new ort.Tensor("float32", x.map((v) => v / 0.18215), [1, 4, 8, 8]) })).sample!.data as Float32Array;
    const ref = img.map((v) => Math.min(1, Math.max(0, (v + 1) / 2)));

    expect(result.images.dims).toEqual([1, 3, 64, 64]);
    expect(maxAbsDiff(result.images.data, ref)).toBeLessThan(1e-4);
    // and the images are not trivially constant
    expect(Math.max(...result.images.data) - Math.min(...result.images.data)).toBeGreaterThan(0.1);
  });

  test("same seed + config ⇒ identical output; another seed or guidance ⇒ different", async () => {
    const p = await loadTiny();
    const a = await p.run({ prompt: "cat", steps: STEPS, seed: 3 });
    const b = await p.run({ prompt: "cat", steps: STEPS, seed: 3 });
    const c = await p.run({ prompt: "cat", steps: STEPS, seed: 4 });
    const d = await p.run({ prompt: "cat", steps: STEPS, seed: 3, guidanceScale: 1 });
    expect(a.images.data).toEqual(b.images.data);
    expect(maxAbsDiff(a.images.data, c.images.data)).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(a.images.data, d.images.data)).toBeGreaterThan(1e-3);
  });

  test("swapping the scheduler is a config edit, and equals the per-run override (from_config)", async () => {
    const pndm = await loadTiny();
    const ddim = await loadTiny(ddimDoc());
    const viaConfig = await ddim.run({ prompt: "sun", steps: STEPS, seed: 5 });
    const viaOverride = await pndm.run({ prompt: "sun", steps: STEPS, seed: 5, scheduler: "ddim" });
    const asPndm = await pndm.run({ prompt: "sun", steps: STEPS, seed: 5 });
    expect(viaConfig.images.data).toEqual(viaOverride.images.data);
    expect(maxAbsDiff(viaConfig.images.data, asPndm.images.data)).toBeGreaterThan(1e-4);
  });

  test("swapping the decoder is a config edit: latent-preview instead of the VAE", async () => {
    const doc = tinyDoc();
    doc.nodes.decode.use = "latent-preview";
    const p = await loadTiny(doc);
    const r = await p.run({ prompt: "sun", steps: STEPS, seed: 5 });
    const vae = await (await loadTiny()).run({ prompt: "sun", steps: STEPS, seed: 5 });
    expect(r.images.dims).toEqual([1, 3, 64, 64]);
    // Same latents, different decoder: the denoise outputs agree, the images do not.
    expect(r.outputs.denoise!.latents).toEqual(vae.outputs.denoise!.latents);
    expect(maxAbsDiff(r.images.data, vae.images.data)).toBeGreaterThan(1e-3);
  });

  test("events: one step event per step in order with latents and x₀; both encoders before denoising; cache hits", async () => {
    const p = await loadTiny(ddimDoc());
    const events: PipelineEvent[] = [];
    await p.run({ prompt: "rocket launch", negativePrompt: "blurry", steps: STEPS, seed: 1 }, { onEvent: (e) => events.push(e), preview: true });
    const steps = events.filter((e): e is StepEvent => e.type === "step");
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4]);
    expect(steps.map((s) => s.timestep)).toEqual([751, 501, 251, 1]);
    for (const s of steps) {
      expect(s.latents.dims).toEqual([1, 4, 8, 8]);
      expect(s.predictedX0.dims).toEqual([1, 4, 8, 8]);
      expect(s.preview!.dims).toEqual([1, 3, 64, 64]);
    }
    // Both encoders finish before the denoise node starts. (Whether the negative prompt's node starts
    // before the prompt's ends depends on when each one's cache-key digest comes back, which the event
    // loop can order either way (it did once in CI); that independent nodes overlap is executor.test.ts's
    // "independent nodes run concurrently".)
    const idx = (type: string, node: string) => events.findIndex((e) => e.type === type && "node" in e && e.node === node);
    for (const enc of ["prompt", "negative"]) {
      expect(idx("node-start", enc)).toBeGreaterThanOrEqual(0);
      expect(idx("node-end", enc)).toBeLessThan(idx("node-start", "denoise"));
    }
    // img2img source has no $image: skipped, not run.
    expect(idx("node-start", "source")).toBe(-1);

    const again: PipelineEvent[] = [];
    await p.run({ prompt: "rocket launch", negativePrompt: "blurry", steps: STEPS, seed: 2 }, { onEvent: (e) => again.push(e) });
    const ends = again.filter((e) => e.type === "node-end") as Extract<PipelineEvent, { type: "node-end" }>[];
    expect(ends.find((e) => e.node === "prompt")!.cached).toBe(true);
    expect(ends.find((e) => e.node === "denoise")!.cached).toBe(false);
  });

  test("stream() yields the same events as an async iterable", async () => {
    const p = await loadTiny();
    const s = p.stream({ prompt: "ghost", steps: 3, seed: 1 });
    const types: string[] = [];
    for await (const e of s.events) types.push(e.type);
    await s.result;
    // PNDM (the SD 1.x default, PLMS with skip_prk_steps) evaluates the model steps + 1 times, as in diffusers.
    expect(types.filter((t) => t === "step").length).toBe(3 + 1);
    expect(types.at(-1)).toBe("node-end");
  });

  test("cancellation takes effect before the next denoising step", async () => {
    const p = await loadTiny();
    const ac = new AbortController();
    let seen = 0;
    const run = p.run({ prompt: "fire", steps: 10, seed: 1 }, {
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === "step" && ++seen === 2) ac.abort();
      },
    });
    await expect(run).rejects.toThrow(/abort/i);
    expect(seen).toBe(2);
    // the pipeline is still usable
    expect((await p.run({ prompt: "fire", steps: 2, seed: 1 })).images.dims).toEqual([1, 3, 64, 64]);
  });

  test("a batch of N equals N single runs with seeds s..s+N−1", async () => {
    const p = await loadTiny();
    const batch = await p.run({ prompt: "star", steps: 3, seed: 20, batchSize: 2 });
    const one = await p.run({ prompt: "star", steps: 3, seed: 20 });
    const two = await p.run({ prompt: "star", steps: 3, seed: 21 });
    const half = batch.images.data.length / 2;
    expect(batch.images.dims).toEqual([2, 3, 64, 64]);
    expect(maxAbsDiff(batch.images.data.subarray(0, half), one.images.data)).toBeLessThan(1e-5);
    expect(maxAbsDiff(batch.images.data.subarray(half), two.images.data)).toBeLessThan(1e-5);
  });

  test("img2img: strength runs the tail of the schedule from the encoded image", async () => {
    const p = await loadTiny(ddimDoc());
    const image = { dims: [1, 3, 64, 64], data: new Float32Array(3 * 64 * 64).map((_, i) => (i % 64) / 64) };
    const events: StepEvent[] = [];
    const r = await p.run({ prompt: "sun", steps: 10, strength: 0.5, seed: 1, image }, { onEvent: (e) => e.type === "step" && events.push(e) });
    expect(events.length).toBe(5);
    expect(events[0]!.timestep).toBeLessThan(500);
    const weak = await p.run({ prompt: "sun", steps: 10, strength: 0.2, seed: 1, image });
    expect(maxAbsDiff(r.images.data, weak.images.data)).toBeGreaterThan(1e-4);
  });

  test("float16 model (int64 [1] timestep) gives the float32 model's image within float16 error", async () => {
    const f32 = await (await loadTiny(ddimDoc())).run({ prompt: "pizza", steps: STEPS, seed: 8 });
    const f16 = await (await loadTiny(ddimDoc(), testRuntime(), "models/tiny-sd-fp16")).run({ prompt: "pizza", steps: STEPS, seed: 8 });
    expect(maxAbsDiff(f32.images.data, f16.images.data)).toBeLessThan(0.02);
  });

  test("bad run parameters are rejected naming the field; the pipeline keeps working", async () => {
    const p = await loadTiny();
    await expect(p.run({ prompt: "x", steps: 0 })).rejects.toThrow(/steps/);
    await expect(p.run({ prompt: "x", guidanceScale: -1 })).rejects.toThrow(/guidanceScale/);
    await expect(p.run({ prompt: "x", height: 60 })).rejects.toThrow(/height/);
    await expect(p.run({ prompt: "x", scheduler: "nope", steps: 2 })).rejects.toThrow(/unknown plugin "nope"/);
    expect((await p.run({ prompt: "x", steps: 2 })).images.dims).toEqual([1, 3, 64, 64]);
  });
});
