/**
 * The optimized-graph cache (issue 13, item 3; core/adapters/graph-cache-node.ts): the first load
 * writes the optimized graph and its weights file, the next loads them and computes the same outputs;
 * the key changes with the provider and the graph options; a corrupted, truncated, missing or
 * unloadable cache file (graph or weights) is rebuilt and never fails a load; a record cannot send it
 * outside its folder. Real onnxruntime-node on the tiny-sd fixture, a temporary cache folder.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { arch, cpus, platform, tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { defaultGraphCacheDir, graphCacheId, machineId, nodeGraphCache } from "../../core/adapters/graph-cache-node.ts";
import { fileSource, onnxBackends } from "../../core/adapters/node.ts";
import { OnnxRuntime, type LoadOptions } from "../../core/onnx.ts";
import { readOnnxGraph } from "../../core/onnx-graph.ts";

const base = mkdtempSync(join(tmpdir(), "dg-graph-cache-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const freshDir = () => join(base, `c${n++}`);

const tiny = fileSource("models/tiny-sd");
const FEEDS = {
  sample: { dims: [1, 4, 8, 8], data: Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)) },
  timestep: { dims: [1], data: Float32Array.of(500) },
  encoder_hidden_states: { dims: [1, 77, 32], data: Float32Array.from({ length: 77 * 32 }, (_, i) => Math.cos(i / 7)) },
};

/** `settleMs` 0: stamps count at once (default: a file must be unchanged for a second first). */
async function loadUnet(dir: string | false, logs: string[] = [], options: LoadOptions = {}, settleMs?: number) {
  const backends = settleMs === undefined ? onnxBackends : { ...onnxBackends, graphCache: (d?: string) => nodeGraphCache(d, settleMs) };
  const rt = new OnnxRuntime({ backends, executionProvider: "cpu", threads: 1, graphCache: dir, log: (m) => logs.push(m) });
  const m = await (await rt.load(tiny, "unet/model.onnx", { role: "noise-predictor", ...options })).ready();
  const out = await m.run(FEEDS);
  const from = rt.created.at(-1)!.from;
  await rt.dispose();
  return { from, out: out.out_sample!.data, logs };
}

const graphs = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".onnx")).sort();
const weights = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".data")).sort();
/** The weights file of the folder's one entry. */
const weightsOf = (dir: string) => join(dir, JSON.parse(readFileSync(join(dir, graphs(dir)[0]!.replace(/\.onnx$/, ".json")), "utf8")).data.file as string);

// Real session creation on a shared 2-core machine: seconds, not milliseconds, under load.
setDefaultTimeout(60_000);

