import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { memorySource, ModelFileError } from "../../core/model-source.ts";
import { OnnxRuntime } from "../../core/onnx.ts";
import { onnxBackends } from "../../core/adapters/node.ts";
import { fileSource } from "../../core/adapters/node.ts";
import { loadTiny, testRuntime, tinyDoc } from "../helpers.ts";

const unet = readFileSync("models/tiny-sd/unet/model.onnx");

describe("ONNX runtime layer", () => {
  test("missing, truncated and non-ONNX files give an error naming the file", async () => {
    const rt = testRuntime();
    const src = memorySource({ "trunc.onnx": unet.subarray(0, 200), "text.onnx": "hello, I am not a model at all", "empty.onnx": new Uint8Array(0) }, "mem");
    await expect(rt.load(src, "nope.onnx")).rejects.toThrow(/mem\/nope\.onnx: file not found/);
    await expect(rt.load(src, "trunc.onnx")).rejects.toThrow(/mem\/trunc\.onnx: is not a valid ONNX model or is truncated/);
    await expect(rt.load(src, "text.onnx")).rejects.toThrow(/mem\/text\.onnx: is not an ONNX model/);
    await expect(rt.load(src, "empty.onnx")).rejects.toThrow(/mem\/empty\.onnx: is 0 bytes/);
    const err = await rt.load(src, "text.onnx").catch((e) => e);
    expect(err).toBeInstanceOf(ModelFileError);
    expect((err as ModelFileError).file).toBe("mem/text.onnx");
  });

  test("a failed load is not cached: the fixed file loads next time", async () => {
    const files: Record<string, Uint8Array> = { "m.onnx": unet.subarray(0, 100) };
    const rt = testRuntime();
    const src = memorySource(files, "mem");
    await expect(rt.load(src, "m.onnx")).rejects.toThrow(/truncated/);
    files["m.onnx"] = unet;
    const fixed = memorySource(files, "mem");
    const m = await rt.load(fixed, "m.onnx");
    expect(m.inputs.map((i) => i.name)).toEqual(["sample", "timestep", "encoder_hidden_states"]);
  });

  test("sessions are cached per model file", async () => {
    const rt = testRuntime();
    const src = fileSource("models/tiny-sd");
    const [a, b] = await Promise.all([rt.load(src, "unet/model.onnx"), rt.load(src, "unet/model.onnx")]);
    expect(a).toBe(b);
  });

  test("input metadata comes from the model: dtypes and ranks differ by exporter", async () => {
    const rt = testRuntime();
    const f32 = await rt.load(fileSource("models/tiny-sd"), "unet/model.onnx");
    const f16 = await rt.load(fileSource("models/tiny-sd-fp16"), "unet/model.onnx");
    expect(f32.input("timestep")).toMatchObject({ type: "float32", shape: ["batch"] });
    expect(f16.input("timestep")).toMatchObject({ type: "int64", shape: [1] });
    expect(f16.input("sample").type).toBe("float16");
    expect(() => f32.input("nope")).toThrow(/has no input "nope" \(inputs: sample, timestep, encoder_hidden_states\)/);
    await expect(f32.run({ sample: { dims: [1, 4, 8], data: new Float32Array(32) } })).rejects.toThrow(/input "sample" has rank 4/);
  });

  test('"auto" falls back to the CPU provider with a log line when WebGPU has no adapter', async () => {
    const logs: string[] = [];
    const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "auto", log: (m) => logs.push(m) });
    const m = await (await rt.load(fileSource("models/tiny-sd"), "vae_decoder/model.onnx")).ready();
    if (m.provider === "webgpu") return; // a machine with a GPU: nothing to fall back from
    expect(m.provider).toBe("cpu");
    expect(logs.join("\n")).toMatch(/"auto" falls back to onnxruntime-node\/cpu \(onnxruntime-node\/webgpu: /);
  });

  test("wasm provider (onnxruntime-web) gives the native result", async () => {
    const cpu = await (await loadTiny(tinyDoc(), testRuntime("cpu"))).run({ prompt: "heart", steps: 3, seed: 2 });
    const wasm = await (await loadTiny(tinyDoc(), testRuntime("wasm"))).run({ prompt: "heart", steps: 3, seed: 2 });
    let m = 0;
    for (let i = 0; i < cpu.images.data.length; i++) m = Math.max(m, Math.abs(cpu.images.data[i]! - wasm.images.data[i]!));
    expect(m).toBeLessThan(1e-4);
  });

  test("a broken model file in a pipeline fails the load with the file named, and nothing else breaks", async () => {
    const files: Record<string, Uint8Array> = {};
    for (const p of ["text_encoder/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"]) {
      files[p] = readFileSync(`models/tiny-sd/${p}`);
    }
    files["unet/model.onnx"] = unet.subarray(0, unet.length / 2);
    const { Pipeline } = await import("../../core/pipeline.ts");
    const { builtinRegistry } = await import("../../plugins/index.ts");
    const rt = testRuntime();
    await expect(Pipeline.load(tinyDoc(), { registry: builtinRegistry(), onnx: rt, models: memorySource(files, "broken") })).rejects.toThrow(/broken\/unet\/model\.onnx/);
    expect((await loadTiny(tinyDoc(), rt)).name).toBe("tiny-sd");
  });
});
