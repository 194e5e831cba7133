/**
 * Browser and edge-worker adapter: model files over `fetch`, onnxruntime-web for WASM and WebGPU.
 * `createBrowserAdapter` takes what a bundle knows and the default does not: where onnxruntime-web's
 * `.wasm` files are served (`wasmPaths`), a different file source (Cache Storage, bundled bytes),
 * and a hook run on the loaded onnxruntime-web module (the edge worker hands in its precompiled module there).
 */
import { urlSource, type ModelSource } from "../model-source.ts";
import type { OnnxBackends, OrtModuleLike } from "../onnx.ts";
import type { RuntimeAdapter } from "../host.ts";

export const fileSource = (baseUrl: string) => urlSource(baseUrl);

export interface BrowserAdapterOptions {
  /** URL prefix of the folder holding onnxruntime-web's `ort-wasm-simd-threaded*.wasm` (default: onnxruntime-web's own guess from its script URL). */
  readonly wasmPaths?: string;
  /** onnxruntime-web WASM threads (needs cross-origin isolation in pages; 1 where there is no `Worker`). */
  readonly numThreads?: number;
  readonly fileSource?: (path: string) => ModelSource;
  readonly configure?: (ort: OrtModuleLike, provider: "wasm" | "webgpu") => void | Promise<void>;
}

export function createBrowserAdapter(options: BrowserAdapterOptions = {}): RuntimeAdapter {
  return {
    host: "browser",
    fileSource: options.fileSource ?? fileSource,
    onnxBackends: {
      host: "browser",
      web: async (provider) => {
        const ort = (provider === "webgpu" ? await import("onnxruntime-web/webgpu") : await import("onnxruntime-web/wasm")) as unknown as OrtModuleLike;
        if (ort.env?.wasm) {
          if (options.wasmPaths !== undefined) ort.env.wasm.wasmPaths = options.wasmPaths;
          if (options.numThreads !== undefined) ort.env.wasm.numThreads = options.numThreads;
        }
        await options.configure?.(ort, provider);
        return ort;
      },
    },
  };
}

export const onnxBackends: OnnxBackends = createBrowserAdapter().onnxBackends;
