/**
 * Prepacked weights in the optimized-graph cache (`dropUnalignedPrepacked`, graph-cache-node.ts):
 * onnxruntime 1.30 writes each kernel's packed copy of a weight into the weights file right after the
 * previous tensor, unpadded, and a session loaded from a graph whose copy lies at an offset that is not
 * a multiple of 64 bytes crashes the process (SIGSEGV) in its first run. tiny-sdxl's second text
 * encoder, pinned to batch 1 × 77 tokens, is such a model: its 623×24 embedding (59,808 bytes, 32 mod
 * 64) comes first. CI caught it as a `generate` that crashed on its second start.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { fileSource, onnxBackends } from "../../core/adapters/node.ts";
import { dropUnalignedPrepacked, externalDataFiles, pinSymbolicDims, PREPACKED_ALIGNMENT, readOnnxGraph } from "../../core/onnx-graph.ts";
import { OnnxRuntime } from "../../core/onnx.ts";
import { int, len, str } from "../onnx-bytes.ts";

setDefaultTimeout(60_000); // spawns processes that create sessions

const PINS = { batch_size: 1, sequence_length: 77 };

/** The prepacked entries' offsets a graph names, read from its bytes ("prepacked_N" … "|offset;length;…"). */
function prepackedOffsets(graph: Uint8Array): number[] {
  const text = new TextDecoder("latin1").decode(graph);
  return [...text.matchAll(/prepacked_\d+\x12[\s\S]([^|\x00-\x1f]+)\|(\d+);/g)].map((m) => Number(m[2]));
}

/** What onnxruntime writes for `model` (bytes) with the cache's options, prepacked weights included. */
async function optimizedByOrt(dir: string, name: string, model: Uint8Array): Promise<string> {
  const path = join(dir, `${name}.onnx`);
  const s = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: "all",
    optimizedModelFilePath: path,
    logSeverityLevel: 3,
    extra: {
      "session.optimized_model_external_initializers_file_name": `${name}.data`,
      "session.optimized_model_external_initializers_min_size_in_bytes": "1024",
      "session.save_external_prepacked_constant_initializers": "1",
    },
  } as ort.InferenceSession.SessionOptions);
  await s.release();
  return path;
}

