/**
 * The optimized-graph cache on Bun and Node (`OptimizedGraphCache` in core/onnx.ts): onnxruntime-node
 * writes each model's optimized graph once into a per-machine folder and later starts load it with
 * optimization off (issue 13: the UNet's session creation 264 → 160 ms).
 *
 * A file is `<id>.onnx` beside its record `<id>.json` (size, SHA-256, stamp, what it was made from), where
 * `id` is the SHA-256 of the model's SHA-256, onnxruntime's version, the provider, the options that
 * change the graph and this machine's CPU (an "all"-optimized graph may use kernels for its
 * instruction set). onnxruntime writes to a temporary name; the file is parsed and hashed, and only
 * then renamed into place, so a crash mid-write leaves nothing under the final name. A load whose file
 * still has the stamp (device, inode, size, change time) the record took after that rename trusts
 * the record's hash instead of hashing the file again (≈ 13 ms per UNet per start); a file that does
 * not match its record, or that onnxruntime refuses, is removed and rebuilt: the cache never fails a load.
 *
 * Folder: the `dir` given (`graphCache` option, `--graph-cache`), else `DIFFGRAPH_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/diffgraph/onnx`, else `~/.cache/diffgraph/onnx`. `off` (option or variable) turns it off.
 */
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import { arch, cpus, homedir, platform } from "node:os";
import { join } from "node:path";
import { OnnxFormatError, readOnnxGraph } from "../onnx-graph.ts";
import { stampSize } from "../model-source.ts";
import { fileStamp, replaceFile, tempSuffix } from "./digest-memo-node.ts";
import type { GraphCacheKey, OptimizedGraphCache, OptimizedGraphEntry } from "../onnx.ts";

export const GRAPH_CACHE_FORMAT = "diffgraph-optimized-graph/1";

const OFF = /^(off|0|false|no|none)$/i;

/** The folder a cache uses when none is given, or undefined when `DIFFGRAPH_CACHE_DIR` turns it off. */
export function defaultGraphCacheDir(env: Readonly<Record<string, string | undefined>> = process.env): string | undefined {
  const set = env.DIFFGRAPH_CACHE_DIR;
  if (set !== undefined && set !== "") return OFF.test(set) ? undefined : set;
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "diffgraph", "onnx");
}

/**
 * SHA-256 in hex: Bun's own hasher under Bun (no import; Web Crypto's digest copies its input, +1.7 GB
 * for a 1.7 GB single-file UNet), else node:crypto, imported only when a digest is needed (its import
 * alone costs a cold start ≈ 9 ms under Bun, and a graph-cache hit hashes nothing).
 */
async function sha256(data: Uint8Array | string): Promise<string> {
  const B = (globalThis as { Bun?: { CryptoHasher: new (algorithm: string) => { update(d: Uint8Array | string): { digest(enc: "hex"): string } } } }).Bun;
  if (B) return new B.CryptoHasher("sha256").update(data).digest("hex");
  const { createHash } = await import("node:crypto");
  return createHash("sha256").update(data).digest("hex");
}

/** JSON with object keys sorted, so equal options give equal ids. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  return JSON.stringify(v ?? null);
}

interface CacheRecord {
  readonly format: string;
  readonly size: number;
  readonly sha256: string;
  /** The graph file's stamp (`fileStamp`) when the record was written: while it is unchanged, loading skips the SHA-256. */
  readonly stamp?: string;
  readonly model: string;
  readonly runtime: string;
  readonly provider: string;
  readonly options: unknown;
  readonly machine: string;
}

let machine: string | undefined;

/** This machine, as far as an optimized graph depends on it (read once per process). */
export function machineId(): string {
  return (machine ??= `${platform()}-${arch()} ${cpus()[0]?.model?.trim() ?? "unknown CPU"}`);
}

/** The cache id of a model under a key: the file name both the graph and its record take. */
export function graphCacheId(modelSha256: string, key: Omit<GraphCacheKey, "sha256">, machine = machineId()): Promise<string> {
  return sha256(canonical({ format: GRAPH_CACHE_FORMAT, model: modelSha256, runtime: key.runtime, provider: key.provider, options: key.options, machine }));
}

async function removeQuietly(...paths: string[]): Promise<void> {
  await Promise.all(paths.map((p) => rm(p, { force: true }).catch(() => {})));
}

