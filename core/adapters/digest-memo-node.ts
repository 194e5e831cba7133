/**
 * The digest memo on Bun and Node (`DigestMemo` in core/model-source.ts): one small file per stamp,
 * `<folder>/<dev>-<inode>-<size>-<mtime ns>-<ctime ns>[.<kind>]` holding the value (a SHA-256, or an
 * ONNX file's inputs and outputs as JSON), written to a temporary name and
 * renamed, so a crash leaves no half-written entry. Entries are a few bytes each and never wrong (a
 * stamp names one state of one file), so nothing prunes them.
 *
 * The adapter (`node.ts`) keeps it in `digests/` inside the optimized-graph cache's default folder.
 */
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { SHA256_HEX } from "../manifest.ts";
import type { DigestMemo, MemoKind } from "../model-source.ts";

/**
 * How long after its last change a file's stamp is trusted. File times tick coarsely (a few ms on
 * Linux), so a file changed twice within one tick, size kept, would keep its stamp: a stamp is given
 * only for a file unchanged for this long (git's "racily clean" rule), and a fresh file is hashed.
 */
export const STAMP_SETTLE_MS = 1000;

/**
 * A file's stamp: device, inode, size, modification and change times in nanoseconds; undefined when
 * it cannot be read, or changed less than `settleMs` ago.
 */
export async function fileStamp(path: string, settleMs = STAMP_SETTLE_MS): Promise<string | undefined> {
  try {
    // Synchronous: a stat takes microseconds, an asynchronous one a trip through the thread pool and
    // event loop, and a cold start takes a few dozen stamps.
    const s = statSync(path, { bigint: true, throwIfNoEntry: false });
    if (!s || !s.isFile()) return undefined;
    return settledStamp(`${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`, settleMs);
  } catch {
    return undefined;
  }
}

/** A stamp (`fileStamp(path, 0)`) as `fileStamp(path, settleMs)` would have given it at the same stat: undefined while it is too fresh. */
export function settledStamp(stamp: string | undefined, settleMs = STAMP_SETTLE_MS): string | undefined {
  if (stamp === undefined) return undefined;
  const ctimeNs = BigInt(stamp.slice(stamp.lastIndexOf(":") + 1));
  return Date.now() - Number(ctimeNs / 1_000_000n) < settleMs ? undefined : stamp;
}

/**
 * `<pid>.<8 random hex digits>`: a temporary file name no other process or call picks. Web Crypto's
 * `getRandomValues`, not node:crypto, whose import alone costs a cold start ≈ 9 ms under Bun.
 */
export function tempSuffix(): string {
  const r = crypto.getRandomValues(new Uint8Array(4));
  return `${process.pid}.${Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Write `data` to `path` through a temporary name in the same folder and a rename, so a reader sees
 * the old file or the whole new one, never part of it; the temporary file is removed on failure.
 */
export async function replaceFile(path: string, data: string | Uint8Array): Promise<void> {
  const temp = `${path}.${tempSuffix()}.tmp`;
  try {
    await writeFile(temp, data);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true }).catch(() => {});
    throw err;
  }
}

/** The largest value kept (an ONNX file's inputs and outputs are a few hundred bytes). */
const MAX_VALUE = 64 * 1024;

export function nodeDigestMemo(dir: string): DigestMemo {
  // The stamp is digits and colons: its own file name, no hashing needed; other kinds add a suffix.
  const at = (stamp: string, kind: MemoKind) => join(dir, `${stamp.replaceAll(":", "-")}${kind === "sha256" ? "" : `.${kind}`}`);
  const valid = (value: string, kind: MemoKind) => (kind === "sha256" ? SHA256_HEX.test(value) : value.length > 0 && value.length <= MAX_VALUE);
  return {
    async get(stamp, kind = "sha256") {
      try {
        const v = readFileSync(at(stamp, kind), "utf8").trim(); // a few bytes: synchronously, as fileStamp's stat
        return valid(v, kind) ? v : undefined;
      } catch {
        return undefined;
      }
    },
    async set(stamp, value, kind = "sha256") {
      if (!valid(value, kind)) return;
      try {
        await mkdir(dir, { recursive: true });
        await replaceFile(at(stamp, kind), value);
      } catch {
        // a memo that cannot be written is a miss next time
      }
    },
  };
}
