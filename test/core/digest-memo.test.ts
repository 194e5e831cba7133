/**
 * The digest memo (core/adapters/digest-memo-node.ts, used by core/manifest.ts's verifiedSource):
 * a model folder with a manifest is hashed once and then trusted while each file keeps its stamp
 * (device, inode, size, modification and change time); any write changes the stamp (the change time
 * moves even when the modification time is put back), so a corrupted file is still caught; a file
 * changed less than the settle time ago is always hashed; a memo that cannot be read is a miss.
 */
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultDigestDir, fileSource } from "../../core/adapters/node.ts";
import { fileStamp, nodeDigestMemo, STAMP_SETTLE_MS } from "../../core/adapters/digest-memo-node.ts";
import { openModelFolder } from "../../core/model-folder.ts";

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
    const open = () => openModelFolder(fileSource(dir, memo, 0));
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
    await (await openModelFolder(fileSource(dir, memo, 0))).read(UNET);
    const before = statSync(file);
    const b = readFileSync(file);
    b[Math.floor(b.length / 2)]! ^= 0x01;
    writeFileSync(file, b);
    utimesSync(file, before.atime, before.mtime);
    expect(Math.trunc(statSync(file).mtimeMs)).toBe(Math.trunc(before.mtimeMs));
    hashes = 0;
    await expect((await openModelFolder(fileSource(dir, memo, 0))).read(UNET)).rejects.toThrow(/unet\/model\.onnx: SHA-256 .* does not match/);
    expect(hashes).toBe(1);
  });

  test("a file changed less than the settle time ago gets no stamp and is hashed on every read", async () => {
    const { dir, memoDir, memo } = fixture(); // just copied: every file is fresh
    expect(STAMP_SETTLE_MS).toBeGreaterThan(0);
    expect(await fileStamp(join(dir, UNET))).toBeUndefined();
    expect(await fileStamp(join(dir, UNET), 0)).toMatch(/^\d+:\d+:\d+:\d+:\d+$/);
    for (let i = 0; i < 2; i++) await (await openModelFolder(fileSource(dir, memo))).read(UNET);
    expect(hashes).toBe(2);
    expect(readdirSync(base).includes(memoDir.split("/").at(-1)!) ? readdirSync(memoDir) : []).toEqual([]);
  });

  test("a memo entry that is not a digest, or a digest the manifest does not give, is a miss: the file is hashed", async () => {
    const { dir, memoDir, memo } = fixture();
    await (await openModelFolder(fileSource(dir, memo, 0))).read(UNET);
    const st = statSync(join(dir, UNET), { bigint: true });
    const entry = join(memoDir, [st.dev, st.ino, st.size, st.mtimeNs, st.ctimeNs].join("-"));
    expect(readdirSync(memoDir)).toContain(entry.split("/").at(-1)!);
    for (const junk of ["not a digest", "ab".repeat(32)]) {
      writeFileSync(entry, junk);
      hashes = 0;
      await (await openModelFolder(fileSource(dir, memo, 0))).read(UNET);
      expect(hashes).toBe(1);
      expect(readFileSync(entry, "utf8")).not.toBe(junk); // rewritten with the real digest
    }
  });

  test("a memo folder that cannot be written costs only the hash", async () => {
    const { dir } = fixture();
    const blocker = join(base, `file${n++}`);
    writeFileSync(blocker, "x");
    const memo = nodeDigestMemo(join(blocker, "sub"));
    for (let i = 0; i < 2; i++) await (await openModelFolder(fileSource(dir, memo, 0))).read(UNET);
    expect(hashes).toBe(2);
  });

  test("folder: digests/ beside the optimized graphs; DIFFGRAPH_CACHE_DIR=off turns it off", () => {
    expect(defaultDigestDir({ DIFFGRAPH_CACHE_DIR: "/x/y" })).toBe("/x/y/digests");
    expect(defaultDigestDir({ DIFFGRAPH_CACHE_DIR: "off" })).toBeUndefined();
    expect(defaultDigestDir({ XDG_CACHE_HOME: "/c" })).toBe("/c/diffgraph/onnx/digests");
  });
});