/** Rewrite a verified record with the graph file's current stamp (temp + rename); a failure only means the next load hashes again. */
async function restamp(path: string, recordPath: string, record: CacheRecord, before: string, settleMs?: number): Promise<void> {
  const stamp = await fileStamp(path, settleMs);
  if (!stamp || stamp !== before) return; // written during the read: what was hashed may not be what is there
  await replaceFile(recordPath, JSON.stringify({ ...record, stamp }, null, 1)).catch(() => {});
}

/** `settleMs`: how long a graph file must be unchanged before its stamp counts (`fileStamp`; tests shorten it). */
export function nodeGraphCache(dir?: string, settleMs?: number): OptimizedGraphCache | undefined {
  const root = dir === undefined || dir === "" ? defaultGraphCacheDir() : OFF.test(dir) ? undefined : dir;
  if (!root) return undefined;
  return {
    dir: root,
    async entry(bytes, key): Promise<OptimizedGraphEntry> {
      if (!key.sha256 && !bytes) throw new Error("the model's bytes or its SHA-256 are needed");
      const model = key.sha256 ?? (await sha256(bytes!));
      const machine = machineId();
      const id = await graphCacheId(model, key, machine);
      const path = join(root, `${id}.onnx`);
      const recordPath = join(root, `${id}.json`);
      await mkdir(root, { recursive: true });
      let cached: Uint8Array | undefined;
      let cachedFile: string | undefined;
      try {
        const record = JSON.parse(await readFile(recordPath, "utf8")) as CacheRecord;
        const stamp = await fileStamp(path, settleMs);
        if (record.format === GRAPH_CACHE_FORMAT && typeof record.stamp === "string" && stamp === record.stamp && stampSize(stamp) === record.size) {
          // Unwritten since it was hashed and renamed into place (same stamp): its hash is the record's,
          // and onnxruntime reads the file itself (no copy of tens of MB through JS memory).
          cachedFile = path;
        } else {
          const data = await readFile(path);
          if (record.format === GRAPH_CACHE_FORMAT && data.length === record.size && (await sha256(data)) === record.sha256) {
            cached = new Uint8Array(data.buffer, data.byteOffset, data.length);
            // Hashed just now (a record from before stamps, or a file copied or touched since): stamp it,
            // so the next load need not hash it again, if it kept the stamp it had before the read.
            if (stamp !== undefined) await restamp(path, recordPath, record, stamp, settleMs);
          } else await removeQuietly(path, recordPath); // partial, corrupted or of another format: rebuilt below
        }
      } catch (err) {
        // No entry yet (ENOENT), or a record that is not JSON: either way a miss; a bad one is replaced.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") await removeQuietly(path, recordPath);
      }
      const tempPath = join(root, `${id}.${tempSuffix()}.tmp.onnx`);
      return {
        path,
        ...(cached ? { cached } : {}),
        ...(cachedFile ? { cachedFile } : {}),
        tempPath,
        async commit() {
          try {
            if (!(await stat(tempPath).catch(() => null))?.isFile()) return `onnxruntime wrote no file at ${tempPath}`;
            const data = await readFile(tempPath);
            try {
              readOnnxGraph(data);
            } catch (err) {
              if (err instanceof OnnxFormatError) return `the optimized graph onnxruntime wrote does not parse (${err.message})`;
              throw err;
            }
            const digest = await sha256(data);
            // The graph first: a record never points at a file that is not fully there. Its stamp is
            // taken after the rename (which sets the change time) and before anything else can write it.
            await rename(tempPath, path);
            const stamp = await fileStamp(path, settleMs); // undefined for a file this fresh (the default): the first load hashes and stamps it
            const record: CacheRecord = { format: GRAPH_CACHE_FORMAT, size: data.length, sha256: digest, ...(stamp ? { stamp } : {}), model, runtime: key.runtime, provider: key.provider, options: key.options, machine };
            await replaceFile(recordPath, JSON.stringify(record, null, 1));
            return null;
          } catch (err) {
            return (err as Error).message;
          } finally {
            await removeQuietly(tempPath);
          }
        },
        async discard() {
          await removeQuietly(path, recordPath);
        },
      };
    },
  };
}
