/**
 * Deno adapter: model files via Deno's file API and onnxruntime-web (WASM, or WebGPU through
 * Deno's `navigator.gpu`). Deno is not the native backend's home, so `native` is left out.
 */
import { ModelFileError, normalizePath, type ModelSource } from "../model-source.ts";
import type { OnnxBackends, OrtModuleLike } from "../onnx.ts";

declare const Deno: {
  readFile(path: string): Promise<Uint8Array>;
  stat(path: string): Promise<{ isFile: boolean }>;
  cwd(): string;
};

export function fileSource(dir: string): ModelSource {
  const root = dir.replace(/\/+$/, "");
  const full = (path: string) => `${root}/${normalizePath(path)}`;
  return {
    root,
    async read(path) {
      try {
        return await Deno.readFile(full(path));
      } catch (err) {
        const notFound = (err as Error).name === "NotFound";
        throw new ModelFileError(full(path), notFound ? "file not found" : `cannot be read (${(err as Error).message})`, { cause: err });
      }
    },
    async exists(path) {
      try {
        return (await Deno.stat(full(path))).isFile;
      } catch {
        return false;
      }
    },
    sub(path) {
      return fileSource(full(path));
    },
  };
}

export const onnxBackends: OnnxBackends = {
  host: "deno",
  web: async (provider) => {
    const ort = (provider === "webgpu"
      ? await import("onnxruntime-web/webgpu")
      : await import("onnxruntime-web/wasm")) as unknown as OrtModuleLike;
    if (ort.env?.wasm) ort.env.wasm.numThreads = 1;
    return ort;
  },
};
