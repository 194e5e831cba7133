/**
 * The optimized-graph cache on Bun and Node (`OptimizedGraphCache` in core/onnx.ts): onnxruntime-node
 * writes each model's optimized graph once into a per-machine folder and later starts load it with
 * optimization off (issue 13: the UNet's session creation 264 → 160 ms).
 *
 * An entry is three files: the graph `<id>.onnx`, its weights `<id>.<suffix>.data` (every initializer
 * of 1 KiB or more, which onnxruntime writes there itself, `session.optimized_model_external_initializers_*`;
 * a model with control-flow subgraphs keeps them inside its graph, `GraphCacheKey.subgraphs`),
 * and the record `<id>.json` (each file's size, SHA-256 and stamp, what it was made from), where `id`
 * is the SHA-256 of the format, the model's SHA-256, onnxruntime's version, the provider, the options
 * that change the graph and this machine's CPU (an "all"-optimized graph may use kernels for its
 * instruction set). Weights outside the graph load faster: onnxruntime then reads them straight into
 * its tensors instead of parsing them into the graph's protobuf and copying them out again (emoji-64's
 * 23 MB UNet: its session is created 29 ms sooner, paired median of 14 interleaved cold CLIs).
 *
 * onnxruntime writes the graph to a temporary name, and the weights to a name no other writer picks;
 * the graph is parsed (it must name that weights file, or none) and both are hashed, and only then is
 * the graph renamed into place and the record written, so a crash mid-write leaves nothing under the
 * final names (its leftovers are removed by a later commit of the entry). A load whose files still
 * have the stamps (device, inode, size, change time) the record took trusts the record's hashes
 * instead of hashing the files again (≈ 13 ms per UNet per start); otherwise both are hashed first;
 * either way a session created from them is kept only if they did not change while it was created
 * (`unchanged`). A file that does not match its record, or that onnxruntime refuses, is removed with
 * the rest of its entry (unless another writer has replaced the entry since) and rebuilt: the cache
 * never fails a load. Entries of the earlier formats (1: weights inside the graph; 2: weights apart,
 * not prepacked; 3: prepacked, misaligned copies kept) are removed, with the weights file their record names, when the entry that replaces
 * them is written; their unnamed temporary files once they are ten minutes old, as this format's.
 *
 * Folder: the `dir` given (`graphCache` option, `--graph-cache`), else `DIFFGRAPH_CACHE_DIR`, else
 * `$XDG_CACHE_HOME/diffgraph/onnx`, else `~/.cache/diffgraph/onnx`. `off` (option or variable) turns it off.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { arch, cpus, homedir, platform } from "node:os";
import { join } from "node:path";
import { dropUnalignedPrepacked, externalDataFiles, OnnxFormatError, PREPACKED_ALIGNMENT, readOnnxGraph, type OnnxGraphInfo } from "../onnx-graph.ts";
import { stampSize } from "../model-source.ts";
import { fileStamp, replaceFile, settledStamp, tempSuffix } from "./digest-memo-node.ts";
import { type GraphCacheKey, type OptimizedGraphCache, type OptimizedGraphEntry } from "../onnx.ts";

export const GRAPH_CACHE_FORMAT = "diffgraph-optimized-graph/4";
/**
 * Earlier formats, whose entries are removed as they are replaced, with the machine string their ids
 * were made with: 1 held the weights inside the graph; 2 kept them apart but not prepacked; 3
 * prepacked them, misaligned ones included, which crash onnxruntime (`dropUnalignedPrepacked`).
 */
const EARLIER_FORMATS = [
  ["diffgraph-optimized-graph/1", () => formerMachineId()],
  ["diffgraph-optimized-graph/2", () => formerMachineId()],
  ["diffgraph-optimized-graph/3", () => machineId()],
] as const;

/** Initializers of at least this many bytes go to the weights file (onnxruntime's default threshold). */
const EXTERNAL_MIN_BYTES = 1024;

/**
 * A temporary graph or a weights file of an entry that no record names is removed by the entry's next
 * commit once it is this old: left by a writer that died, or replaced while a reader may have been
 * loading it. Younger ones may belong to a writer still at work.
 */
const LEFTOVER_MS = 10 * 60 * 1000;

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

/** One file of an entry as its record knows it. */
interface FileRecord {
  readonly size: number;
  readonly sha256: string;
  /** The file's stamp (`fileStamp`) when the record was written: while it is unchanged, loading skips the SHA-256. */
  readonly stamp?: string;
}

