/**
 * Edge-worker adapter for workerd (Cloudflare Workers): model files are bytes bundled with the
 * worker, and onnxruntime-web runs on WASM with one thread (no `Worker`, no `navigator.gpu`).
 *
 * workerd refuses to compile WebAssembly from bytes at run time; a `.wasm` module must be declared
 * in the worker's configuration and arrives compiled (`WebAssembly.Module`). onnxruntime-web has no
 * option for a compiled module, only `wasmBinary` (bytes), so it is given a short marker as its
 * binary, and `WebAssembly.instantiate` answers that marker with an instance of the compiled module.
 */
import { memorySource } from "../model-source.ts";
import type { OrtModuleLike } from "../onnx.ts";
import type { RuntimeAdapter } from "../host.ts";
import { createBrowserAdapter } from "./browser.ts";

const MARKER = new TextEncoder().encode("diffgraph:precompiled-ort-wasm");

function isMarker(bytes: unknown): boolean {
  const b = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : ArrayBuffer.isView(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : null;
  return !!b && b.byteLength === MARKER.byteLength && b.every((v, i) => v === MARKER[i]);
}

let installed: WebAssembly.Module | undefined;

function feedCompiledModule(module: WebAssembly.Module): void {
  if (installed === module) return;
  if (installed) throw new Error("workerd adapter: a different onnxruntime-web module is already installed in this isolate");
  installed = module;
  const instantiate = WebAssembly.instantiate.bind(WebAssembly) as (source: unknown, imports?: WebAssembly.Imports) => Promise<unknown>;
  (WebAssembly as { instantiate: unknown }).instantiate = async (source: unknown, imports?: WebAssembly.Imports) => {
    if (isMarker(source)) return { module, instance: await WebAssembly.instantiate(module, imports) };
    return instantiate(source, imports);
  };
}

export interface WorkerdAdapterOptions {
  /** The model folders and pipeline files, by path ("pipelines/emoji-64.json", "models/emoji-64/unet/model.onnx"). */
  readonly files: Record<string, Uint8Array | string>;
  /** onnxruntime-web's `ort-wasm-simd-threaded.wasm`, declared as a wasm module in the worker's config. */
  readonly ortWasm: WebAssembly.Module;
}

export function createWorkerdAdapter(options: WorkerdAdapterOptions): RuntimeAdapter {
  const files = memorySource(options.files, "bundle:");
  feedCompiledModule(options.ortWasm);
  return createBrowserAdapter({
    numThreads: 1,
    fileSource: (path) => files.sub(path),
    configure: (ort: OrtModuleLike, provider) => {
      if (provider !== "wasm") throw new Error(`workerd has no WebGPU (navigator.gpu); use executionProvider "wasm" (asked for ${provider})`);
      const wasm = ort.env?.wasm as { wasmBinary?: Uint8Array; proxy?: boolean } | undefined;
      if (wasm) {
        wasm.wasmBinary = MARKER;
        wasm.proxy = false;
      }
    },
  });
}
