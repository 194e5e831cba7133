/**
 * A model file the backend rejects with an error the ONNX layer does not recognise must fail alone:
 * once a backend has created a session it works, so the failure is the file's and names it, and the
 * files after it still load (an API server with one bad pipeline among several).
 */
import { expect, test } from "bun:test";
import { memorySource, ModelFileError } from "../../core/model-source.ts";
import { OnnxRuntime, type OrtModuleLike, type OrtSessionLike } from "../../core/onnx.ts";

/** A fake onnxruntime: a file whose second byte is 0xff fails with a message no pattern matches. */
const fakeOrt: OrtModuleLike = {
  InferenceSession: {
    async create(bytes: Uint8Array): Promise<OrtSessionLike> {
      if (bytes[1] === 0xff) throw new Error("Unexpected node type 0x7f in subgraph");
      return {
        inputNames: ["x"],
        outputNames: ["y"],
        inputMetadata: [{ name: "x", isTensor: true, type: "float32", shape: [1] }],
        outputMetadata: [{ name: "y", isTensor: true, type: "float32", shape: [1] }],
        run: async () => ({}),
        release: async () => {},
      };
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
  const model = (second: number) => Uint8Array.from([0x08, second, ...new Array(30).fill(1)]);
  const files = memorySource({ "a.onnx": model(1), "bad.onnx": model(0xff), "b.onnx": model(2) }, "m");
  const onnx = new OnnxRuntime({ backends: { host: "test", native: async () => fakeOrt }, executionProvider: "cpu" });
  expect((await onnx.load(files, "a.onnx")).file).toBe("m/a.onnx");
  const err = await onnx.load(files, "bad.onnx").catch((e) => e);
  expect(err).toBeInstanceOf(ModelFileError);
  expect(err.message).toStartWith("m/bad.onnx: ");
  expect((await onnx.load(files, "b.onnx")).file).toBe("m/b.onnx");
});
