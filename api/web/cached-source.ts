/**
 * A model source over `fetch` that keeps every file in Cache Storage: the first visit downloads
 * the model (reporting bytes as they arrive), later visits read it from the cache and fetch nothing.
 * Web-standard APIs only (`caches`, `fetch`, streams).
 */
import { ModelFileError, normalizePath, type ModelSource } from "../../core/model-source.ts";

export interface DownloadProgress {
  readonly file: string;
  /** Bytes of model files downloaded so far in this page (cache hits count nothing). */
  readonly loaded: number;
  /** The bytes expected when known (from `manifest.sha256.json` or Content-Length), else 0. */
  readonly total: number;
  readonly fromCache: boolean;
}

export interface CachedSourceOptions {
  readonly cacheName?: string;
  readonly onProgress?: (p: DownloadProgress) => void;
  /** Total download size if known up front (the progress bar's 100 %). */
  readonly totalBytes?: number;
}

export type CachedSource = ModelSource & { readonly stats: { fetched: number; cached: number; bytes: number } };

export function cachedUrlSource(baseUrl: string, options: CachedSourceOptions = {}): CachedSource {
  let opened: Promise<Cache> | undefined;
  const open = () => (opened ??= caches.open(options.cacheName ?? "diffgraph-models-v1"));
  const stats = { fetched: 0, cached: 0, bytes: 0 };
  let total = options.totalBytes ?? 0;
  const make = (base: string): CachedSource => ({
    root: base.replace(/\/$/, ""),
    stats,
    async read(path) {
      const url = new URL(normalizePath(path), base).href;
      const cache = await open();
      const hit = await cache.match(url);
      if (hit) {
        stats.cached++;
        options.onProgress?.({ file: url, loaded: stats.bytes, total, fromCache: true });
        return new Uint8Array(await hit.arrayBuffer());
      }
      const res = await fetch(url);
      if (!res.ok) throw new ModelFileError(url, `HTTP ${res.status} ${res.statusText}`);
      stats.fetched++;
      if (!options.totalBytes) total += Number(res.headers.get("content-length") ?? 0);
      const chunks: Uint8Array[] = [];
      let n = 0;
      const reader = res.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        n += value.byteLength;
        stats.bytes += value.byteLength;
        options.onProgress?.({ file: url, loaded: stats.bytes, total, fromCache: false });
      }
      const bytes = new Uint8Array(n);
      let o = 0;
      for (const c of chunks) {
        bytes.set(c, o);
        o += c.byteLength;
      }
      await cache.put(url, new Response(bytes, { headers: { "content-type": res.headers.get("content-type") ?? "application/octet-stream" } }));
      return bytes;
    },
    async exists(path) {
      const url = new URL(normalizePath(path), base).href;
      if (await (await open()).match(url)) return true;
      return (await fetch(url, { method: "HEAD" })).ok;
    },
    sub(path) {
      return make(new URL(`${normalizePath(path)}/`, base).href);
    },
  });
  return make(new URL(baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`, globalThis.location?.href).href);
}
