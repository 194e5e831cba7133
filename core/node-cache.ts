/**
 * The executor's cache of node outputs. It belongs to one `Diffgraph` (every pipeline it opens
 * shares it), and a node's key is its ancestry, as ComfyUI keys its cache: the plugin, its config,
 * what the pipeline's models are (folder and execution provider), and for each input either the
 * key of the node it comes from or a digest of the run input. A node downstream of one that cannot
 * be cached (the denoising loop draws noise) is never cached, so no tensor needs hashing beyond
 * run inputs. Keys are SHA-256 digests: outputs of another model or prompt can never collide in.
 */
import { LRUCache } from "lru-cache";
import type { Tensor } from "./tensor.ts";

/** A node's outputs by port (the executor's `Values`; kept structural here so the cache imports no node types). */
export type CachedValues = Readonly<Record<string, unknown>>;

export interface NodeCacheOptions {
  /** Bytes of cached tensors kept (default 256 MiB). */
  readonly maxBytes?: number;
}

export class NodeCache {
  private readonly lru: LRUCache<string, CachedValues>;

  constructor(options: NodeCacheOptions = {}) {
    this.lru = new LRUCache<string, CachedValues>({ maxSize: options.maxBytes ?? 256 * 2 ** 20, sizeCalculation: valuesBytes });
  }

  get(key: string): CachedValues | undefined {
    return this.lru.get(key);
  }

  set(key: string, values: CachedValues): void {
    this.lru.set(key, values);
  }

  get size(): number {
    return this.lru.size;
  }

  clear(): void {
    this.lru.clear();
  }
}

function valuesBytes(values: CachedValues): number {
  let n = 64;
  for (const v of Object.values(values)) n += isTensor(v) ? v.data.byteLength : JSON.stringify(v ?? null).length;
  return n;
}

function isTensor(v: unknown): v is Tensor {
  return !!v && typeof v === "object" && ArrayBuffer.isView((v as Tensor).data) && Array.isArray((v as Tensor).dims);
}

const hex = (buf: ArrayBuffer) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const encoder = new TextEncoder();

/** SHA-256 of a run input: a tensor's dtype, shape and bytes, or anything else as JSON. */
export async function digestValue(v: unknown): Promise<string> {
  if (isTensor(v)) {
    const head = encoder.encode(`${v.data.constructor.name}:${v.dims.join("x")}:`);
    const bytes = new Uint8Array(v.data.buffer, v.data.byteOffset, v.data.byteLength);
    const all = new Uint8Array(head.length + bytes.length);
    all.set(head);
    all.set(bytes, head.length);
    return hex(await crypto.subtle.digest("SHA-256", all));
  }
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(JSON.stringify(v ?? null))));
}

/** A node's cache key: SHA-256 over its plugin, config, the graph's identity and its inputs' keys. */
export async function nodeKey(parts: { use: string; config: unknown; identity: string; inputs: Readonly<Record<string, string>> }): Promise<string> {
  const inputs = Object.keys(parts.inputs).sort().map((k) => [k, parts.inputs[k]]);
  return digestValue({ use: parts.use, config: parts.config ?? null, identity: parts.identity, inputs });
}
