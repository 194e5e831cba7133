/**
 * The Bun/Node file source (core/adapters/node.ts): files up to SYNC_READ_MAX_BYTES are read
 * synchronously, larger ones asynchronously; both give the file's exact bytes, and both name the
 * file in the same errors. `exists` is true for files only.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileSource, SYNC_READ_MAX_BYTES } from "../../core/adapters/node.ts";

const dir = mkdtempSync(join(tmpdir(), "dg-file-source-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);

describe("fileSource", () => {
  test("a file at the threshold, and one above it, read back exactly (the synchronous and the asynchronous read)", async () => {
    const small = bytes(SYNC_READ_MAX_BYTES, 1);
    const large = bytes(SYNC_READ_MAX_BYTES + 1, 2);
    writeFileSync(join(dir, "small.bin"), small);
    writeFileSync(join(dir, "large.bin"), large);
    writeFileSync(join(dir, "empty.bin"), new Uint8Array(0));
    const src = fileSource(dir, { digests: false });
    expect(await src.read("small.bin")).toEqual(small);
    expect(await src.read("large.bin")).toEqual(large);
    expect((await src.read("empty.bin")).length).toBe(0);
  });

  test("a missing file, a folder and a path out of the folder are errors naming the path; exists is true for files only", async () => {
    mkdirSync(join(dir, "sub"), { recursive: true });
    const src = fileSource(dir, { digests: false });
    await expect(src.read("nope.json")).rejects.toThrow(/nope\.json: file not found/);
    await expect(src.read("sub")).rejects.toThrow(/sub: cannot be read \(EISDIR\)/);
    await expect(src.read("../x.json")).rejects.toThrow(/path escapes the model folder/);
    writeFileSync(join(dir, "a.json"), "{}");
    expect(await src.exists("a.json")).toBe(true);
    expect(await src.exists("sub")).toBe(false);
    expect(await src.exists("nope.json")).toBe(false);
  });
});
