/**
 * The entry point most programs want: one ONNX runtime, one plugin registry, and pipelines opened
 * from a pipeline JSON file or straight from a diffusers ONNX model folder. The runtime adapter is
 * the detected host's unless one is given (the web build passes the browser adapter itself:
 * `core/web.ts`).
 */
import { createDiffgraphWith, type Diffgraph, type DiffgraphOptions } from "./diffgraph-core.ts";
import { loadRuntimeAdapter } from "./runtime.ts";

export { createDiffgraphWith, modelFolderOf, type Diffgraph, type DiffgraphOptions } from "./diffgraph-core.ts";

export async function createDiffgraph(options: DiffgraphOptions): Promise<Diffgraph> {
  return createDiffgraphWith(options.adapter ?? (await loadRuntimeAdapter()), options);
}
