/**
 * A model file the backend rejects with an error the ONNX layer does not recognise must fail alone:
 * once a backend has created a session it works, so the failure is the file's and names it, and the
 * files after it still load (an API server with one bad pipeline among several).
 */
import { expect, test } from "bun:test";
import { memorySource, ModelFileError } from "../../core/model-source.ts";
import { OnnxRuntime, type OrtModuleLike, type OrtSessionLike, type OrtTensorLike } from "../../core/onnx.ts";
import { fakeSessionFor, onnxModelBytes, producerOf } from "../onnx-bytes.ts";

/** A fake onnxruntime: a file made by producer "bad" fails with a message no pattern matches. */
const fakeOrt: OrtModuleLike = {
  InferenceSession: {
    async create(bytes): Promise<OrtSessionLike> {
      if (producerOf(bytes as Uint8Array) === "bad") throw new Error("Unexpected node type 0x7f in subgraph");
      return fakeSessionFor(bytes as Uint8Array);
    },
  },
  Tensor: class {
    constructor(
      readonly type: string,
      readonly data: never,
      readonly dims: readonly number[],
    ) {}
  } as never,
};

test("an unrecognised load error after a working load names the file and leaves the backend usable", async () => {
  const model = (producer: string) => onnxModelBytes([["x", "float32", [1]]], [["y", "float32", [1]]], producer);
  const files = memorySource({ "a.onnx": model("a"), "bad.onnx": model("bad"), "b.onnx": model("b") }, "m");
  const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => fakeOrt }, executionProvider: "cpu" });
  // Sessions are created on first use: the file parses at load, onnxruntime refuses it at ready().
  expect((await (await onnx.load(files, "a.onnx")).ready()).file).toBe("m/a.onnx");
  const bad = await onnx.load(files, "bad.onnx");
  const err = await bad.ready().catch((e) => e);
  expect(err).toBeInstanceOf(ModelFileError);
  expect(err.message).toStartWith("m/bad.onnx: is not a valid ONNX model or is truncated (Unexpected node type");
  expect((await (await onnx.load(files, "b.onnx")).ready()).file).toBe("m/b.onnx");
});

test("a session whose run fails, or returns without an output the model declares, is an error naming the file (the inputs' shapes, the missing output)", async () => {
  const model = onnxModelBytes([["x", "float32", [1]]], [["y", "float32", [1]]], "p");
  const files = memorySource({ "m.onnx": model }, "m");
  let answer: "throw" | "nothing" | "y" = "throw";
  const ort: OrtModuleLike = {
    ...fakeOrt,
    InferenceSession: {
      async create(bytes): Promise<OrtSessionLike> {
        const s = await fakeOrt.InferenceSession.create(bytes);
        return {
          ...s,
          async run(feeds): Promise<Record<string, OrtTensorLike>> {
            if (answer === "throw") throw new Error("shape mismatch deep in a kernel");
            return answer === "nothing" ? {} : { y: { type: "float32", dims: [1], data: Float32Array.of(Number((feeds.x!.data as Float32Array)[0]) * 2) } };
          },
        };
      },
    },
  };
  const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => ort }, executionProvider: "cpu" });
  const m = await onnx.load(files, "m.onnx");
  const feeds = { x: { dims: [1], data: Float32Array.of(3) } };
  await expect(m.run(feeds)).rejects.toThrow(/^m\/m\.onnx: inference failed with inputs x: float32\[1\]: shape mismatch deep in a kernel$/);
  answer = "nothing";
  await expect(m.run(feeds)).rejects.toThrow(/^m\/m\.onnx: produced no output "y"$/);
  answer = "y";
  const out = await m.run(feeds);
  expect(Array.from(out.y!.data)).toEqual([6]);
  expect(out.y!.dims).toEqual([1]);
});

