/**
 * The digest memo (core/adapters/digest-memo-node.ts, used by core/manifest.ts's verifiedSource):
 * a model folder with a manifest is hashed once and then trusted while each file keeps its stamp
 * (device, inode, size, modification and change time); any write changes the stamp (the change time
 * moves even when the modification time is put back), so a corrupted file is still caught; a file
 * changed less than the settle time ago is always hashed; a memo that cannot be read is a miss.
 * The same memo keeps an ONNX file's inputs and outputs (core/onnx.ts), so an unchanged model is not
 * read at open.
 */
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultDigestDir, fileSource } from "../../core/adapters/node.ts";
import { fileStamp, nodeDigestMemo, STAMP_SETTLE_MS } from "../../core/adapters/digest-memo-node.ts";
import { openModelFolder } from "../../core/model-folder.ts";
import type { ModelSource } from "../../core/model-source.ts";
import { onnxBackends } from "../../core/adapters/node.ts";
import { nodeGraphCache } from "../../core/adapters/graph-cache-node.ts";
import { OnnxRuntime, rememberedIO } from "../../core/onnx.ts";

const base = mkdtempSync(join(tmpdir(), "dg-digests-"));
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;

/** A copy of tiny-sd (it has a manifest) and an empty memo folder. */
function fixture() {
  const dir = join(base, `m${n}`);
  const memoDir = join(base, `d${n++}`);
  cpSync("models/tiny-sd", dir, { recursive: true });
  return { dir, memoDir, memo: nodeDigestMemo(memoDir) };
}

// Count SHA-256 computations of the UNet (the manifest check hashes with crypto.subtle.digest;
// opening the folder also hashes model_index.json).
const UNET_BYTES = statSync("models/tiny-sd/unet/model.onnx").size;
let hashes = 0;
const realDigest = crypto.subtle.digest.bind(crypto.subtle);
beforeEach(() => {
  hashes = 0;
  (crypto.subtle as { digest: typeof realDigest }).digest = (alg, data) => {
    if ((data as ArrayBufferView).byteLength === UNET_BYTES) hashes++;
    return realDigest(alg, data);
  };
});
afterEach(() => {
  (crypto.subtle as { digest: typeof realDigest }).digest = realDigest;
});

const UNET = "unet/model.onnx";

describe("digest memo", () => {
  test("the first read of a settled file hashes it and remembers; the next reads trust the stamp", async () => {
    const { dir, memoDir, memo } = fixture();
    const open = () => openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }));
    const want = readFileSync(join(dir, UNET));
    expect(await (await open()).read(UNET)).toEqual(new Uint8Array(want));
    expect(hashes).toBe(1);
    expect(readdirSync(memoDir)).toHaveLength(2); // model_index.json and the UNet
    hashes = 0;
    expect(await (await open()).read(UNET)).toEqual(new Uint8Array(want));
    expect(hashes).toBe(0);
  });

  test("a byte flipped in place, size and modification time put back, is still caught (the change time moved)", async () => {
    const { dir, memo } = fixture();
    const file = join(dir, UNET);
    await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET);
    const before = statSync(file);
    const b = readFileSync(file);
    b[Math.floor(b.length / 2)]! ^= 0x01;
    writeFileSync(file, b);
    utimesSync(file, before.atime, before.mtime);
    expect(Math.trunc(statSync(file).mtimeMs)).toBe(Math.trunc(before.mtimeMs));
    hashes = 0;
    await expect((await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET)).rejects.toThrow(/unet\/model\.onnx: SHA-256 .* does not match/);
    expect(hashes).toBe(1);
  });

  test("a file changed less than the settle time ago gets no stamp and is hashed on every read", async () => {
    const { dir, memoDir, memo } = fixture(); // just copied: every file is fresh
    expect(STAMP_SETTLE_MS).toBeGreaterThan(0);
    expect(await fileStamp(join(dir, UNET))).toBeUndefined();
    expect(await fileStamp(join(dir, UNET), 0)).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    for (let i = 0; i < 2; i++) await (await openModelFolder(fileSource(dir, { digests: memo }))).read(UNET);
    expect(hashes).toBe(2);
    expect(readdirSync(base).includes(memoDir.split("/").at(-1)!) ? readdirSync(memoDir) : []).toEqual([]);
  });

  test("a memo entry that is not a digest, or a digest the manifest does not give, is a miss: the file is hashed", async () => {
    const { dir, memoDir, memo } = fixture();
    await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET);
    const st = statSync(join(dir, UNET), { bigint: true });
    const entry = join(memoDir, [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join("-"));
    expect(readdirSync(memoDir)).toContain(entry.split("/").at(-1)!);
    for (const junk of ["not a digest", "ab".repeat(32)]) {
      writeFileSync(entry, junk);
      hashes = 0;
      await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET);
      expect(hashes).toBe(1);
      expect(readFileSync(entry, "utf8")).not.toBe(junk); // rewritten with the real digest
    }
  });

  test("a memo folder that cannot be written costs only the hash", async () => {
    const { dir } = fixture();
    const blocker = join(base, `file${n++}`);
    writeFileSync(blocker, "x");
    const memo = nodeDigestMemo(join(blocker, "sub"));
    for (let i = 0; i < 2; i++) await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET);
    expect(hashes).toBe(2);
  });

  test("folder: digests/ beside the optimized graphs; DIFFGRAPH_CACHE_DIR=off turns it off", () => {
    expect(defaultDigestDir({ DIFFGRAPH_CACHE_DIR: "/x/y" })).toBe("/x/y/digests");
    expect(defaultDigestDir({ DIFFGRAPH_CACHE_DIR: "off" })).toBeUndefined();
    expect(defaultDigestDir({ XDG_CACHE_HOME: "/c" })).toBe("/c/diffgraph/onnx/digests");
  });
});

