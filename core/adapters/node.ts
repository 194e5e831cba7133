/**
 * Bun and Node adapter: model files from the local file system (node:fs, which Bun implements) and
 * onnxruntime-node as the native backend, onnxruntime-web for the WASM provider; the cores the
 * thread policy shares out, the optimized-graph cache (`graph-cache-node.ts`) and onnxruntime's
 * telemetry turned off unless the user chose (`ort-telemetry-node.ts`).
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { isAbsolute, join, relative, resolve } from "node:path";
import { ModelFileError, normalizePath, type DigestMemo, type ModelSource } from "../model-source.ts";
import type { OnnxBackends, OrtModuleLike } from "../onnx.ts";
import { fileStamp, nodeDigestMemo } from "./digest-memo-node.ts";
import { defaultGraphCacheDir, nodeGraphCache } from "./graph-cache-node.ts";
import { ortTelemetryOff } from "./ort-telemetry-node.ts";

/**
 * The folder of the per-machine digest memo: `digests/` in the optimized-graph cache's default folder
 * (`DIFFGRAPH_CACHE_DIR`, else `$XDG_CACHE_HOME/diffgraph/onnx`, else `~/.cache/diffgraph/onnx`);
 * undefined with `DIFFGRAPH_CACHE_DIR=off`, and every manifest check then hashes its file.
 */
export function defaultDigestDir(env: Readonly<Record<string, string | undefined>> = process.env): string | undefined {
  const root = defaultGraphCacheDir(env);
  return root ? join(root, "digests") : undefined;
}

let memo: DigestMemo | undefined | null = null;
const defaultDigestMemo = (): DigestMemo | undefined => {
  if (memo === null) {
    const dir = defaultDigestDir();
    memo = dir ? nodeDigestMemo(dir) : undefined;
  }
  return memo;
};

export interface FileSourceOptions {
  /** The memo manifest checks and ONNX opens consult: default the per-machine one; false: none (always hash and read). */
  readonly digests?: DigestMemo | false;
  /** How long a file must be unchanged before its stamp counts (`fileStamp`; tests shorten it). */
  readonly settleMs?: number;
}

/** Files up to this size are read synchronously (`fileSource`'s `read`). */
export const SYNC_READ_MAX_BYTES = 1 << 20;

export function fileSource(dir: string, options: FileSourceOptions = {}): ModelSource {
  const digests = options.digests === false ? undefined : (options.digests ?? defaultDigestMemo());
  const { settleMs } = options;
  const root = resolve(dir);
  const shown = relative(process.cwd(), root) || ".";
  const at = (path: string) => {
    const rel = normalizePath(path);
    const full = resolve(root, rel);
    const back = relative(root, full);
    if (back.startsWith("..") || isAbsolute(back)) throw new ModelFileError(`${shown}/${path}`, "path escapes the model folder");
    return { full, shownPath: `${shown}/${rel}` };
  };
  return {
    root: shown,
    async read(path) {
      const { full, shownPath } = at(path);
      try {
        // A view on readFile's own buffer, not a copy of it (a UNet is tens of MB, read on every open).
        // Small files (configs, tokenizers, records) synchronously: microseconds for a local file,
        // where each asynchronous call costs a trip through the runtime's thread pool and event loop
        // (opening emoji-64 reads a dozen of them: its open −16 ms, 12 interleaved cold CLIs). Large
        // ones (models) asynchronously, so a server's event loop is never held for a model's read.
        const st = statSync(full, { throwIfNoEntry: false });
        // A regular file only: a FIFO or device reports size 0 and could block a synchronous read.
        const b = st?.isFile() && st.size <= SYNC_READ_MAX_BYTES ? readFileSync(full) : await readFile(full);
        return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new ModelFileError(shownPath, code === "ENOENT" ? "file not found" : `cannot be read (${code ?? (err as Error).message})`, { cause: err });
      }
    },
    async exists(path) {
      try {
        return statSync(at(path).full, { throwIfNoEntry: false })?.isFile() ?? false; // a stat: synchronous, as above
      } catch {
        return false;
      }
    },
    sub(path) {
      return fileSource(at(path).full, options);
    },
    localPath: (path) => at(path).full,
    stamp: (path) => fileStamp(at(path).full, settleMs),
    ...(digests ? { digests } : {}),
  };
}

const host = "Bun" in globalThis ? "bun" : "node";

let prewarmed: Promise<boolean> | undefined;

/**
 * Bun: create onnxruntime-node's environment on a worker thread now (`ort-prewarm-node.ts`, once per
 * process). Resolves true once it exists, false (and nothing else changes) where the worker could not
 * do it; never rejects. Node has no Web `Worker`, and keeps creating it with its first session.
 */
export function prewarmNative(): Promise<boolean> {
  return (prewarmed ??= (async () => {
    // Beside this file (in the CLI's bundle too: Bun keeps each bundled module's own import.meta.url).
    const script = new URL("./ort-prewarm-node.ts", import.meta.url);
    if (!existsSync(script)) return false;
    await ortTelemetryOff(); // before the environment is created: it reads the variable then
    const worker = new Worker(script.href) as Worker & { unref?(): void };
    worker.unref?.(); // never holds a finished process open (Bun's Worker has unref)
    return new Promise<boolean>((resolve) => {
      worker.onmessage = (e: MessageEvent) => resolve((e.data as { ok?: boolean })?.ok === true);
      worker.onerror = () => resolve(false);
      worker.addEventListener("close", () => resolve(false));
    });
  })().catch(() => false));
}

export const onnxBackends: OnnxBackends = {
  host,
  cores: availableParallelism(),
  graphCache: nodeGraphCache,
  native: async () => {
    await ortTelemetryOff(); // before onnxruntime-node creates its environment, which reads the variable
    return (await import("onnxruntime-node")) as unknown as OrtModuleLike;
  },
  ...(host === "bun" && typeof Worker === "function" ? { prewarm: () => void prewarmNative() } : {}),
  web: async () => {
    const ort = (await import("onnxruntime-web")) as unknown as OrtModuleLike;
    if (ort.env?.wasm) ort.env.wasm.numThreads = 1; // worker threads are not available to the wasm build under Bun/Node
    return ort;
  },
};