test("a float32 array fed again with the same dims keeps its ORT tensor, which reads the array as it is now; another array or other dims get a new one", async () => {
  const model = onnxModelBytes([["x", "float32", ["a"]], ["encoder_hidden_states", "float32", ["b", "c"]]], [["y", "float32", ["a"]]], "p");
  const made: string[] = [];
  const seen: number[][] = [];
  const seenDims: number[][] = [];
  let created = 0;
  const ort: OrtModuleLike = {
    InferenceSession: {
      async create(bytes): Promise<OrtSessionLike> {
        created++;
        return fakeSessionFor(bytes as Uint8Array, async (feeds) => {
          // Like onnxruntime's binding, read the data when the run happens.
          seen.push(Array.from(feeds.encoder_hidden_states!.data as Float32Array));
          seenDims.push([...feeds.encoder_hidden_states!.dims]);
          return { y: { type: "float32", dims: feeds.x!.dims, data: feeds.x!.data } };
        });
      },
    },
    Tensor: class {
      constructor(
        readonly type: string,
        readonly data: Float32Array,
        readonly dims: readonly number[],
      ) {
        made.push(`${type}[${dims.join(",")}]`);
      }
    } as never,
  };
  const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => ort }, executionProvider: "cpu" });
  const m = await onnx.load(memorySource({ "m.onnx": model }, "m"), "m.onnx");
  // A feed the model does not take fails before the session is made.
  await expect(m.run({ nope: { dims: [1], data: Float32Array.of(0) } })).rejects.toThrow(/^m\/m\.onnx: has no input "nope"/);
  expect(created).toBe(0);
  const e = Float32Array.of(1, 2, 3, 4);
  const x = Float32Array.of(5);
  const dims = [2, 2];
  for (let i = 0; i < 3; i++) await m.run({ x: { dims: [1], data: x }, encoder_hidden_states: { dims, data: e } });
  // Both feeds are the same arrays with the same dims each call: one tensor each for the three calls.
  expect(made).toEqual(["float32[1]", "float32[2,2]"]);
  e[0] = 9; // changed in place: the kept tensor wraps the array, so the next run reads 9
  dims[0] = 4; // and the caller's dims array, changed afterwards, is not the kept tensor's
  await m.run({ x: { dims: [1], data: x }, encoder_hidden_states: { dims: [2, 2], data: e } });
  expect(seen.at(-1)).toEqual([9, 2, 3, 4]);
  expect(seenDims.at(-1)).toEqual([2, 2]);
  expect(made).toHaveLength(2);
  made.length = 0;
  await m.run({ x: { dims: [1], data: x }, encoder_hidden_states: { dims: [1, 4], data: e } }); // same array, other dims
  await m.run({ x: { dims: [1], data: Float32Array.of(6) }, encoder_hidden_states: { dims: [1, 4], data: Float32Array.from(e) } }); // other arrays
  expect(made).toEqual(["float32[1,4]", "float32[1]", "float32[1,4]"]);
  expect(seen.at(-1)).toEqual([9, 2, 3, 4]);
  // Two arrays alternating (the kept tensors are per array, not per input): no new tensor either.
  const e2 = Float32Array.from(e);
  made.length = 0;
  for (let i = 0; i < 4; i++) await m.run({ x: { dims: [1], data: x }, encoder_hidden_states: { dims: [1, 4], data: i % 2 ? e : e2 } });
  expect(made).toEqual(["float32[1,4]"]);
  expect(created).toBe(1);
});

test('"auto" tries onnxruntime-node\'s WebGPU provider with a one-node model first: no adapter, and no model is handed to it; with one, models are made there', async () => {
  const model = onnxModelBytes([["x", "float32", ["batch"]]], [["y", "float32", ["batch"]]], "real");
  const files = memorySource({ "a.onnx": model, "b.onnx": model }, "m");
  for (const adapter of [false, true]) {
    const calls: string[] = [];
    const ort: OrtModuleLike = {
      ...fakeOrt,
      InferenceSession: {
        async create(bytes, options): Promise<OrtSessionLike> {
          const provider = String((options as { executionProviders: string[] }).executionProviders[0]);
          calls.push(`${provider}:${producerOf(bytes as Uint8Array) || "probe"}`);
          if (provider === "webgpu" && !adapter) throw new Error("webgpu_context.cc:136 Failed to get a WebGPU adapter: No supported adapters");
          return fakeSessionFor(bytes as Uint8Array);
        },
      },
    };
    const logs: string[] = [];
    const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => ort }, executionProvider: "auto", log: (m) => logs.push(m), graphCache: false });
    await (await onnx.load(files, "a.onnx")).ready();
    await (await onnx.load(files, "b.onnx")).ready();
    if (adapter) {
      expect(calls).toEqual(["webgpu:probe", "webgpu:real", "webgpu:real"]);
      expect(onnx.providersInUse).toEqual(["onnxruntime-node/webgpu"]);
    } else {
      expect(calls).toEqual(["webgpu:probe", "cpu:real", "cpu:real"]);
      expect(logs).toEqual(['onnx: executionProvider "auto" falls back to onnxruntime-node/cpu (onnxruntime-node/webgpu: Failed to get a WebGPU adapter: No supported adapters)']);
    }
  }
});