/** Loads `graph` in a fresh process (a crash must not take the test runner with it), runs it on ids 1..77, prints its last_hidden_state. */
function runInChild(dir: string, graph: string) {
  const script = join(dir, "run-child.mjs");
  writeFileSync(
    script,
    `const ort = await import(${JSON.stringify(require.resolve("onnxruntime-node"))});
     const s = await ort.InferenceSession.create(process.argv[2], { graphOptimizationLevel: "disabled" });
     const ids = new ort.Tensor("int32", Int32Array.from({ length: 77 }, (_, i) => (i * 7) % 600 + 1), [1, 77]);
     const r = await s.run({ input_ids: ids });
     process.stdout.write(JSON.stringify(Array.from(r.last_hidden_state.data.slice(0, 64))));`,
  );
  const p = Bun.spawnSync([process.execPath, script, graph], { stdout: "pipe", stderr: "pipe" });
  return { exitCode: p.exitCode, signal: p.signalCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

describe("prepacked weights onnxruntime wrote misaligned", () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-prepacked-"));
  const te2 = pinSymbolicDims(readFileSync("models/tiny-sdxl/text_encoder_2/model.onnx"), PINS);

  test("are removed from the graph, the aligned ones are kept, and the graph loads and runs in a fresh process", async () => {
    const path = await optimizedByOrt(dir, "te2", te2);
    const written = readFileSync(path);
    const before = prepackedOffsets(written);
    // The case this guards: onnxruntime did write copies at offsets of 32 mod 64.
    expect(before.length).toBeGreaterThan(0);
    expect(before.some((o) => o % PREPACKED_ALIGNMENT !== 0)).toBe(true);
    const { bytes, dropped } = dropUnalignedPrepacked(written);
    expect(dropped.length).toBe(before.filter((o) => o % PREPACKED_ALIGNMENT !== 0).length);
    expect(dropped.every((v) => /^\w+\+\d+\|\d+;\d+/.test(v))).toBe(true);
    const after = prepackedOffsets(bytes);
    expect(after).toEqual(before.filter((o) => o % PREPACKED_ALIGNMENT === 0));
    writeFileSync(path, bytes);
    // Loaded from the edited graph (its weights file unchanged), in its own process: it runs, and its
    // output is the unoptimized model's.
    const child = runInChild(dir, path);
    expect([child.exitCode, child.signal ?? null, child.err]).toEqual([0, null, ""]);
    const ref = await ort.InferenceSession.create(te2, { graphOptimizationLevel: "disabled" });
    const ids = new ort.Tensor("int32", Int32Array.from({ length: 77 }, (_, i) => (i * 7) % 600 + 1), [1, 77]);
    const want = Array.from(((await ref.run({ input_ids: ids })).last_hidden_state!.data as Float32Array).slice(0, 64));
    await ref.release();
    const got = JSON.parse(child.out) as number[];
    expect(Math.max(...got.map((v, i) => Math.abs(v - want[i]!)))).toBeLessThan(1e-5);
  });

  test("a graph whose copies are all aligned is returned as it is (tiny-sdxl's first text encoder)", async () => {
    const te1 = pinSymbolicDims(readFileSync("models/tiny-sdxl/text_encoder/model.onnx"), PINS);
    const written = readFileSync(await optimizedByOrt(dir, "te1", te1));
    expect(prepackedOffsets(written).length).toBeGreaterThan(0);
    const { bytes, dropped } = dropUnalignedPrepacked(written);
    expect(dropped).toEqual([]);
    expect(bytes).toBe(written);
  });

  test("the cache stores the pinned model without them: a second process starting from the cache runs it", async () => {
    const cacheDir = join(dir, "cache");
    const logged: string[] = [];
    const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", threads: 1, pinShapes: true, graphCache: cacheDir, log: (m) => logged.push(m) });
    const m = await rt.load(fileSource("models/tiny-sdxl"), "text_encoder_2/model.onnx", { role: "auxiliary" }); // made at its first run, for its sizes
    await m.run({ input_ids: { dims: [1, 77], ints: new Array<number>(77).fill(5) } });
    expect(rt.created.map((c) => c.from)).toEqual(["model"]);
    // Said once, when the entry is written: how many copies, and whose.
    expect(logged.filter((m) => m.includes("prepacked"))).toEqual([
      expect.stringMatching(/^onnx: optimized graph of models\/tiny-sdxl\/text_encoder_2\/model\.onnx: [1-9]\d* prepacked weight\(s\) written at offsets that are not a multiple of 64 bytes are left out of the cache and packed at load \(\w+\+\d+/),
    ]);
    await rt.dispose();
    const graphs = readdirSync(cacheDir).filter((f) => f.endsWith(".onnx"));
    expect(graphs.length).toBe(1);
    const cached = readFileSync(join(cacheDir, graphs[0]!));
    expect(JSON.parse(readFileSync(join(cacheDir, graphs[0]!.replace(/\.onnx$/, ".json")), "utf8")).options.freeDimensionOverrides).toEqual(PINS);
    expect(prepackedOffsets(cached).every((o) => o % PREPACKED_ALIGNMENT === 0)).toBe(true);
    const child = runInChild(dir, join(cacheDir, graphs[0]!));
    expect([child.exitCode, child.signal ?? null, child.err]).toEqual([0, null, ""]);
  });
});

describe("dropUnalignedPrepacked on a graph built by hand", () => {
  // TensorProto: dims 1, data_type 2, name 8, external_data 13 (key 1, value 2), data_location 14.
  const tensor = (name: string, entries: readonly (readonly [string, string])[]) =>
    len(5, [...int(1, 16), ...int(2, 1), ...str(8, name), ...entries.flatMap(([k, v]) => len(13, [...str(1, k), ...str(2, v)])), ...int(14, 1)]);
  const at = (offset: number) => [["location", "w.data"], ["offset", String(offset)], ["length", "64"]] as const;
  const a = { p0: ["prepacked_0", "MatMul+1|0;64;1|96;64;1"], p1: ["prepacked_1", "Gemm+2|128;64;1|192;32;1"] } as const;
  const b = { p0: ["prepacked_0", "Gemm+3|256;64"], p1: ["prepacked_1", "Conv+4|x;64"], p2: ["prepacked_2", "Conv+5"] } as const;
  // ModelProto: ir_version 1, graph 7 (initializer 5, then input 11 and output 12, to be kept as they are), opset 8.
  const io = (no: number, name: string) => len(no, [...str(1, name), ...len(2, len(1, [...int(1, 1), ...len(2, len(1, int(1, 16)))]))]);
  const model = (ta: readonly (readonly [string, string])[], tb: readonly (readonly [string, string])[]) =>
    Uint8Array.from([...int(1, 8), ...len(7, [...str(2, "g"), ...tensor("a", ta), ...tensor("b", tb), ...io(11, "x"), ...io(12, "y")]), ...len(8, [...str(1, ""), ...int(2, 17)])]);
  const full = model([...at(0), a.p0, a.p1], [...at(64), b.p0, b.p1, b.p2]);

  test("removes an entry when any of its buffers is unaligned or unreadable, byte for byte the graph without it", () => {
    const { bytes, dropped } = dropUnalignedPrepacked(full);
    expect(dropped).toEqual([a.p0[1], b.p1[1], b.p2[1]]);
    // The reference: the same model written without those entries (every enclosing length recomputed).
    expect(bytes).toEqual(model([...at(0), a.p1], [...at(64), b.p0]));
    expect(readOnnxGraph(bytes).inputs.map((i) => i.name)).toEqual(["x"]);
    expect(externalDataFiles(bytes)).toEqual(["w.data"]);
  });

  test("keeps what is aligned to the alignment asked for, and returns an unchanged graph as the same bytes", () => {
    const { bytes, dropped } = dropUnalignedPrepacked(full, 32);
    expect(dropped).toEqual([b.p1[1], b.p2[1]]);
    expect(bytes).toEqual(model([...at(0), a.p0, a.p1], [...at(64), b.p0]));
    const again = dropUnalignedPrepacked(bytes, 32);
    expect(again.dropped).toEqual([]);
    expect(again.bytes).toBe(bytes);
  });
});
