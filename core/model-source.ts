/**
 * Where model files come from. The core never touches a file system: a `ModelSource` is handed in
 * (a folder on disk via a runtime adapter, URLs via `fetch`, or bytes in memory for tests).
 * Paths are POSIX-style and relative to the source's root; `..` may not escape it.
 */
import type { z } from "zod";
import { parsePythonJson } from "./json.ts";

export interface ModelSource {
  /** Human-readable location, used in error messages ("models/emoji-64"). */
  readonly root: string;
  read(path: string): Promise<Uint8Array>;
  exists(path: string): Promise<boolean>;
  /** A source rooted at a sub-folder (a pipeline's model folder inside a models directory). */
  sub(path: string): ModelSource;
  /**
   * A path the native ONNX runtime can open itself (a server's disk), so multi-GB external weights
   * are not copied through JS memory. Absent in browsers and behind a manifest (whose bytes must be
   * read to be checked).
   */
  localPath?(path: string): string;
  /** The SHA-256 (hex) a manifest gives for `path`, checked when the file is read; the optimized-graph cache keys on it without hashing again. */
  sha256Of?(path: string): string | undefined;
  /**
   * An identity of the file's current state, `device:inode:size:mtime:ctime` (`stampSize` reads the
   * size; the change time moves on every write, rename or `utimes`, and nobody can set it back).
   * Equal stamps mean the file has not been written since. Absent where the host cannot tell (browsers).
   * Behind a manifest, a stamp is given only for a file whose state was read and found to match it.
   */
  stamp?(path: string): Promise<string | undefined>;
  /** Digests this host has computed before, by stamp (`DigestMemo`); with `stamp`, a manifest check hashes a file once, not on every open. */
  readonly digests?: DigestMemo;
}

/**
 * Facts about a file remembered across processes, keyed by its stamp: what git's index does with
 * stat data. Kind "sha256" (the default) is the file's SHA-256, so that an unchanged 40 MB model
 * folder is not hashed again on every start (≈ 30 ms of a cold CLI); kind "onnx-io" is what
 * core/onnx.ts reads from an ONNX file's graph (its inputs, outputs, external data), so an unchanged
 * model need not be read at open at all. Never throws: a memo that cannot be read or written is a miss.
 */
export interface DigestMemo {
  get(stamp: string, kind?: MemoKind): Promise<string | undefined>;
  set(stamp: string, value: string, kind?: MemoKind): Promise<void>;
}

export type MemoKind = "sha256" | "onnx-io";

/** The size field of a stamp (`ModelSource.stamp`: `device:inode:size:mtime:ctime`). */
export function stampSize(stamp: string): number {
  return Number(stamp.split(":")[2]);
}

export class ModelFileError extends Error {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}: ${oneLine(message)}`, options);
    this.name = "ModelFileError";
  }
}

export function normalizePath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length === 0) throw new ModelFileError(path, "path escapes the model folder");
      parts.pop();
    } else parts.push(part);
  }
  return parts.join("/");
}

export function joinPath(...parts: string[]): string {
  return parts.filter((p) => p !== "").join("/").replace(/\/+/g, "/");
}

export async function readJson<T = unknown>(source: ModelSource, path: string): Promise<T> {
  const bytes = await source.read(path);
  try {
    // Python's json writes NaN / Infinity / -Infinity bare (diffusers configs carry -Infinity).
    return parsePythonJson(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as T;
  } catch (err) {
    throw new ModelFileError(`${source.root}/${path}`, `is not valid JSON (${oneLine((err as Error).message)})`);
  }
}

/**
 * Read a JSON file of the model folder and check it against a zod schema. The error names the file
 * and the key at fault: `models/x/unet/config.json: sample_size: expected number, received string`.
 */
export async function readModelJson<S extends z.ZodType>(source: ModelSource, path: string, schema: S): Promise<z.output<S>> {
  const json = await readJson(source, path);
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new ModelFileError(`${source.root}/${path}`, `must hold a JSON object, got ${json === null ? "null" : Array.isArray(json) ? "an array" : typeof json}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw new ModelFileError(`${source.root}/${path}`, issuesLine(r.error));
  return r.data;
}

/** Zod issues as one line, each naming its key: "steps_offset: Too small…; beta_end: …". */
export function issuesLine(error: z.ZodError): string {
  return oneLine(
    error.issues
      .map((i) => {
        const key = i.path.map(String).join(".");
        return key && !i.message.startsWith(key) ? `${key}: ${i.message}` : i.message;
      })
      .join("; "),
  );
}

/** Error text as one line (library messages can carry newlines and stack-like detail). */
export function oneLine(message: string, max = 400): string {
  const s = message.replace(/\s*\n\s*/g, " ").trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** In-memory files (tests, or a browser that has already fetched everything). */
export function memorySource(files: Record<string, Uint8Array | string>, root = "memory:"): ModelSource {
  const enc = new TextEncoder();
  const norm = new Map(Object.entries(files).map(([k, v]) => [normalizePath(k), typeof v === "string" ? enc.encode(v) : v]));
  const make = (prefix: string): ModelSource => ({
    root: prefix ? `${root}/${prefix}` : root,
    async read(path) {
      const key = normalizePath(joinPath(prefix, path));
      const v = norm.get(key);
      if (!v) throw new ModelFileError(`${root}/${key}`, "file not found");
      return v;
    },
    async exists(path) {
      return norm.has(normalizePath(joinPath(prefix, path)));
    },
    sub(path) {
      return make(normalizePath(joinPath(prefix, path)));
    },
  });
  return make("");
}

/**
 * Files served over HTTP(S) — the browser and edge-worker source. Web-standard `fetch` only. A
 * relative base ("models/emoji-64") is resolved against the page (`location.href`); where there is
 * no page (a worker's global scope without `location`) it must be absolute.
 */
export function urlSource(baseUrl: string, fetchImpl: typeof fetch = fetch): ModelSource {
  const base = absoluteUrl(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  return {
    root: base.slice(0, -1),
    async read(path) {
      const url = new URL(normalizePath(path), base).href;
      const res = await fetchImpl(url);
      if (!res.ok) throw new ModelFileError(url, `HTTP ${res.status} ${res.statusText}`);
      return new Uint8Array(await res.arrayBuffer());
    },
    async exists(path) {
      const res = await fetchImpl(new URL(normalizePath(path), base).href, { method: "HEAD" });
      return res.ok;
    },
    sub(path) {
      return urlSource(new URL(`${normalizePath(path)}/`, base).href, fetchImpl);
    },
  };
}

function absoluteUrl(url: string): string {
  const page = (globalThis as { location?: { href?: string } }).location?.href;
  try {
    return new URL(url, page).href;
  } catch {
    throw new ModelFileError(url, page ? `is not a valid URL (relative to ${page})` : "is a relative URL and there is no page to resolve it against (no location): pass an absolute URL");
  }
}
