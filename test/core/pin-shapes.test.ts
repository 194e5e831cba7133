/**
 * Sessions made for the sizes of their first run (`OnnxRuntimeOptions.pinShapes`, what the
 * `generate` CLI turns on): the model's named symbolic axes become static in the bytes onnxruntime
 * is handed (`pinSymbolicDims`: onnxruntime-node's binding has no `freeDimensionOverrides`), a run
 * of other sizes gets a second, unpinned session, and the outputs are the unpinned model's.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { fileSource, onnxBackends } from "../../core/adapters/node.ts";
import { memorySource } from "../../core/model-source.ts";
import { OnnxFormatError, pinSymbolicDims, readOnnxGraph } from "../../core/onnx-graph.ts";
import { OnnxRuntime, type OrtModuleLike, type OrtSessionLike } from "../../core/onnx.ts";
import { maxAbsDiff } from "../helpers.ts";
import { fakeSessionFor, onnxModelBytes } from "../onnx-bytes.ts";

const shapes = (bytes: Uint8Array) => {
  const g = readOnnxGraph(bytes);
  return { inputs: g.inputs.map((i) => i.shape), outputs: g.outputs.map((o) => o.shape) };
};

describe("pinSymbolicDims", () => {
  const model = onnxModelBytes([["x", "float32", ["batch", 3, "n"]], ["t", "float32", ["batch"]]], [["y", "float32", ["batch", 3, ""]]]);

  test("fixes the named axes of inputs and outputs, and nothing else", () => {
    const pinned = pinSymbolicDims(model, { batch: 2 });
    expect(shapes(pinned)).toEqual({ inputs: [[2, 3, "n"], [2]], outputs: [[2, 3, ""]] });
    expect(shapes(pinSymbolicDims(model, { batch: 300, n: 5 }))).toEqual({ inputs: [[300, 3, 5], [300]], outputs: [[300, 3, ""]] });
    // The rest of the model is copied byte for byte: the same opsets, IR version, node count.
    const [a, b] = [readOnnxGraph(model), readOnnxGraph(pinned)];
    expect([b.irVersion, b.opsets, b.nodeCount]).toEqual([a.irVersion, a.opsets, a.nodeCount]);
  });

  test("returns the bytes themselves when no axis has a named size", () => {
    expect(pinSymbolicDims(model, {})).toBe(model);
    expect(pinSymbolicDims(model, { height: 64 })).toBe(model);
  });

  test("a size that is not a positive integer, or a cut model, is an error", () => {
    expect(() => pinSymbolicDims(model, { batch: 0 })).toThrow('pinSymbolicDims: the size of "batch" must be a positive integer, got 0');
    expect(() => pinSymbolicDims(model, { batch: 1.5 })).toThrow(OnnxFormatError);
    // Cut inside the graph (the opset_import after it is 4 bytes): the graph's length runs past the end.
    expect(() => pinSymbolicDims(model.subarray(0, Math.floor(model.length / 2)), { batch: 2 })).toThrow(OnnxFormatError);
  });

  test("value_info is edited too, and a dimension's denotation is kept", () => {
    const withInfo = onnxModelBytes(
      [["x", "float32", [{ param: "batch", denotation: "DATA_BATCH" }, 3]]],
      [["y", "float32", ["batch", 3]]],
      "p",
      [["hidden", "float32", ["batch", "n"]]],
    );
    const text = (b: Uint8Array) => new TextDecoder("latin1").decode(b);
    expect(text(withInfo).split("batch").length - 1).toBe(3);
    const pinned = pinSymbolicDims(withInfo, { batch: 4 });
    expect(text(pinned)).not.toContain("batch"); // input, output and value_info: none left
    expect(text(pinned)).toContain("DATA_BATCH");
    expect(text(pinned)).toContain("n");
    expect(shapes(pinned)).toEqual({ inputs: [[4, 3]], outputs: [[4, 3]] });
    // The denotation sits in the same Dimension as the new size: the edit is that field alone.
    expect(pinned.length).toBe(withInfo.length - 3 * ("batch".length + 2) + 3 * 2);
  });

  test("onnxruntime reads the pinned UNet as static, folds its shape arithmetic, and computes the same outputs", async () => {
    const bytes = new Uint8Array(readFileSync("models/emoji-64/unet/model.onnx"));
    const pinned = pinSymbolicDims(bytes, { batch: 2, sequence: 16 });
    const dir = mkdtempSync(join(tmpdir(), "dg-pin-"));
    try {
      const make = (b: Uint8Array, name: string) => ort.InferenceSession.create(b, { executionProviders: ["cpu"], graphOptimizationLevel: "all", optimizedModelFilePath: join(dir, name), logSeverityLevel: 3, intraOpNumThreads: 1 });
      const [free, fixed] = [await make(bytes, "free.onnx"), await make(pinned, "fixed.onnx")];
      // onnxruntime's own reading of the pinned file: static inputs and outputs.
      expect(fixed.inputMetadata.map((m) => (m as { shape: unknown }).shape)).toEqual([[2, 4, 8, 8], [2], [2, 16, 128]]);
      expect(free.inputMetadata.map((m) => (m as { shape: unknown }).shape)).toEqual([["batch", 4, 8, 8], ["batch"], ["batch", "sequence", 128]]);
      const nodes = (f: string) => readOnnxGraph(new Uint8Array(readFileSync(join(dir, f)))).nodeCount;
      expect(nodes("fixed.onnx")).toBeLessThan(nodes("free.onnx") - 50); // 541 against 663 here
      const feeds = {
        sample: new ort.Tensor("float32", Float32Array.from({ length: 2 * 4 * 64 }, (_, i) => Math.sin(i)), [2, 4, 8, 8]),
        timestep: new ort.Tensor("float32", Float32Array.of(500, 500), [2]),
        encoder_hidden_states: new ort.Tensor("float32", Float32Array.from({ length: 2 * 16 * 128 }, (_, i) => Math.cos(i) / 4), [2, 16, 128]),
      };
      const [a, b] = [await free.run(feeds), await fixed.run(feeds)];
      expect(maxAbsDiff(a.out_sample!.data as Float32Array, b.out_sample!.data as Float32Array)).toBeLessThan(1e-5);
      await Promise.all([free.release(), fixed.release()]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("OnnxRuntime pinShapes", () => {
  const model = onnxModelBytes([["x", "float32", ["batch", 3]], ["t", "float32", ["batch"]]], [["y", "float32", ["batch", 3]]]);
  const feeds = (rows: number) => ({ x: { dims: [rows, 3], data: new Float32Array(rows * 3).fill(rows) }, t: { dims: [rows], data: new Float32Array(rows) } });

  /**
   * A fake onnxruntime that records what each session was created from, which session ran and which
   * were released; `refuseStatic`: it refuses any model whose first input's first axis is a number.
   */
  function recording(refuseStatic = false) {
    const created: { inputs: unknown; overrides: unknown }[] = [];
    const ran: number[] = [];
    const released: number[] = [];
    const fake: OrtModuleLike = {
      InferenceSession: {
        async create(bytes, options): Promise<OrtSessionLike> {
          const id = created.length;
          const inputs = shapes(bytes as Uint8Array).inputs;
          if (refuseStatic && typeof inputs[0]![0] === "number") throw new Error("ShapeInferenceError: mismatch in some kernel");
          created.push({ inputs, overrides: (options as { freeDimensionOverrides?: unknown }).freeDimensionOverrides });
          const session = fakeSessionFor(bytes as Uint8Array, async (f) => {
            ran.push(id);
            return { y: { type: "float32", dims: f.x!.dims, data: f.x!.data } };
          });
          return { ...session, release: async () => void released.push(id) };
        },
      },
      Tensor: class {
        constructor(
          readonly type: string,
          readonly data: Float32Array,
          readonly dims: readonly number[],
        ) {}
      } as never,
    };
    const onnx = (pinShapes: boolean, pinMaxModelBytes?: number) =>
      new OnnxRuntime({ backends: { host: "test", native: async () => fake }, executionProvider: "cpu", pinShapes, graphCache: false, ...(pinMaxModelBytes ? { pinMaxModelBytes } : {}) });
    return { created, ran, released, onnx };
  }

  test("the first run's sizes make the session; other sizes get a second, unpinned one; each size keeps its session", async () => {
    const r = recording();
    const m = await r.onnx(true).load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
    expect((await m.run(feeds(2))).y!.dims).toEqual([2, 3]);
    expect(r.created).toEqual([{ inputs: [[2, 3], [2]], overrides: { batch: 2 } }]);
    // The model still reports the axis as free: only this session was made for 2.
    expect(m.inputs.map((i) => i.shape)).toEqual([["batch", 3], ["batch"]]);
    expect(m.outputs.map((o) => o.shape)).toEqual([["batch", 3]]);
    const one = await m.run(feeds(1));
    expect([one.y!.dims, Array.from(one.y!.data)]).toEqual([[1, 3], [1, 1, 1]]);
    expect(r.created[1]).toEqual({ inputs: [["batch", 3], ["batch"]], overrides: undefined });
    await m.run(feeds(2));
    await m.run(feeds(1));
    await m.run(feeds(3));
    expect(r.ran).toEqual([0, 1, 0, 1, 1]);
    expect(r.created).toHaveLength(2);
  });

  test("two first runs at once: the session is made for the first one's sizes, the other's go to the unpinned session; release frees both, and a later run is refused", async () => {
    const r = recording();
    const m = await r.onnx(true).load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
    const [a, b] = await Promise.all([m.run(feeds(2)), m.run(feeds(1))]);
    expect([a.y!.dims, b.y!.dims]).toEqual([[2, 3], [1, 3]]);
    expect(r.created).toEqual([
      { inputs: [[2, 3], [2]], overrides: { batch: 2 } },
      { inputs: [["batch", 3], ["batch"]], overrides: undefined },
    ]);
    await m.release();
    expect(r.released.sort()).toEqual([0, 1]);
    await expect(m.run(feeds(3))).rejects.toThrow("m/m.onnx: the model was released");
    expect(r.created).toHaveLength(2);
  });

  test("a model onnxruntime refuses with its first run's sizes is made as the file is, and the backend stays in use", async () => {
    const r = recording(true);
    const rt = r.onnx(true);
    const m = await rt.load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
    expect((await m.run(feeds(2))).y!.dims).toEqual([2, 3]);
    expect(r.created).toEqual([{ inputs: [["batch", 3], ["batch"]], overrides: undefined }]);
    const n = await rt.load(memorySource({ "n.onnx": model }, "n"), "n.onnx");
    await n.run(feeds(2));
    expect(rt.providersInUse).toEqual(["onnxruntime-node/cpu"]);
    expect(r.ran).toEqual([0, 1]);
  });

  test("a plugin's freeDimensions and the pins are fixed together", async () => {
    const r = recording();
    const two = onnxModelBytes([["x", "float32", ["batch", "n"]]], [["y", "float32", ["batch", "n"]]]);
    const m = await r.onnx(true).load(memorySource({ "m.onnx": two }, "m"), "m.onnx", { freeDimensions: { n: 3 } });
    expect(m.inputs[0]!.shape).toEqual(["batch", 3]);
    await m.run({ x: { dims: [2, 3], data: new Float32Array(6) } });
    expect(r.created).toEqual([{ inputs: [[2, 3]], overrides: { batch: 2, n: 3 } }]);
  });

  test("off (the default), the model's one session is made from the file as it is", async () => {
    const r = recording();
    const m = await r.onnx(false).load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
    await m.run(feeds(2));
    await m.run(feeds(1));
    expect(r.created).toEqual([{ inputs: [["batch", 3], ["batch"]], overrides: undefined }]);
    expect(r.ran).toEqual([0, 0]);
  });

  test("a model file larger than pinMaxModelBytes keeps its one unpinned session (a cache entry per shape would be as big as the model)", async () => {
    for (const [limit, pinned] of [[model.length, true], [model.length - 1, false]] as const) {
      const r = recording();
      const m = await r.onnx(true, limit).load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
      await m.run(feeds(2));
      expect(r.created).toEqual([{ inputs: pinned ? [[2, 3], [2]] : [["batch", 3], ["batch"]], overrides: pinned ? { batch: 2 } : undefined }]);
    }
  });

  test("feeds that disagree on an axis leave it free; a feed of the wrong rank is the usual error", async () => {
    const r = recording();
    const rt = r.onnx(true);
    const m = await rt.load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
    await m.run({ x: { dims: [2, 3], data: new Float32Array(6) }, t: { dims: [1], data: new Float32Array(1) } });
    expect(r.created).toEqual([{ inputs: [["batch", 3], ["batch"]], overrides: undefined }]);
    const bad = await rt.load(memorySource({ "n.onnx": model }, "n"), "n.onnx");
    await expect(bad.run({ x: { dims: [6], data: new Float32Array(6) }, t: { dims: [2], data: new Float32Array(2) } })).rejects.toThrow('n/n.onnx: input "x" has rank 2 [batch,3] but got [6]');
  });

  test("onnxruntime-node: a pinned session's optimized graph is cached apart from the unpinned one, static, and loaded from the cache next time", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dg-pin-cache-"));
    try {
      const source = fileSource("models/emoji-64");
      const run = async (rows: number) => {
        const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", threads: 1, pinShapes: true, graphCache: dir });
        const m = await rt.load(source, "vae_decoder/model.onnx");
        const latents = { dims: [rows, 4, 8, 8], data: Float32Array.from({ length: rows * 256 }, (_, i) => Math.sin(i)) };
        const out = await m.run({ [m.inputs[0]!.name]: latents });
        await m.release();
        return { out: Object.values(out)[0]!, from: rt.created.map((c) => c.from) };
      };
      const first = await run(1);
      expect(first.from).toEqual(["model"]);
      const again = await run(1);
      expect(again.from).toEqual(["cache"]);
      expect(maxAbsDiff(first.out.data, again.out.data)).toBe(0);
      const two = await run(2);
      expect(two.from).toEqual(["model"]); // batch 2 is its own entry
      expect(maxAbsDiff(two.out.data.subarray(0, first.out.data.length), first.out.data)).toBeLessThan(1e-5);
      const graphs = readdirSync(dir).filter((f) => f.endsWith(".onnx") && !f.includes(".tmp."));
      expect(graphs.map((f) => shapes(new Uint8Array(readFileSync(join(dir, f)))).inputs[0]![0]).sort()).toEqual([1, 2]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