/** `source` with its reads of `path` counted (stamp and memo passed through). */
function counting(source: ModelSource, path: string): { reads: number; source: ModelSource } {
  const c: { reads: number; source: ModelSource } = { reads: 0, source };
  c.source = { ...source, read: (p: string) => ((p === path && c.reads++), source.read(p)) };
  return c;
}

const FEEDS = {
  sample: { dims: [1, 4, 8, 8], data: Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)) },
  timestep: { dims: [1], data: Float32Array.of(500) },
  encoder_hidden_states: { dims: [1, 77, 32], data: Float32Array.from({ length: 77 * 32 }, (_, i) => Math.cos(i / 7)) },
};

describe("remembered ONNX inputs and outputs", () => {
  const runtime = (graphCache: string | false) =>
    new OnnxRuntime({ backends: { ...onnxBackends, graphCache: (d?: string) => nodeGraphCache(d, 0) }, executionProvider: "cpu", threads: 1, graphCache });

  test("an unchanged model is not read at open once verified and remembered; it reads it when a session needs it, same outputs", async () => {
    const { dir, memo } = fixture();
    const opens: { reads: number; inputs: unknown; outputs: unknown }[] = [];
    let reference: Float32Array | undefined;
    for (let i = 0; i < 3; i++) {
      const c = counting(await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 })), UNET);
      const rt = runtime(false);
      const m = await rt.load(c.source, UNET, { role: "noise-predictor" });
      opens.push({ reads: c.reads, inputs: m.inputs, outputs: m.outputs });
      const out = (await m.run(FEEDS)).out_sample!.data as Float32Array;
      if (i === 0) reference = out;
      else expect(out).toEqual(reference!);
      if (i === 2) expect(c.reads).toBe(1); // read for the session, not at open
      await rt.dispose();
    }
    // 1st: read (and verified); 2nd: read again, now remembered; 3rd: not read at open.
    expect(opens.map((o) => o.reads)).toEqual([1, 1, 0]);
    expect(opens[2]!.inputs).toEqual(opens[0]!.inputs);
    expect(opens[2]!.outputs).toEqual(opens[0]!.outputs);
  });

  test("with its optimized graph cached as well, the model file is never read", async () => {
    const { dir, memo } = fixture();
    const cacheDir = join(base, `g${n++}`);
    for (let i = 0; i < 2; i++) {
      const rt = runtime(cacheDir);
      await (await rt.load(await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 })), UNET, { role: "noise-predictor" })).run(FEEDS);
      await rt.dispose();
    }
    const c = counting(await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 })), UNET);
    const rt = runtime(cacheDir);
    await (await rt.load(c.source, UNET, { role: "noise-predictor" })).run(FEEDS);
    expect(rt.created.map((x) => x.from)).toEqual(["cache"]);
    expect(c.reads).toBe(0);
    await rt.dispose();
  });

  test("a remembered model changed in place (size and modification time put back) is read and refused at open", async () => {
    const { dir, memo } = fixture();
    for (let i = 0; i < 2; i++) await runtime(false).load(await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 })), UNET);
    const file = join(dir, UNET);
    const before = statSync(file);
    const b = readFileSync(file);
    b[Math.floor(b.length / 2)]! ^= 0x01;
    writeFileSync(file, b);
    utimesSync(file, before.atime, before.mtime);
    await expect(runtime(false).load(await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 })), UNET)).rejects.toThrow(/unet\/model\.onnx: SHA-256 .* does not match/);
  });

  for (const manifest of [true, false]) {
    test(`a remembered model changed between open and first run is refused naming it; the backend stays usable (${manifest ? "with" : "without"} a manifest)`, async () => {
      const { dir, memo } = fixture();
      if (!manifest) rmSync(join(dir, "manifest.sha256.json"));
      const open = async () => openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }));
      for (let i = 0; i < 2; i++) await runtime(false).load(await open(), UNET); // remembered now
      const rt = runtime(false);
      const unet = await rt.load(await open(), UNET, { role: "noise-predictor" });
      const file = join(dir, UNET);
      const b = readFileSync(file);
      b[Math.floor(b.length / 2)]! ^= 0x01;
      writeFileSync(file, b);
      await expect(unet.run(FEEDS)).rejects.toThrow(manifest ? /unet\/model\.onnx: SHA-256 .* does not match/ : /unet\/model\.onnx: changed since the pipeline was opened/);
      // The file's fault, not the backend's: another model of the same runtime still loads and runs.
      const vae = await rt.load(await open(), "vae_decoder/model.onnx");
      const out = await vae.run({ latent_sample: { dims: [1, 4, 8, 8], data: new Float32Array(256) } });
      expect(out.sample!.dims).toEqual([1, 3, 64, 64]);
      // A failed read is not kept: asked again, the model reads the file again (still changed, so refused again).
      await expect(unet.run(FEEDS)).rejects.toThrow(/unet\/model\.onnx/);
      await rt.dispose();
    });
  }

  test("behind a manifest, a stamp whose size is not the manifest's vouches for nothing", async () => {
    const { dir, memo } = fixture();
    const manifestPath = join(dir, "manifest.sha256.json");
    await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).read(UNET);
    const verified = await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }));
    expect(await verified.stamp!(UNET)).toMatch(/^\d+:/);
    const m = JSON.parse(readFileSync(manifestPath, "utf8"));
    m.files[UNET].size += 1;
    writeFileSync(manifestPath, JSON.stringify(m));
    expect(await (await openModelFolder(fileSource(dir, { digests: memo, settleMs: 0 }))).stamp!(UNET)).toBeUndefined();
  });

  test("a remembered entry that is not JSON, of another format or with a malformed field is a miss", () => {
    const good = { format: 3 as const, inputs: [{ name: "sample", type: "float32", isTensor: true, shape: ["batch", 4, 8, 8] }], outputs: [], externalData: [], subgraphs: false, sha256: "ab".repeat(32) };
    expect(rememberedIO(JSON.stringify(good))).toEqual(good);
    expect(rememberedIO(undefined)).toBeUndefined();
    expect(rememberedIO("{ not json")).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, format: 1 }))).toBeUndefined();
    // Format 2's external data came from a byte scan that also reported inline tensors' leftover entries.
    expect(rememberedIO(JSON.stringify({ ...good, format: 2 }))).toBeUndefined();
    // The first format did not say whether the graph has subgraphs: a miss, so the file is read again.
    const { subgraphs: _, ...first } = good;
    expect(rememberedIO(JSON.stringify({ ...first, format: 1 }))).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, subgraphs: "no" }))).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, sha256: "xyz" }))).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, inputs: [{ name: 1 }] }))).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, inputs: [{ ...good.inputs[0], shape: [null] }] }))).toBeUndefined();
    expect(rememberedIO(JSON.stringify({ ...good, externalData: [3] }))).toBeUndefined();
  });
});
