/**
 * What sessions a pipeline creates, and with which options (issue 13, items 1 and 2). onnxruntime is
 * faked where the options are the point: its `InferenceSession.create` records what it was given and
 * returns a session declaring what the file declares. The lazy-loading cases run the real emoji-64
 * pipeline and read `OnnxRuntime.created`. Nothing here measures time.
 */
import { describe, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileSource, onnxBackends } from "../../core/adapters/node.ts";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { OnnxRuntime, type OnnxBackends, type OrtModuleLike } from "../../core/onnx.ts";
import { threadOptionsFromFlags, threadPolicy } from "../../core/threads.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { fakeSessionFor } from "../onnx-bytes.ts";

interface Call {
  readonly producer: string;
  readonly options: Record<string, any>;
}

function recordingBackends(cores = 8): { backends: OnnxBackends; calls: Call[] } {
  const calls: Call[] = [];
  const fake: OrtModuleLike = {
    InferenceSession: {
      async create(model, options = {}) {
        const s = fakeSessionFor(model as Uint8Array);
        calls.push({ producer: s.graph.inputs.map((i) => i.name).join(","), options });
        return s;
      },
    },
    Tensor: class {} as never,
  };
  return { calls, backends: { host: "bun", cores, native: async () => fake, web: async () => fake } };
}

const emoji = fileSource("models/emoji-64");
const UNET = "sample,timestep,encoder_hidden_states";