interface CacheRecord extends FileRecord {
  readonly format: string;
  /** The weights file, beside the graph (absent when the graph has no initializer of 1 KiB or more). */
  readonly data?: FileRecord & { readonly file: string };
  readonly model: string;
  readonly runtime: string;
  readonly provider: string;
  readonly options: unknown;
  readonly machine: string;
}

let machine: string | undefined;

/**
 * This machine, as far as an optimized graph depends on it (read once per process): the platform,
 * the CPU's model name and, on Linux, the instruction-set features it reports (`/proc/cpuinfo`'s
 * `flags`, or `Features` on Arm). The kernels onnxruntime picks, and the layout of the weights it
 * prepacks for them (format 3), follow those features; a virtual machine can hide some of them under
 * the same model name, and a cache folder can be shared (a home folder, a container image).
 */
export function machineId(): string {
  return (machine ??= `${platform()}-${arch()} ${cpus()[0]?.model?.trim() || "unknown CPU"}${cpuFeatures()}`);
}

/** The cache ids' machine string before format 3 (the model name only): earlier entries are found by it. */
function formerMachineId(): string {
  return `${platform()}-${arch()} ${cpus()[0]?.model?.trim() ?? "unknown CPU"}`;
}

function cpuFeatures(): string {
  if (platform() !== "linux") return "";
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => /^(flags|Features)\s*:/.test(l));
    const flags = line ? [...new Set(line.slice(line.indexOf(":") + 1).trim().split(/\s+/))].sort() : [];
    return flags.length ? ` [${flags.join(" ")}]` : "";
  } catch {
    return "";
  }
}

/** The cache id of a model under a key: the file name the graph and its record take. */
export function graphCacheId(modelSha256: string, key: Omit<GraphCacheKey, "sha256">, machine = machineId(), format = GRAPH_CACHE_FORMAT): Promise<string> {
  return sha256(canonical({ format, model: modelSha256, runtime: key.runtime, provider: key.provider, options: key.options, machine }));
}

async function removeQuietly(...paths: (string | undefined)[]): Promise<void> {
  await Promise.all(paths.map((p) => p && rm(p, { force: true }).catch(() => {})));
}

/**
 * The weights file a record names, inside the folder: only a plain name that begins with the
 * entry's id (a record edited to name `../x` or another entry's file is not followed, nor removed).
 */
function dataPathOf(root: string, id: string, record: Partial<CacheRecord> | undefined): string | undefined {
  const file = record?.data?.file;
  return typeof file === "string" && file.startsWith(`${id}.`) && file.endsWith(".data") && !/[\\/]/.test(file) && !file.includes("..") ? join(root, file) : undefined;
}

/** A record is under a kilobyte: read synchronously, as stamps are (`fileStamp`), on every start's lookup. */
async function readRecord(recordPath: string): Promise<CacheRecord | undefined> {
  try {
    return JSON.parse(readFileSync(recordPath, "utf8")) as CacheRecord;
  } catch {
    return undefined;
  }
}

/** Whether a file, read now, is the one its record describes. */
async function matches(path: string, want: FileRecord | undefined): Promise<boolean> {
  if (!want) return false;
  const data = await readFile(path).catch(() => undefined);
  return data !== undefined && data.length === want.size && (await sha256(data)) === want.sha256;
}

/**
 * Rewrite a verified record with its files' current stamps (temp + rename), if neither changed while
 * it was hashed; a failure only means the next load hashes again.
 */
async function restamp(recordPath: string, record: CacheRecord, paths: { graph: string; data?: string }, before: { graph?: string; data?: string }, settleMs?: number): Promise<void> {
  const graph = await fileStamp(paths.graph, settleMs);
  const data = paths.data ? await fileStamp(paths.data, settleMs) : undefined;
  if (!graph || graph !== before.graph || (paths.data && (!data || data !== before.data))) return;
  const next: CacheRecord = { ...record, stamp: graph, ...(record.data && data ? { data: { ...record.data, stamp: data } } : {}) };
  await replaceFile(recordPath, JSON.stringify(next, null, 1)).catch(() => {});
}