describe("optimized-graph cache", () => {
  test("the first load writes the graph and its record; the second loads it, with the same outputs as no cache", async () => {
    const dir = freshDir();
    const plain = await loadUnet(false);
    const first = await loadUnet(dir);
    expect(first.from).toBe("model");
    const files = readdirSync(dir).sort();
    expect(files.filter((f) => f.endsWith(".tmp.onnx"))).toEqual([]); // written under a temporary name, then renamed
    expect(graphs(dir)).toHaveLength(1);
    const id = graphs(dir)[0]!.replace(/\.onnx$/, "");
    const record = JSON.parse(readFileSync(join(dir, `${id}.json`), "utf8"));
    expect(record).toMatchObject({ format: "diffgraph-optimized-graph/4", provider: "cpu", runtime: "onnxruntime-node 1.30.0", options: { graphOptimizationLevel: "all", freeDimensionOverrides: null } });
    expect(record.size).toBe(readFileSync(join(dir, `${id}.onnx`)).length);
    // The weights sit beside the graph, in the one file the record names, under the entry's id.
    expect(weights(dir)).toEqual([record.data.file]);
    expect(record.data.file).toMatch(new RegExp(`^${id}\\.[0-9]+\\.[0-9a-f]{8}\\.data$`));
    const data = readFileSync(join(dir, record.data.file));
    expect(record.data.size).toBe(data.length);
    expect(record.data.sha256).toBe(new Bun.CryptoHasher("sha256").update(data).digest("hex"));
    expect(data.length).toBeGreaterThan(record.size); // the graph holds the structure, the weights file the weights
    expect(files).toEqual([`${id}.json`, `${id}.onnx`, record.data.file].sort());
    // The CPU kernels' prepacked weights are stored too (in the same weights file): initializers whose
    // external-data entries name a packed copy ("prepacked_0": kernel|offset;length;…).
    expect(new TextDecoder().decode(readFileSync(join(dir, `${id}.onnx`))).match(/prepacked_\d/g)?.length ?? 0).toBeGreaterThan(0);
    const second = await loadUnet(dir);
    expect(second.from).toBe("cache");
    expect(second.logs).toEqual([]);
    expect(second.out).toEqual(plain.out);
    expect(first.out).toEqual(plain.out);
  });

  test("the key's machine names the CPU's instruction-set features (Linux), not only its model name", async () => {
    const m = machineId();
    expect(m.startsWith(`${platform()}-${arch()} `)).toBe(true);
    if (platform() === "linux") {
      const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => /^(flags|Features)\s*:/.test(l));
      if (line) {
        const flags = line.slice(line.indexOf(":") + 1).trim().split(/\s+/);
        for (const f of flags.slice(0, 5)) expect(m).toContain(f);
      }
    }
    const key = { runtime: "onnxruntime-node 1.30.0", provider: "cpu", options: { graphOptimizationLevel: "all", freeDimensionOverrides: null } };
    expect(await graphCacheId("ab".repeat(32), key, `${m} avx512f`)).not.toBe(await graphCacheId("ab".repeat(32), key, m));
  });

  test("the key differs with the provider and the graph options; fixed dimensions are another file", async () => {
    const key = { runtime: "onnxruntime-node 1.30.0", provider: "cpu", options: { graphOptimizationLevel: "all", freeDimensionOverrides: null } };
    const a = await graphCacheId("ab".repeat(32), key);
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(await graphCacheId("ab".repeat(32), { ...key })).toBe(a);
    expect(await graphCacheId("ab".repeat(32), { ...key, provider: "webgpu" })).not.toBe(a);
    expect(await graphCacheId("ab".repeat(32), { ...key, options: { ...key.options, freeDimensionOverrides: { batch: 2 } } })).not.toBe(a);
    expect(await graphCacheId("ab".repeat(32), { ...key, runtime: "onnxruntime-node 1.31.0" })).not.toBe(a);
    expect(await graphCacheId("cd".repeat(32), key)).not.toBe(a);
    const dir = freshDir();
    await loadUnet(dir);
    await loadUnet(dir, [], { freeDimensions: { batch: 1 } });
    expect(graphs(dir)).toHaveLength(2);
    expect((await loadUnet(dir, [], { freeDimensions: { batch: 1 } })).from).toBe("cache");
  });

  for (const [what, corrupt] of [
    ["with a flipped byte (size kept)", (f: string) => {
      const b = readFileSync(f);
      b[Math.floor(b.length / 2)]! ^= 0x10;
      writeFileSync(f, b);
    }],
    ["truncated to half", (f: string) => truncateSync(f, Math.floor(readFileSync(f).length / 2))],
    ["removed (its record left)", (f: string) => rmSync(f)],
    ["whose record is not JSON", (f: string) => writeFileSync(f.replace(/\.onnx$/, ".json"), "{ not json")],
    ["whose weights file has a flipped byte (size kept)", (f: string) => {
      const w = weightsOf(dirname(f));
      const b = readFileSync(w);
      b[Math.floor(b.length / 2)]! ^= 0x10;
      writeFileSync(w, b);
    }],
    ["whose weights file is truncated", (f: string) => truncateSync(weightsOf(dirname(f)), 100)],
    ["whose weights file is removed", (f: string) => rmSync(weightsOf(dirname(f)))],
  ] as const) {
    test(`a cache file ${what} is rebuilt, never fatal`, async () => {
      const dir = freshDir();
      const plain = await loadUnet(dir);
      const file = join(dir, graphs(dir)[0]!);
      corrupt(file);
      const again = await loadUnet(dir);
      expect(again.from).toBe("model");
      expect(again.out).toEqual(plain.out);
      expect((await loadUnet(dir)).from).toBe("cache");
      // One graph, one record and the weights file it names (a record that was not JSON leaves its old
      // weights until a later commit of the entry finds them ten minutes old).
      if (!what.includes("not JSON")) expect(weights(dir)).toEqual([basename(weightsOf(dir))]);
    });
  }

  test("a cache file that matches its record but onnxruntime refuses is removed, rebuilt and logged", async () => {
    const dir = freshDir();
    const plain = await loadUnet(dir);
    const id = graphs(dir)[0]!.replace(/\.onnx$/, "");
    const junk = new Uint8Array(64).fill(7);
    writeFileSync(join(dir, `${id}.onnx`), junk);
    const record = JSON.parse(readFileSync(join(dir, `${id}.json`), "utf8"));
    const { createHash } = await import("node:crypto");
    writeFileSync(join(dir, `${id}.json`), JSON.stringify({ ...record, size: junk.length, sha256: createHash("sha256").update(junk).digest("hex") }));
    const logs: string[] = [];
    const again = await loadUnet(dir, logs);
    expect(again.from).toBe("model");
    expect(again.out).toEqual(plain.out);
    expect(logs.join("\n")).toMatch(/^onnx: cached optimized graph .* of models\/tiny-sd\/unet\/model\.onnx did not load \(.*\); rebuilding it$/m);
    expect((await loadUnet(dir)).from).toBe("cache");
  });

  const KEY = { runtime: "onnxruntime-node 1.30.0", provider: "cpu", options: { graphOptimizationLevel: "all", freeDimensionOverrides: null } };
  const unetBytes = () => tiny.read("unet/model.onnx");

  test("a settled cache file keeps its stamp in the record: later loads hand onnxruntime its path, unhashed, same outputs", async () => {
    const dir = freshDir();
    const plain = await loadUnet(false);
    await loadUnet(dir, [], {}, 0);
    const id = graphs(dir)[0]!.replace(/\.onnx$/, "");
    const record = JSON.parse(readFileSync(join(dir, `${id}.json`), "utf8"));
    const st = statSync(join(dir, `${id}.onnx`), { bigint: true });
    expect(record.stamp).toBe([st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join(":"));
    expect(record.data.stamp).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    const entry = await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY);
    expect(entry.cachedFile).toBe(join(dir, `${id}.onnx`));
    expect(entry.hashed).toBe(false);
    const again = await loadUnet(dir, [], {}, 0);
    expect(again.from).toBe("cache");
    expect(again.out).toEqual(plain.out);
  });

  test("a fresh cache file (default settle time) is hashed and read, not trusted by its stamp", async () => {
    const dir = freshDir();
    await loadUnet(dir);
    const entry = await nodeGraphCache(dir)!.entry(await unetBytes(), KEY);
    expect(entry.cachedFile).toBe(join(dir, graphs(dir)[0]!));
    expect(entry.hashed).toBe(true);
    // A fresh weights file that no longer matches its record is caught by that hashing, not loaded.
    const w = weightsOf(dir);
    const b = readFileSync(w);
    b[3]! ^= 1;
    writeFileSync(w, b);
    const bad = await nodeGraphCache(dir)!.entry(await unetBytes(), KEY);
    expect(bad.cachedFile).toBeUndefined();
    expect(readdirSync(dir)).toEqual([]); // the whole entry was removed, to be rebuilt
  });

  test("a record from before stamps is hashed once, then stamped", async () => {
    const dir = freshDir();
    await loadUnet(dir, [], {}, 0);
    const recordPath = join(dir, graphs(dir)[0]!.replace(/\.onnx$/, ".json"));
    const { stamp: _, ...old } = JSON.parse(readFileSync(recordPath, "utf8"));
    writeFileSync(recordPath, JSON.stringify(old));
    const first = await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY);
    expect(first.hashed).toBe(true);
    expect(first.cachedFile).toBeDefined();
    expect(JSON.parse(readFileSync(recordPath, "utf8")).stamp).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    const second = await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY);
    expect(second.cachedFile).toBeDefined();
    expect(second.hashed).toBe(false);
  });

  test("a stamped cache file changed in place (size and modification time put back) is hashed, found wrong and rebuilt", async () => {
    const dir = freshDir();
    const plain = await loadUnet(dir, [], {}, 0);
    const file = join(dir, graphs(dir)[0]!);
    const before = statSync(file);
    const b = readFileSync(file);
    b[Math.floor(b.length / 2)]! ^= 0x10;
    writeFileSync(file, b);
    utimesSync(file, before.atime, before.mtime);
    const again = await loadUnet(dir, [], {}, 0);
    expect(again.from).toBe("model");
    expect(again.out).toEqual(plain.out);
    expect((await loadUnet(dir, [], {}, 0)).from).toBe("cache");
  });

  test("a record that names a weights file outside its entry is not followed: the entry is rebuilt and the named file kept", async () => {
    const dir = freshDir();
    const plain = await loadUnet(dir, [], {}, 0);
    const outside = join(base, `victim-${n}.data`);
    writeFileSync(outside, "keep me");
    const recordPath = join(dir, graphs(dir)[0]!.replace(/\.onnx$/, ".json"));
    const record = JSON.parse(readFileSync(recordPath, "utf8"));
    for (const file of [`../${outside.split("/").at(-1)}`, outside, "other.data"]) {
      writeFileSync(recordPath, JSON.stringify({ ...record, data: { ...record.data, file } }));
      expect((await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY)).cachedFile).toBeUndefined();
      const again = await loadUnet(dir, [], {}, 0);
      expect(again.out).toEqual(plain.out);
    }
    expect(readFileSync(outside, "utf8")).toBe("keep me");
    expect((await loadUnet(dir, [], {}, 0)).from).toBe("cache");
  });

  /** What onnxruntime-node writes for an entry on a miss: the optimized graph at its temporary path, the weights beside it. */
  const writeAsOnnxruntime = async (e: Awaited<ReturnType<NonNullable<ReturnType<typeof nodeGraphCache>>["entry"]>>) => {
    const ort = await onnxBackends.native!();
    const session = await ort.InferenceSession.create("models/tiny-sd/unet/model.onnx", { executionProviders: ["cpu"], graphOptimizationLevel: "all", optimizedModelFilePath: e.tempPath, logSeverityLevel: 3, extra: { ...e.writeConfig } } as never);
    await session.release();
  };
  const weightsName = (e: { writeConfig?: Readonly<Record<string, string>> }) => e.writeConfig!["session.optimized_model_external_initializers_file_name"]!;

  test("two writers of one key: the last commit wins and removes the first one's weights; nothing temporary is left", async () => {
    const dir = freshDir();
    const cache = nodeGraphCache(dir, 0)!;
    const bytes = await unetBytes();
    const [a, b] = [await cache.entry(bytes, KEY), await cache.entry(bytes, KEY)];
    expect(a.cachedFile ?? b.cachedFile).toBeUndefined();
    expect(weightsName(a)).not.toBe(weightsName(b));
    await writeAsOnnxruntime(a);
    await writeAsOnnxruntime(b);
    expect(await a.commit()).toBeNull();
    expect(await b.commit()).toBeNull();
    expect(readdirSync(dir).sort()).toEqual([basename(a.path), basename(a.path).replace(/\.onnx$/, ".json"), weightsName(b)].sort());
    expect(weightsOf(dir)).toBe(join(dir, weightsName(b)));
    expect((await loadUnet(dir, [], {}, 0)).from).toBe("cache");
  });

  test("a commit whose graph names another weights file than its own is refused and keeps nothing", async () => {
    const dir = freshDir();
    const cache = nodeGraphCache(dir, 0)!;
    const bytes = await unetBytes();
    const [a, b] = [await cache.entry(bytes, KEY), await cache.entry(bytes, KEY)];
    await writeAsOnnxruntime(a);
    // b's temporary graph is a's (it names a's weights), and b's weights file is there too.
    writeFileSync(b.tempPath, readFileSync(a.tempPath));
    writeFileSync(join(dir, weightsName(b)), readFileSync(join(dir, weightsName(a))));
    expect(await b.commit()).toMatch(/^the optimized graph names the weights file\(s\) \[".*\.data"\], not \[".*\.data"\]$/);
    expect(readdirSync(dir).sort()).toEqual([basename(a.tempPath), weightsName(a)].sort()); // a's, still uncommitted
    expect(await a.commit()).toBeNull();
  });

  test("a commit removes this entry's leftovers older than ten minutes (a writer that died), not younger ones (a writer at work)", async () => {
    const dir = freshDir();
    const cache = nodeGraphCache(dir, 0)!;
    const e = await cache.entry(await unetBytes(), KEY);
    const id = basename(e.path).replace(/\.onnx$/, "");
    const old = [`${id}.1.00000000.data`, `${id}.1.00000000.tmp.onnx`].map((f) => join(dir, f));
    const young = join(dir, `${id}.2.11111111.data`);
    const other = join(dir, `${"0".repeat(64)}.1.00000000.data`); // another entry's
    for (const f of [...old, young, other]) writeFileSync(f, "x");
    const longAgo = new Date(Date.now() - 11 * 60 * 1000);
    for (const f of [...old, other]) utimesSync(f, longAgo, longAgo);
    await writeAsOnnxruntime(e);
    expect(await e.commit()).toBeNull();
    const left = readdirSync(dir);
    for (const f of old) expect(left).not.toContain(basename(f));
    expect(left).toContain(basename(young));
    expect(left).toContain(basename(other));
  });

  test("a load discards only the entry it verified: one another writer has put in its place since is kept", async () => {
    const dir = freshDir();
    await loadUnet(dir, [], {}, 0);
    const hit = await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY);
    expect(hit.cachedFile).toBeDefined();
    const recordPath = hit.path.replace(/\.onnx$/, ".json");
    const record = JSON.parse(readFileSync(recordPath, "utf8"));
    const replaced = { ...record, sha256: "ef".repeat(32) }; // as if another writer had committed a new graph
    writeFileSync(recordPath, JSON.stringify(replaced));
    await hit.discard();
    expect(readdirSync(dir).sort()).toEqual([basename(hit.path), basename(recordPath), basename(weightsOf(dir))].sort());
    writeFileSync(recordPath, JSON.stringify(record));
    await hit.discard();
    expect(readdirSync(dir)).toEqual([]);
  });

  test("a session created from cache files that changed while it loaded is dropped: built from the model, same outputs, logged", async () => {
    const dir = freshDir();
    const plain = await loadUnet(dir, [], {}, 0);
    const hit = await nodeGraphCache(dir, 0)!.entry(await unetBytes(), KEY);
    expect(await hit.unchanged!()).toBe(true);
    const w = weightsOf(dir);
    writeFileSync(w, readFileSync(w)); // same bytes, rewritten: another stamp
    expect(await hit.unchanged!()).toBe(false);
    // Through OnnxRuntime: a cache whose files always change while they load.
    const changing = (d?: string) => {
      const c = nodeGraphCache(d, 0)!;
      return { ...c, entry: async (b: Uint8Array | undefined, k: Parameters<typeof c.entry>[1]) => ({ ...(await c.entry(b, k)), unchanged: async () => false }) };
    };
    const logs: string[] = [];
    const rt = new OnnxRuntime({ backends: { ...onnxBackends, graphCache: changing }, executionProvider: "cpu", threads: 1, graphCache: dir, log: (m) => logs.push(m) });
    const m = await (await rt.load(tiny, "unet/model.onnx", { role: "noise-predictor" })).ready();
    expect((await m.run(FEEDS)).out_sample!.data).toEqual(plain.out);
    expect(rt.created.at(-1)!.from).toBe("model");
    await rt.dispose();
    expect(logs.join("\n")).toMatch(/^onnx: cached optimized graph .* of models\/tiny-sd\/unet\/model\.onnx changed while it loaded; building it from the model$/m);
  });

  test("a commit whose graph onnxruntime did not write, or that does not parse, keeps nothing", async () => {
    const dir = freshDir();
    const cache = nodeGraphCache(dir, 0)!;
    const e = await cache.entry(await unetBytes(), KEY);
    const data = join(dir, e.writeConfig!["session.optimized_model_external_initializers_file_name"]!);
    writeFileSync(data, new Uint8Array(4096));
    expect(await e.commit()).toMatch(/^onnxruntime wrote no file at /);
    writeFileSync(e.tempPath, "not onnx");
    writeFileSync(data, new Uint8Array(4096));
    expect(await e.commit()).toMatch(/does not parse/);
    expect(readdirSync(dir)).toEqual([]);
  });

  test("rebuilding a damaged entry removes its old weights, and the earlier formats' entries of the same key", async () => {
    const dir = freshDir();
    await loadUnet(dir, [], {}, 0);
    const oldWeights = weightsOf(dir);
    // A format-1 entry of the same key, as the previous version wrote it.
    const model = new Bun.CryptoHasher("sha256").update(await unetBytes()).digest("hex");
    // Earlier formats' ids were made with the CPU's model name alone (format 3 adds its features).
    const formerMachine = `${platform()}-${arch()} ${cpus()[0]?.model?.trim() ?? "unknown CPU"}`;
    const legacy = await graphCacheId(model, KEY, formerMachine, "diffgraph-optimized-graph/1");
    writeFileSync(join(dir, `${legacy}.onnx`), "old graph");
    writeFileSync(join(dir, `${legacy}.json`), "{}");
    // A format-2 entry (weights apart, not prepacked), with its weights file and a leftover.
    const second = await graphCacheId(model, KEY, formerMachine, "diffgraph-optimized-graph/2");
    writeFileSync(join(dir, `${second}.onnx`), "old graph");
    writeFileSync(join(dir, `${second}.json`), JSON.stringify({ format: "diffgraph-optimized-graph/2", data: { file: `${second}.1.abcdef01.data` } }));
    writeFileSync(join(dir, `${second}.1.abcdef01.data`), "old weights");
    writeFileSync(join(dir, `${second}.2.abcdef02.data`), "left over");
    const old = new Date(Date.now() - 11 * 60 * 1000);
    utimesSync(join(dir, `${second}.2.abcdef02.data`), old, old); // unnamed: removed once ten minutes old
    writeFileSync(join(dir, `${second}.3.abcdef03.tmp.onnx`), "a writer at work"); // young: kept
    // A format-3 entry (prepacked, misaligned copies kept), its id made with this machine's features.
    const third = await graphCacheId(model, KEY, machineId(), "diffgraph-optimized-graph/3");
    writeFileSync(join(dir, `${third}.onnx`), "old graph");
    writeFileSync(join(dir, `${third}.json`), JSON.stringify({ format: "diffgraph-optimized-graph/3", data: { file: `${third}.1.abcdef01.data` } }));
    writeFileSync(join(dir, `${third}.1.abcdef01.data`), "old weights");
    const earlier = (f: string) => f.startsWith(legacy) || f.startsWith(second) || f.startsWith(third);
    // The current entry's graph damaged: it is rebuilt, with new weights under a new name.
    writeFileSync(join(dir, graphs(dir).find((g) => !earlier(g))!), "junk");
    expect((await loadUnet(dir, [], {}, 0)).from).toBe("model");
    expect(readdirSync(dir).filter(earlier)).toEqual([`${second}.3.abcdef03.tmp.onnx`]);
    rmSync(join(dir, `${second}.3.abcdef03.tmp.onnx`));
    expect(graphs(dir)).toHaveLength(1);
    expect(weights(dir)).toHaveLength(1);
    expect(weightsOf(dir)).not.toBe(oldWeights);
    expect((await loadUnet(dir, [], {}, 0)).from).toBe("cache");
  });

  test("a model with control-flow subgraphs keeps its weights inside its cached graph, which loads (emoji-64's evaluation CLIP text tower has an If)", async () => {
    const emoji = fileSource("models/emoji-64");
    const IF_MODEL = "clip_eval/text_model.onnx";
    expect(readOnnxGraph(await emoji.read(IF_MODEL)).subgraphs).toBe(true);
    for (const f of ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]) expect(readOnnxGraph(await emoji.read(f)).subgraphs).toBe(false);
    expect(readOnnxGraph(await tiny.read("unet/model.onnx")).subgraphs).toBe(false);
    const dir = freshDir();
    const encode = async () => {
      const logs: string[] = [];
      const rt = new OnnxRuntime({ backends: { ...onnxBackends, graphCache: (d?: string) => nodeGraphCache(d, 0) }, executionProvider: "cpu", threads: 1, graphCache: dir, log: (m) => logs.push(m) });
      const m = await (await rt.load(emoji, IF_MODEL)).ready();
      const out = await m.run({ input_ids: { dims: [1, 16], ints: [5, 9, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2] } });
      const from = rt.created.at(-1)!.from;
      await rt.dispose();
      return { from, logs, out: out.text_embeds!.data };
    };
    const first = await encode();
    expect(first.from).toBe("model");
    const record = JSON.parse(readFileSync(join(dir, graphs(dir)[0]!.replace(/\.onnx$/, ".json")), "utf8"));
    expect(record.data).toBeUndefined();
    expect(weights(dir)).toEqual([]);
    // onnxruntime 1.30 refuses this graph when its weights are written apart ("initializer name is not unique").
    const second = await encode();
    expect(second).toEqual({ from: "cache", logs: [], out: first.out });
  });

  test("a cache folder that cannot be made is logged and the model loads without it", async () => {
    const file = join(base, "a-file");
    writeFileSync(file, "x");
    const logs: string[] = [];
    const r = await loadUnet(join(file, "sub"), logs);
    expect(r.from).toBe("model");
    expect(logs.join("\n")).toMatch(/^onnx: optimized-graph cache .*a-file\/sub unusable for models\/tiny-sd\/unet\/model\.onnx \(/m);
  });

  test("folder: DIFFGRAPH_CACHE_DIR, else XDG_CACHE_HOME, else ~/.cache; off turns it off", () => {
    expect(defaultGraphCacheDir({ DIFFGRAPH_CACHE_DIR: "/x/y" })).toBe("/x/y");
    expect(defaultGraphCacheDir({ DIFFGRAPH_CACHE_DIR: "off" })).toBeUndefined();
    expect(defaultGraphCacheDir({ XDG_CACHE_HOME: "/c" })).toBe("/c/diffgraph/onnx");
    expect(defaultGraphCacheDir({})).toMatch(/\/\.cache\/diffgraph\/onnx$/);
    expect(nodeGraphCache("off")).toBeUndefined();
    expect(nodeGraphCache("/tmp/somewhere")!.dir).toBe("/tmp/somewhere");
    expect(new OnnxRuntime({ backends: onnxBackends, graphCache: false }).graphCache).toBeUndefined();
  });
});