describe("thread policy", () => {
  test("default: the UNet gets every core, the other models one thread; no spinning, no pinning, no inter-op pool", async () => {
    const { backends, calls } = recordingBackends(8);
    const rt = new OnnxRuntime({ backends, executionProvider: "cpu" });
    await (await rt.load(emoji, "unet/model.onnx", { role: "noise-predictor" })).ready();
    for (const f of ["text_encoder/model.onnx", "vae_decoder/model.onnx", "clip_eval/image_model.onnx"]) await (await rt.load(emoji, f)).ready();
    expect(calls).toHaveLength(4);
    const [unet, ...small] = calls;
    expect(unet!.producer).toBe(UNET);
    expect(unet!.options).toMatchObject({
      executionProviders: ["cpu"],
      intraOpNumThreads: 8,
      interOpNumThreads: 1,
      executionMode: "sequential",
      extra: { "session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0" },
    });
    expect(unet!.options.extra["session.intra_op_thread_affinities"]).toBeUndefined();
    for (const c of small) {
      expect(c.options).toMatchObject({ intraOpNumThreads: 1, interOpNumThreads: 1, extra: { "session.intra_op.allow_spinning": "0" } });
    }
    expect(rt.created.map((c) => c.role)).toEqual(["noise-predictor", "auxiliary", "auxiliary", "auxiliary"]);
  });

  test("configured: UNet threads, spinning and pinning; a plain number is the UNet's threads", async () => {
    const { backends, calls } = recordingBackends(8);
    const rt = new OnnxRuntime({ backends, executionProvider: "cpu", threads: { noisePredictor: 3, auxiliary: 2, spinning: { noisePredictor: true }, pin: true } });
    await (await rt.load(emoji, "unet/model.onnx", { role: "noise-predictor" })).ready();
    await (await rt.load(emoji, "text_encoder/model.onnx")).ready();
    expect(calls[0]!.options).toMatchObject({ intraOpNumThreads: 3, extra: { "session.intra_op.allow_spinning": "1", "session.intra_op_thread_affinities": "2;3" } });
    expect(calls[1]!.options).toMatchObject({ intraOpNumThreads: 2, extra: { "session.intra_op.allow_spinning": "0" } });
    expect(calls[1]!.options.extra["session.intra_op_thread_affinities"]).toBeUndefined();

    expect(threadPolicy(4, 16)).toEqual({ noisePredictor: { intraOpThreads: 4, spinning: false }, auxiliary: { intraOpThreads: 1, spinning: false } });
    // A host that does not say how many cores it has leaves the UNet's count to onnxruntime.
    expect(threadPolicy(undefined, undefined).noisePredictor.intraOpThreads).toBe(0);
    expect(threadOptionsFromFlags({ threads: "2", threadsAux: "1", spin: true })).toEqual({ noisePredictor: 2, auxiliary: 1, spinning: { noisePredictor: true } });
    expect(threadOptionsFromFlags({})).toBeUndefined();
    expect(() => threadOptionsFromFlags({ threads: "0" })).toThrow(/--threads: must be a whole number ≥ 1, got "0"/);
    expect(() => threadPolicy({ auxiliary: 1.5 }, 2)).toThrow(/threads\.auxiliary: must be a whole number from 1 to 1024, got 1\.5/);
  });

  test("a second load of the same file gets the same model (and session), whatever role it names", async () => {
    const { backends, calls } = recordingBackends(4);
    const rt = new OnnxRuntime({ backends, executionProvider: "cpu" });
    const unet = await (await rt.load(emoji, "unet/model.onnx", { role: "noise-predictor" })).ready();
    expect(await rt.load(emoji, "unet/model.onnx")).toBe(unet);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.options.intraOpNumThreads).toBe(4);
  });

  test("onnxruntime-web sessions get no native thread options (its one pool is env.wasm.numThreads)", async () => {
    const { backends, calls } = recordingBackends(8);
    const rt = new OnnxRuntime({ backends, executionProvider: "wasm" });
    await (await rt.load(emoji, "unet/model.onnx", { role: "noise-predictor" })).ready();
    expect(calls[0]!.options).toEqual({ executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  });
});

describe("sessions are created by the nodes that run", () => {
  test("opening a pipeline reads and checks its models but creates no session", async () => {
    const { backends, calls } = recordingBackends(2);
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, adapter: { host: "bun", fileSource, onnxBackends: backends } });
    await dg.openPipeline("pipelines/emoji-64.json");
    expect(calls).toHaveLength(0);
    await dg.dispose();
  }, 60_000);

  test("opening emoji-64 reads each model file and its tokenizer once (the prompt and negative encoders share it), and nothing of the metric's evaluation CLIP", async () => {
    const reads = new Map<string, number>();
    const counting = (dir: string) => {
      const wrap = (s: ReturnType<typeof fileSource>): ReturnType<typeof fileSource> => ({
        ...s,
        read: async (p) => (reads.set(`${s.root}/${p}`, (reads.get(`${s.root}/${p}`) ?? 0) + 1), s.read(p)),
        sub: (p) => wrap(s.sub(p)),
      });
      return wrap(fileSource(dir));
    };
    const { backends } = recordingBackends(2);
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, adapter: { host: "bun", fileSource: counting, onnxBackends: backends } });
    await dg.openPipeline("pipelines/emoji-64.json");
    const tokenizerReads = [...reads].filter(([f]) => f.endsWith("tokenizer.json"));
    expect(tokenizerReads).toEqual([["models/emoji-64/tokenizer/tokenizer.json", 1]]);
    expect([...reads].filter(([f]) => f.endsWith(".onnx")).every(([, n]) => n === 1)).toBe(true);
    // The clip-score node is made by the first run that asks for metrics.
    expect([...reads.keys()].filter((f) => f.includes("clip_eval"))).toEqual([]);
    await dg.dispose();
  }, 60_000);

  test("a cold text-to-image run encodes each text once: the prompt, and the empty negative prompt that is also the padding", async () => {
    const rows: number[] = []; // input_ids rows of each text-encoder call
    const counting: OnnxBackends = {
      ...onnxBackends,
      native: async () => {
        const ort = await onnxBackends.native!();
        return {
          ...ort,
          InferenceSession: {
            async create(model: unknown, options?: Record<string, unknown>) {
              const s = await ort.InferenceSession.create(model as never, options as never);
              if (!s.inputNames.includes("input_ids")) return s;
              const run = s.run.bind(s);
              s.run = ((feeds: Record<string, { dims: readonly number[] }>, ...rest: unknown[]) => (rows.push(feeds.input_ids!.dims[0]!), (run as (...a: unknown[]) => unknown)(feeds, ...rest))) as typeof s.run;
              return s;
            },
          },
        } as OrtModuleLike;
      },
    };
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, graphCache: false, adapter: { host: "bun", fileSource, onnxBackends: counting } });
    try {
      const p = await dg.openPipeline("pipelines/emoji-64.json");
      await p.run({ prompt: "red heart", steps: 2, seed: 7 });
      expect(rows).toEqual([1, 1]); // "red heart", then "" (the negative prompt, and every node's padding)
      await p.run({ prompt: "rocket", negativePrompt: "", steps: 2, seed: 7 });
      expect(rows).toEqual([1, 1, 1]); // only the new prompt: "" is already known
    } finally {
      await dg.dispose();
    }
  }, 60_000);

  test("the shared empty-text encoding is per config: a pipeline with another window length, opened after the default one on the same models, draws what it draws alone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "diffgraph-empty-"));
    try {
      const doc = JSON.parse(readFileSync("pipelines/tiny-sd.json", "utf8"));
      doc.model = join(process.cwd(), "models/tiny-sd");
      const long = structuredClone(doc);
      for (const n of ["prompt", "negative"]) long.nodes[n].config = { maxLength: 32 };
      writeFileSync(join(dir, "default.json"), JSON.stringify(doc));
      writeFileSync(join(dir, "long.json"), JSON.stringify(long));
      const input = { prompt: "red heart", steps: 2, seed: 7 };
      const mk = () => createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, graphCache: false });
      const alone = await mk();
      const expected = (await (await alone.openPipeline(join(dir, "long.json"))).run(input)).images;
      await alone.dispose();
      const both = await mk();
      try {
        await (await both.openPipeline(join(dir, "default.json"))).run(input);
        const got = (await (await both.openPipeline(join(dir, "long.json"))).run(input)).images;
        expect(got.dims).toEqual(expected.dims);
        expect(Array.from(got.data)).toEqual(Array.from(expected.data));
      } finally {
        await both.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("a UNet whose file leaves the output channels symbolic is opened without a session when unet/config.json gives out_channels", async () => {
    // tiny-lcm's and tiny-sd-inpaint's exports declare out_sample with symbolic dims; their configs say out_channels 4.
    for (const model of ["models/tiny-lcm", "models/tiny-sd-inpaint"]) {
      const { backends, calls } = recordingBackends(2);
      const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, adapter: { host: "bun", fileSource, onnxBackends: backends } });
      await dg.openPipeline(model);
      expect(calls).toHaveLength(0);
      await dg.dispose();
    }
    // tiny-sd has no unet/config.json: its session is created at open, for onnxruntime's inferred output shape.
    const { backends, calls } = recordingBackends(2);
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, adapter: { host: "bun", fileSource, onnxBackends: backends } });
    await dg.openPipeline("models/tiny-sd");
    expect(calls.map((c) => c.producer)).toEqual([UNET]);
    await dg.dispose();
  }, 60_000);

  test("out_channels taken from unet/config.json is checked against the UNet's first output", async () => {
    const dir = mkdtempSync(join(tmpdir(), "diffgraph-outch-"));
    try {
      cpSync("models/tiny-lcm", dir, { recursive: true });
      rmSync(join(dir, "manifest.sha256.json"), { force: true });
      const cfgFile = join(dir, "unet", "config.json");
      writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, "utf8")), out_channels: 3 }));
      const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, graphCache: false });
      try {
        const p = await dg.openPipeline(dir);
        await expect(p.run({ prompt: "a", steps: 1 })).rejects.toThrow(/unet\/config\.json: out_channels: 3, but .*unet\/model\.onnx returns 4 channels/);
      } finally {
        await dg.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("a metric node is made by the first run that asks for metrics: a missing evaluation CLIP stops neither the open nor a run without metrics, a metrics run names the file, and one after the file is back succeeds", async () => {
    // emoji-64 through links, its evaluation CLIP's text tower missing.
    const dir = mkdtempSync(join(tmpdir(), "dg-lazy-metric-"));
    const models = join(dir, "emoji-64");
    mkdirSync(join(models, "clip_eval"), { recursive: true });
    for (const f of readdirSync("models/emoji-64")) if (f !== "clip_eval") symlinkSync(resolve("models/emoji-64", f), join(models, f));
    for (const f of readdirSync("models/emoji-64/clip_eval")) if (f !== "text_model.onnx") symlinkSync(resolve("models/emoji-64/clip_eval", f), join(models, "clip_eval", f));
    const doc = JSON.parse(readFileSync("pipelines/emoji-64.json", "utf8"));
    doc.model = models;
    const pipelineFile = join(dir, "p.json");
    writeFileSync(pipelineFile, JSON.stringify(doc));
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, graphCache: false });
    try {
      const p = await dg.openPipeline(pipelineFile);
      const r = await p.run({ prompt: "red heart", steps: 1, seed: 7 });
      expect(r.images.dims).toEqual([1, 3, 64, 64]);
      await expect(p.run({ prompt: "red heart", steps: 1, seed: 7 }, { metrics: true })).rejects.toThrow(/clip_eval\/text_model\.onnx/);
      expect((await p.run({ prompt: "red heart", steps: 1, seed: 7 })).images.dims).toEqual([1, 3, 64, 64]);
      // The failure was not kept: with the file back, the next metrics run makes the node and scores.
      symlinkSync(resolve("models/emoji-64/clip_eval/text_model.onnx"), join(models, "clip_eval", "text_model.onnx"));
      const m = await p.run({ prompt: "red heart", steps: 1, seed: 7 }, { metrics: true });
      expect(Object.keys(m.metrics).sort()).toEqual(["clip.max", "clip.min", "clip.score"]);
    } finally {
      await dg.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test("emoji-64: text-to-image loads three models; img2img adds the VAE encoder; metrics: true adds the CLIP towers", async () => {
    const dg = await createDiffgraph({ registry: builtinRegistry(), executionProvider: "cpu", log: () => {}, graphCache: false });
    try {
      const p = await dg.openPipeline("pipelines/emoji-64.json");
      const loaded = () => dg.onnx.created.map((c) => c.file.replace(/^.*emoji-64\//, ""));
      expect(loaded()).toEqual([]);
      const r = await p.run({ prompt: "red heart", steps: 2, seed: 7 });
      expect(loaded().sort()).toEqual(["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]);
      expect(r.metrics).toEqual({});
      expect(dg.onnx.created.find((c) => c.file.endsWith("unet/model.onnx"))!.role).toBe("noise-predictor");

      await p.run({ prompt: "red heart", steps: 2, seed: 7, image: r.images, strength: 0.5 });
      expect(loaded()).toContain("vae_encoder/model.onnx");
      expect(loaded()).toHaveLength(4);

      const m = await p.run({ prompt: "red heart", steps: 2, seed: 7 }, { metrics: true });
      expect(Object.keys(m.metrics).sort()).toEqual(["clip.max", "clip.min", "clip.score"]);
      expect(loaded().slice(4).sort()).toEqual(["clip_eval/image_model.onnx", "clip_eval/text_model.onnx"]);
      // Warm: the same sessions serve every later run (a server keeps what it loaded).
      await p.run({ prompt: "red heart", steps: 2, seed: 8 }, { metrics: true });
      expect(dg.onnx.created).toHaveLength(6);
      // check() is a dry run of what a job runs: no new session.
      await p.check();
      expect(dg.onnx.created).toHaveLength(6);
    } finally {
      await dg.dispose();
    }
  }, 60_000);

  test("a session onnxruntime refuses fails the first run with the file named, and the next run tries again", async () => {
    let refuse = true;
    const { backends } = recordingBackends(2);
    const native = backends.native!;
    const flaky: OnnxBackends = {
      ...backends,
      native: async () => {
        const ort = await native();
        return {
          ...ort,
          InferenceSession: {
            create: async (m, o) => {
              if (refuse) throw new Error("Load model from memory failed: Protobuf parsing failed.");
              return ort.InferenceSession.create(m, o);
            },
          },
        };
      },
    };
    const rt = new OnnxRuntime({ backends: flaky, executionProvider: "cpu" });
    const m = await rt.load(emoji, "vae_decoder/model.onnx");
    await expect(m.ready()).rejects.toThrow(/^models\/emoji-64\/vae_decoder\/model\.onnx: is not a valid ONNX model or is truncated \(Load model from memory failed/);
    expect(m.created).toBe(false);
    expect(() => m.backend).toThrow(/no session yet/);
    refuse = false;
    await m.ready();
    expect(m.backend).toBe("onnxruntime-node");
  });
});

test("the real onnxruntime-node accepts the policy's options", async () => {
  const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", graphCache: false, threads: { noisePredictor: 2, pin: true, spinning: true } });
  const m = await (await rt.load(fileSource("models/tiny-sd"), "unet/model.onnx", { role: "noise-predictor" })).ready();
  expect(m.provider).toBe("cpu");
  await rt.dispose();
}, 60_000);
