/**
 * Browser and edge-worker adapter: model files over `fetch`, onnxruntime-web for WASM and WebGPU.
 */
import { urlSource } from "../model-source.ts";
import type { OnnxBackends, OrtModuleLike } from "../onnx.ts";

export const fileSource = (baseUrl: string) => urlSource(baseUrl);

export const onnxBackends: OnnxBackends = {
  host: "browser",
  web: async (provider) =>
    (provider === "webgpu" ? await import("onnxruntime-web/webgpu") : await import("onnxruntime-web/wasm")) as unknown as OrtModuleLike,
};
