/**
 * Weights stored as ONNX external data (`model.onnx` + `model.onnx_data`, the form every model over
 * 2 GB must take): tiny-sd-external is tiny-sd with its UNet saved that way, so both must give the
 * same image, on onnxruntime-node (CPU) and onnxruntime-web (WASM), from disk and from in-memory
 * (fetched) buffers.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileSource } from "../../core/adapters/node.ts";
import { memorySource, ModelFileError } from "../../core/model-source.ts";
import { externalDataFiles, MAX_GRAPH_DEPTH, OnnxFormatError } from "../../core/onnx-graph.ts";
import { int, len, str } from "../onnx-bytes.ts";
import { Pipeline } from "../../core/pipeline.ts";
import { pipelineDocFromModelFolder } from "../../core/model-folder.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { maxAbsDiff, testRuntime } from "../helpers.ts";

const RUN = { prompt: "a red heart", steps: 3, seed: 5, height: 64, width: 64 };

function filesOf(dir: string, skip: (p: string) => boolean = () => false): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (!skip(relative(dir, full))) out[relative(dir, full)] = new Uint8Array(readFileSync(full));
    }
  };
  walk(dir);
  return out;
}

async function open(models: ReturnType<typeof fileSource>, provider: "cpu" | "wasm") {
  const registry = builtinRegistry();
  const doc = await pipelineDocFromModelFolder(models, "m", registry);
  return Pipeline.load(doc, { registry, onnx: testRuntime(provider), models });
}

describe("ONNX external data: tiny-sd-external", () => {
  test("the model names its data file; the file really holds the weights", () => {
    const graph = readFileSync("models/tiny-sd-external/unet/model.onnx");
    expect(externalDataFiles(new Uint8Array(graph))).toEqual(["model.onnx_data"]);
    expect(externalDataFiles(new Uint8Array(readFileSync("models/tiny-sd/unet/model.onnx")))).toEqual([]);
    expect(statSync("models/tiny-sd-external/unet/model.onnx_data").size).toBeGreaterThan(graph.length);
  });

  // TensorProto: name 8, raw_data 9, external_data 13 (key 1, value 2), data_location 14 (1: EXTERNAL).
  const external = (file: string) => len(13, [...str(1, "location"), ...str(2, file)]);
  const tensor = (name: string, file: string, { raw = [] as readonly number[], location = 1 } = {}) => [...str(8, name), ...(raw.length ? len(9, raw) : []), ...external(file), ...int(14, location)];

  test("every place ONNX lets a tensor live is read; bytes inside a tensor's data that look like a location are not", () => {
    // A Constant whose value lies apart (NodeProto.attribute 5 → AttributeProto.t 5), an If whose
    // branch holds an external initializer (attribute g 6 → GraphProto.initializer 5).
    const constant = len(1, [...str(4, "Constant"), ...len(5, [...str(1, "value"), ...len(5, tensor("c", "const.bin"))])]);
    const branch = len(1, [...str(4, "If"), ...len(5, [...str(1, "then_branch"), ...len(6, [...str(2, "then"), ...len(5, tensor("t", "then.bin"))])])]);
    // An initializer whose own data holds the bytes of an entry naming decoy.bin, and a sparse initializer (15 → values 1).
    const decoy = external("decoy.bin");
    const graph = [...constant, ...branch, ...len(5, tensor("w", "w.bin", { raw: decoy })), ...len(15, len(1, tensor("s", "sparse.bin")))];
    // A model-local function (ModelProto.functions 25 → FunctionProto.node 7) with its own Constant.
    const fn = len(25, [...str(1, "f"), ...len(7, [...str(4, "Constant"), ...len(5, [...str(1, "value"), ...len(5, tensor("k", "fn.bin"))])])]);
    const model = Uint8Array.from([...int(1, 8), ...len(7, graph), ...fn]);
    expect(externalDataFiles(model)).toEqual(["const.bin", "then.bin", "w.bin", "sparse.bin", "fn.bin"]);
    // A tensor cut short is a format error, not a silent miss.
    const cut = Uint8Array.from([...int(1, 8), ...len(7, [...len(5, [...str(8, "w"), 0x6a, 0x20, 0x0a])])]);
    expect(() => externalDataFiles(cut)).toThrow(OnnxFormatError);
  });

  test("the repeated and sparse attribute fields, graphs nested in graphs, and data_location are read as onnxruntime reads them", () => {
    const sparse = (values: string, indices: string) => [...len(1, tensor("v", values)), ...len(2, tensor("i", indices))];
    // AttributeProto: tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23.
    const attrs = [
      ...len(5, [...str(1, "ts"), ...len(10, tensor("a", "tensors.bin"))]),
      ...len(5, [...str(1, "st"), ...len(22, sparse("sv.bin", "si.bin"))]),
      ...len(5, [...str(1, "sts"), ...len(23, sparse("ssv.bin", "ssi.bin"))]),
    ];
    // A Scan body (graphs 11) holding a Loop whose body (g 6) holds the weights.
    const loop = len(1, [...str(4, "Loop"), ...len(5, [...str(1, "body"), ...len(6, len(5, tensor("deep", "deep.bin")))])]);
    const scan = len(1, [...str(4, "Scan"), ...len(5, [...str(1, "bodies"), ...len(11, loop)])]);
    // Inline data (data_location DEFAULT, 0) with a leftover location entry names no file.
    const graph = [...len(1, [...str(4, "Custom"), ...attrs]), ...scan, ...len(5, tensor("inline", "stale.bin", { location: 0 }))];
    const model = Uint8Array.from([...int(1, 8), ...len(7, graph)]);
    expect(externalDataFiles(model).sort()).toEqual(["deep.bin", "si.bin", "ssi.bin", "ssv.bin", "sv.bin", "tensors.bin"]);
    // Graphs nested beyond protobuf's own limit are refused, not a stack overflow.
    let nested: number[] = len(5, tensor("bottom", "bottom.bin"));
    for (let i = 0; i < MAX_GRAPH_DEPTH + 1; i++) nested = len(1, [...str(4, "If"), ...len(5, [...str(1, "then_branch"), ...len(6, nested)])]);
    expect(() => externalDataFiles(Uint8Array.from([...int(1, 8), ...len(7, nested)]))).toThrow(/nested deeper than 100/);
  });

  test("a tensor cut short inside an If branch is a load error naming the file", async () => {
    // The If's branch is a well-formed length-delimited field; the tensor inside it runs past its end.
    const cutTensor = [...str(8, "w"), 0x6a, 0x20, 0x0a];
    const branch = len(1, [...str(4, "If"), ...len(5, [...str(1, "then_branch"), ...len(6, len(5, cutTensor))])]);
    // What readOnnxGraph asks of a model besides: an output (GraphProto.output 12: ValueInfoProto name 1,
    // type 2 → tensor_type 1 → elem_type 1) and an opset (ModelProto.opset_import 8 → version 2).
    const output = len(12, [...str(1, "y"), ...len(2, len(1, int(1, 1)))]);
    const model = Uint8Array.from([...int(1, 8), ...len(7, [...branch, ...str(2, "g"), ...output]), ...len(8, int(2, 17))]);
    expect(() => externalDataFiles(model)).toThrow(OnnxFormatError);
    const err = await testRuntime().load(memorySource({ "cut.onnx": model }, "mem"), "cut.onnx").catch((e) => e);
    expect(err).toBeInstanceOf(ModelFileError);
    expect((err as ModelFileError).file).toBe("mem/cut.onnx");
    expect((err as Error).message).toMatch(/^mem\/cut\.onnx: is not a valid ONNX model or is truncated \(tensor: /);
  });

  for (const provider of ["cpu", "wasm"] as const) {
    test(`${provider === "cpu" ? "onnxruntime-node" : "onnxruntime-web"}: from disk and from fetched buffers, the image equals tiny-sd's`, async () => {
      const ref = await (await open(fileSource("models/tiny-sd"), provider)).run(RUN);
      const disk = await (await open(fileSource("models/tiny-sd-external"), provider)).run(RUN);
      expect(maxAbsDiff(disk.images.data, ref.images.data)).toBeLessThan(1e-5);
      const fetched = await (await open(memorySource(filesOf("models/tiny-sd-external"), "https://cdn.example/tiny-sd-external"), provider)).run(RUN);
      expect(maxAbsDiff(fetched.images.data, ref.images.data)).toBeLessThan(1e-5);
    });
  }

  test("on a server onnxruntime-node opens the data file itself (no copy through JS); in memory it is handed over", async () => {
    const reads: string[] = [];
    const counting = (src: ReturnType<typeof fileSource>): ReturnType<typeof fileSource> => ({
      ...src,
      root: src.root,
      read: (p) => (reads.push(p), src.read(p)),
      exists: (p) => src.exists(p),
      sub: (p) => counting(src.sub(p)),
      ...(src.localPath ? { localPath: (p: string) => src.localPath!(p) } : {}),
    });
    // No digest memo: the graph is read at open (a remembered one would not be read at all), the data file never.
    const onDisk = await (await open(counting(fileSource("models/tiny-sd-external", { digests: false })), "cpu")).run(RUN);
    expect(reads.some((p) => p.endsWith("model.onnx_data"))).toBe(false);
    expect(reads).toContain("unet/model.onnx");
    reads.length = 0;
    const { localPath: _drop, ...noPath } = counting(fileSource("models/tiny-sd-external", { digests: false }));
    const viaBytes = await (await open(noPath as never, "cpu")).run(RUN);
    expect(reads).toContain("unet/model.onnx_data");
    expect(maxAbsDiff(onDisk.images.data, viaBytes.images.data)).toBe(0);
  });

  test("a missing data file is an error naming it", async () => {
    const models = memorySource(filesOf("models/tiny-sd-external", (p) => p.endsWith("onnx_data")), "models/x");
    await expect(open(models, "cpu")).rejects.toThrow("models/x/unet/model.onnx_data: file not found (models/x/unet/model.onnx keeps its weights there as external data)");
  });
});
