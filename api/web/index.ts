/**
 * The web build's entry (`bun run build:web` → dist/web/diffgraph.js): the core, the built-in
 * plugins and a pure-JS PNG encoder, with the browser adapter and nothing else — no Node or Deno
 * adapter is reachable from here. onnxruntime-web's `.wasm` files are copied beside the bundle and
 * found from its own URL.
 */
import { createBrowserAdapter, type BrowserAdapterOptions } from "../../core/adapters/browser.ts";
import { createDiffgraphWith, type Diffgraph, type DiffgraphOptions } from "../../core/diffgraph-core.ts";
import { builtinRegistry } from "../../plugins/index.ts";

export { builtinRegistry } from "../../plugins/index.ts";
export { tensorToPngJs, toRgb8, encodeRgbPng } from "../../core/png.ts";
export { urlSource, memorySource, type ModelSource } from "../../core/model-source.ts";
export { createBrowserAdapter } from "../../core/adapters/browser.ts";
export type { Diffgraph } from "../../core/diffgraph-core.ts";

/** Where this bundle is served from; its `ort-wasm-*.wasm` files lie beside it. */
export const bundleUrl = new URL("./", import.meta.url).href;

export function createDiffgraph(options: Partial<DiffgraphOptions> & { adapter?: DiffgraphOptions["adapter"]; browser?: BrowserAdapterOptions } = {}): Promise<Diffgraph> {
  const adapter = options.adapter ?? createBrowserAdapter({ wasmPaths: bundleUrl, ...options.browser });
  return createDiffgraphWith(adapter, { registry: options.registry ?? builtinRegistry(), ...options, executionProvider: options.executionProvider ?? "auto" });
}