/** Temporary graphs and weights files of the entries `ids`, other than `keep`, older than `LEFTOVER_MS` (one listing of the folder). */
async function leftovers(root: string, ids: readonly string[], keep: string): Promise<string[]> {
  const names = await readdir(root).catch(() => [] as string[]);
  const out: string[] = [];
  for (const name of names) {
    if (name === keep || !ids.some((id) => name.startsWith(`${id}.`)) || !(name.endsWith(".data") || name.endsWith(".tmp.onnx"))) continue;
    const st = await stat(join(root, name)).catch(() => null);
    if (st?.isFile() && Date.now() - st.mtimeMs > LEFTOVER_MS) out.push(join(root, name));
  }
  return out;
}

const trusted = (stamp: string | undefined, want: FileRecord | undefined) => !!want && typeof want.stamp === "string" && stamp === want.stamp && stampSize(stamp) === want.size;

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
      mkdirSync(root, { recursive: true });
      let cachedFile: string | undefined;
      let hashed = false;
      const record = await readRecord(recordPath);
      const dataPath = dataPathOf(root, id, record);
      // The files as they were before they were checked (no settle time): `unchanged` compares. The
      // same stats give the settled stamps the record is checked against.
      const rawStamps = async () => [await fileStamp(path, 0), dataPath ? await fileStamp(dataPath, 0) : undefined] as const;
      const [rawGraph, rawData] = await rawStamps();
      if (record) {
        const stamp = settledStamp(rawGraph, settleMs);
        const dataStamp = settledStamp(rawData, settleMs);
        const named = !record.data || dataPath !== undefined;
        if (record.format === GRAPH_CACHE_FORMAT && named && trusted(stamp, record) && (!record.data || trusted(dataStamp, record.data))) {
          // Unwritten since they were hashed and put in place (same stamps): their hashes are the
          // record's, and onnxruntime reads the files itself (no copy of tens of MB through JS memory).
          cachedFile = path;
        } else if (record.format === GRAPH_CACHE_FORMAT && named && (await matches(path, record)) && (!dataPath || (await matches(dataPath, record.data)))) {
          // Hashed just now (fresh files, or files copied or touched since): stamp them, so the next
          // load need not hash them again, if they kept the stamps they had before the read.
          cachedFile = path;
          hashed = true;
          if (stamp !== undefined) await restamp(recordPath, record, { graph: path, ...(dataPath ? { data: dataPath } : {}) }, { graph: stamp, ...(dataStamp ? { data: dataStamp } : {}) }, settleMs);
        } else await removeQuietly(path, recordPath, dataPath); // partial, corrupted or of another format: rebuilt below
      } else await removeQuietly(recordPath); // none yet (a miss), or a record that is not JSON: replaced below
      const suffix = tempSuffix();
      const tempPath = join(root, `${id}.${suffix}.tmp.onnx`);
      const dataFile = `${id}.${suffix}.data`;
      const dataTemp = join(root, dataFile);
      const verified = cachedFile ? record : undefined;
      const unchanged = async () => {
        const [graph, data] = await rawStamps();
        return graph === rawGraph && data === rawData;
      };
      return {
        path,
        ...(cachedFile ? { cachedFile, unchanged } : {}),
        hashed,
        tempPath,
        writeConfig: key.subgraphs
          ? {}
          : {
              "session.optimized_model_external_initializers_file_name": dataFile,
              "session.optimized_model_external_initializers_min_size_in_bytes": String(EXTERNAL_MIN_BYTES),
              // The weights as the CPU kernels repack them at creation (MLAS's packed GEMM operands), stored
              // in the same weights file: a later session takes them as they are instead of packing again
              // (emoji-64's UNet: its creation −3.7 to −13 ms in three interleaved measurements, README "Loading";
              // same outputs; the weights file grows 23 → 30 MB). Packed for this machine's kernels, which
              // the key's `machine` names. Copies onnxruntime wrote misaligned are removed at commit
              // (`dropUnalignedPrepacked`): a session loaded with them crashes.
              "session.save_external_prepacked_constant_initializers": "1",
            },
        async commit(note) {
          let kept = false;
          try {
            if (!(await stat(tempPath).catch(() => null))?.isFile()) return `onnxruntime wrote no file at ${tempPath}`;
            const written = await readFile(tempPath);
            let info: OnnxGraphInfo;
            let graph: Uint8Array;
            let names: string[];
            let droppedNote: string | undefined;
            try {
              info = readOnnxGraph(written);
              // Prepacked weights at offsets onnxruntime's kernels cannot read are left to be packed at load.
              const edited = dropUnalignedPrepacked(written);
              graph = edited.bytes;
              if (edited.dropped.length) {
                // Counted per kernel: a graph may drop many copies of one kernel's weights.
                const perKernel = new Map<string, number>();
                for (const v of edited.dropped) { const k = v.split("|")[0] ?? "?"; perKernel.set(k, (perKernel.get(k) ?? 0) + 1); }
                const kernels = [...perKernel].map(([k, n]) => (n > 1 ? `${k} ×${n}` : k)).join(", ");
                droppedNote = `${edited.dropped.length} prepacked weight(s) written at offsets that are not a multiple of ${PREPACKED_ALIGNMENT} bytes are left out of the cache and packed at load (${kernels})`;
              }
              names = externalDataFiles(graph);
            } catch (err) {
              if (err instanceof OnnxFormatError) return `the optimized graph onnxruntime wrote does not parse (${err.message})`;
              throw err;
            }
            if (graph !== written) await writeFile(tempPath, graph);
            const data = (await stat(dataTemp).catch(() => null))?.isFile() ? await readFile(dataTemp) : undefined;
            // The graph must name exactly the weights file written beside it (or none), and a graph
            // whose weights are apart must hold no subgraph (onnxruntime refuses those: GraphCacheKey.subgraphs).
            if (names.length !== (data ? 1 : 0) || (data && names[0] !== dataFile)) return `the optimized graph names the weights file(s) ${JSON.stringify(names)}, not ${data ? JSON.stringify([dataFile]) : "none"}`;
            if (data && info.subgraphs) return "the optimized graph has control-flow subgraphs and its weights apart, which onnxruntime does not load";
            const [digest, dataDigest] = await Promise.all([sha256(graph), data ? sha256(data) : undefined]);
            const previous = await readRecord(recordPath);
            // The graph first: a record never points at files that are not fully there. Stamps are
            // taken after the rename (which sets the change time) and before anything else can write them.
            await rename(tempPath, path);
            kept = true;
            const stamp = await fileStamp(path, settleMs); // undefined for files this fresh (the default): the first load hashes and stamps them
            const dataStamp = data ? await fileStamp(dataTemp, settleMs) : undefined;
            const record: CacheRecord = {
              format: GRAPH_CACHE_FORMAT, size: graph.length, sha256: digest, ...(stamp ? { stamp } : {}),
              ...(data && dataDigest ? { data: { file: dataFile, size: data.length, sha256: dataDigest, ...(dataStamp ? { stamp: dataStamp } : {}) } } : {}),
              model, runtime: key.runtime, provider: key.provider, options: key.options, machine,
            };
            await replaceFile(recordPath, JSON.stringify(record, null, 1));
            // Said only once the entry is committed: a commit refused above says "not cached" instead.
            if (droppedNote) note?.(droppedNote);
            // What this entry replaces: another writer's weights under the same id, the earlier formats'
            // entries of this key (graph, record and weights), and old leftovers of this id that no record names.
            const old = dataPathOf(root, id, previous);
            const legacy: (string | undefined)[] = [];
            const earlierIds: string[] = [];
            for (const [format, machineOf] of EARLIER_FORMATS) {
              const earlier = await graphCacheId(model, key, machineOf(), format);
              const rec = join(root, `${earlier}.json`);
              // Its graph, record and named weights now; its unnamed temporary files, as this entry's,
              // only once they are old (an older diffgraph may be writing that entry right now).
              legacy.push(join(root, `${earlier}.onnx`), rec, dataPathOf(root, earlier, await readRecord(rec)));
              earlierIds.push(earlier);
            }
            await removeQuietly(old !== dataTemp ? old : undefined, ...legacy, ...(await leftovers(root, [id, ...earlierIds], dataFile)));
            return null;
          } catch (err) {
            return (err as Error).message;
          } finally {
            await removeQuietly(tempPath, kept ? undefined : dataTemp);
          }
        },
        async discard() {
          // Only the entry this lookup verified: another writer may have replaced it since (its graph
          // and weights are then not this load's to remove).
          const now = await readRecord(recordPath);
          if (!verified || !now || now.sha256 !== verified.sha256 || now.data?.file !== verified.data?.file) return;
          await removeQuietly(path, recordPath, dataPathOf(root, id, now));
        },
      };
    },
  };
}
