/**
 * Cached optimized graphs that would crash the process (graph-cache-node.ts).
 *
 * Prepacked weights in the optimized-graph cache (`dropUnalignedPrepacked`, graph-cache-node.ts):
 * onnxruntime 1.30 writes each kernel's packed copy of a weight into the weights file right after the
 * previous tensor, unpadded, and a session loaded from a graph whose copy lies at an offset that is not
 * a multiple of 64 bytes crashes the process (SIGSEGV) in its first run. tiny-sdxl's second text
 * encoder, pinned to batch 1 × 77 tokens, is such a model: its 623×24 embedding (59,808 bytes, 32 mod
 * 64) comes first. CI caught it as a `generate` that crashed on its second start.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { fileSource, onnxBackends } from "../../core/adapters/node.ts";
import { dropUnalignedPrepacked, pinSymbolicDims, PREPACKED_ALIGNMENT } from "../../core/onnx-graph.ts";
import { OnnxRuntime } from "../../core/onnx.ts";

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
    const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", threads: 1, pinShapes: true, graphCache: cacheDir });
    const m = await rt.load(fileSource("models/tiny-sdxl"), "text_encoder_2/model.onnx", { role: "auxiliary" }); // made at its first run, for its sizes
    await m.run({ input_ids: { dims: [1, 77], ints: new Array<number>(77).fill(5) } });
    expect(rt.created.map((c) => c.from)).toEqual(["model"]);
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

/**
 * A process that dies while a session loaded from a cached graph has not yet finished its first run
 * (a native crash cannot be caught): the next start on this machine sees its trial file, stops caching
 * that key and builds it from the model, instead of crashing at every start.
 */
describe("a cached graph whose first run a process did not survive", () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-graph-trial-"));
  const child = join(dir, "child.ts");
  writeFileSync(
    child,
    `import { fileSource, onnxBackends } from ${JSON.stringify(join(import.meta.dir, "../../core/adapters/node.ts"))};
     import { OnnxRuntime } from ${JSON.stringify(join(import.meta.dir, "../../core/onnx.ts"))};
     const [cacheDir, mode] = process.argv.slice(2);
     // "die": the process is killed inside the session's first run, as a native crash would end it.
     const native = async () => {
       const ort = await onnxBackends.native();
       if (mode !== "die") return ort;
       const create = async (...a) => {
         const s = await ort.InferenceSession.create(...a);
         s.run = async () => { process.kill(process.pid, "SIGKILL"); await new Promise(() => {}); };
         return s;
       };
       return { ...ort, InferenceSession: { create } };
     };
     const logs = [];
     const rt = new OnnxRuntime({ backends: { ...onnxBackends, native }, executionProvider: "cpu", threads: 1, graphCache: cacheDir, log: (m) => logs.push(m) });
     const m = await rt.load(fileSource(${JSON.stringify(join(import.meta.dir, "../../models/tiny-sd"))}), "text_encoder/model.onnx", { role: "auxiliary" });
     await m.run({ input_ids: { dims: [1, 77], ints: new Array(77).fill(3) } });
     const from = rt.created.map((c) => c.from);
     await rt.dispose();
     process.stdout.write(JSON.stringify({ from, logs }));`,
  );
  const start = (cacheDir: string, mode = "") => {
    const p = Bun.spawnSync([process.execPath, child, cacheDir, mode], { stdout: "pipe", stderr: "pipe" });
    const out = p.stdout.toString();
    return { exitCode: p.exitCode, signal: p.signalCode ?? null, err: p.stderr.toString(), ...(out ? (JSON.parse(out) as { from: string[]; logs: string[] }) : { from: [], logs: [] }) };
  };
  const files = (d: string, ext: string) => readdirSync(d).filter((f) => f.endsWith(ext));

  test("a session that ran proves its graph: the record says so and no trial file is left", () => {
    const cache = join(dir, "proven");
    expect(start(cache).from).toEqual(["model"]);
    const [record] = files(cache, ".json");
    expect(JSON.parse(readFileSync(join(cache, record!), "utf8")).proven).toBeUndefined();
    const second = start(cache);
    expect([second.exitCode, second.from, second.logs]).toEqual([0, ["cache"], []]);
    expect(JSON.parse(readFileSync(join(cache, record!), "utf8")).proven).toBe(true);
    expect(files(cache, ".trial")).toEqual([]);
    expect(start(cache).from).toEqual(["cache"]);
  });

  test("the next start stops caching the model (logged once), builds it from the model, and later starts too", () => {
    const cache = join(dir, "crash");
    expect(start(cache).from).toEqual(["model"]);
    const died = start(cache, "die");
    expect([died.exitCode, died.signal]).toEqual([null, "SIGKILL"]);
    expect(files(cache, ".trial")).toHaveLength(1);
    const next = start(cache);
    expect([next.exitCode, next.from]).toEqual([0, ["model"]]);
    expect(next.logs).toHaveLength(1);
    expect(next.logs[0]).toMatch(/did not finish its first run: process \d+ died meanwhile; .*text_encoder\/model\.onnx is no longer cached on this machine \(remove .*\.refused to try again\)/);
    expect([files(cache, ".onnx"), files(cache, ".data"), files(cache, ".trial"), files(cache, ".refused").length]).toEqual([[], [], [], 1]);
    const later = start(cache);
    expect([later.exitCode, later.from, later.logs]).toEqual([0, ["model"], []]);
    expect(files(cache, ".onnx")).toEqual([]); // nothing written for that key
    // Removing the marker, as the message says, caches it again.
    rmSync(join(cache, files(cache, ".refused")[0]!));
    expect(start(cache).from).toEqual(["model"]);
    expect(start(cache).from).toEqual(["cache"]);
  });

  test("a trial of a process that is still running (or of another machine) is not a crash", () => {
    const cache = join(dir, "alive");
    expect(start(cache).from).toEqual(["model"]);
    const [graph] = files(cache, ".onnx");
    const trial = join(cache, graph!.replace(/\.onnx$/, ".trial"));
    writeFileSync(trial, JSON.stringify({ pid: process.pid, host: hostname() })); // this test runner: alive
    const a = start(cache);
    expect([a.exitCode, a.from, a.logs]).toEqual([0, ["cache"], []]);
    // Proven by now; a dead process's trial on an unproven record of another host is not judged either.
    const record = join(cache, graph!.replace(/\.onnx$/, ".json"));
    const { proven: _, ...unproven } = JSON.parse(readFileSync(record, "utf8"));
    writeFileSync(record, JSON.stringify(unproven));
    const dead = Bun.spawnSync(["true"]).pid;
    writeFileSync(trial, JSON.stringify({ pid: dead, host: `not-${hostname()}` }));
    const b = start(cache);
    expect([b.exitCode, b.from, b.logs]).toEqual([0, ["cache"], []]);
    expect(files(cache, ".refused")).toEqual([]);
  });
});
