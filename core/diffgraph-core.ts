/**
 * `createDiffgraph` with the runtime adapter handed in. Imports no adapter, so a bundle for one host
 * (the web build, the edge worker) contains only the adapter it passes; `core/diffgraph.ts` adds
 * host detection on top.
 */
import { openModelFolder, pipelineDocFromModelFolder } from "./model-folder.ts";
import { NodeCache } from "./node-cache.ts";
import { readJson } from "./model-source.ts";
import { OnnxRuntime, type ExecutionProvider } from "./onnx.ts";
import type { ThreadPolicyOptions } from "./threads.ts";
import { parsePipelineDoc, PipelineConfigError } from "./pipeline-config.ts";
import { Pipeline } from "./pipeline.ts";
import type { PluginRegistry } from "./registry.ts";
import type { RuntimeAdapter } from "./host.ts";

export interface DiffgraphOptions {
  readonly registry: PluginRegistry;
  readonly executionProvider?: ExecutionProvider;
  readonly log?: (message: string) => void;
  /**
   * ONNX threads (`core/threads.ts`): a number is the noise predictor's intra-op threads; default: it
   * gets every core, the other models one thread each, no spinning, no pinning.
   */
  readonly threads?: number | ThreadPolicyOptions;
  /**
   * The optimized-graph cache (onnxruntime-node CPU): a folder, or false for none. Default:
   * `DIFFGRAPH_CACHE_DIR`, else `$XDG_CACHE_HOME/diffgraph/onnx`, else `~/.cache/diffgraph/onnx`.
   */
  readonly graphCache?: string | false;
  /** Create onnxruntime-node's environment on a worker thread as the instance is made (Bun; default true: `OnnxRuntimeOptions.prewarm`). */
  readonly prewarm?: boolean;
  /** onnxruntime-web WebGPU: keep the text states on the GPU across steps and read back only used outputs (default true). */
  readonly gpuResidency?: boolean;
  /** Create each session for the sizes of its first run (`OnnxRuntimeOptions.pinShapes`; default false: the `generate` CLI turns it on). */
  readonly pinShapes?: boolean;
  /** `createDiffgraph` defaults it to the adapter for the detected host. */
  readonly adapter?: RuntimeAdapter;
}

export interface Diffgraph {
  readonly registry: PluginRegistry;
  readonly onnx: OnnxRuntime;
  readonly adapter: RuntimeAdapter;
  /** Outputs of deterministic nodes (text encodings), shared by every pipeline this instance opens. */
  readonly cache: NodeCache;
  /** Open a pipeline JSON file, or a model folder in the diffusers ONNX layout. */
  openPipeline(path: string): Promise<Pipeline>;
  dispose(): Promise<void>;
}

function splitPath(path: string): [dir: string, base: string] {
  const clean = path.replace(/\/+$/, "");
  const i = clean.lastIndexOf("/");
  return i < 0 ? [".", clean] : [clean.slice(0, i) || "/", clean.slice(i + 1)];
}

export async function createDiffgraphWith(adapter: RuntimeAdapter, options: DiffgraphOptions): Promise<Diffgraph> {
  const log = options.log ?? ((m: string) => console.error(m));
  const onnx = new OnnxRuntime({
    backends: adapter.onnxBackends,
    executionProvider: options.executionProvider ?? "auto",
    log,
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.graphCache !== undefined ? { graphCache: options.graphCache } : {}),
    ...(options.prewarm !== undefined ? { prewarm: options.prewarm } : {}),
    ...(options.gpuResidency !== undefined ? { gpuResidency: options.gpuResidency } : {}),
    ...(options.pinShapes !== undefined ? { pinShapes: options.pinShapes } : {}),
  });
  const cache = new NodeCache();
  return {
    registry: options.registry,
    onnx,
    adapter,
    cache,
    async openPipeline(path) {
      const [dir, base] = splitPath(path);
      if (!base.endsWith(".json")) {
        const models = await openModelFolder(adapter.fileSource(path));
        const doc = await pipelineDocFromModelFolder(models, base, options.registry);
        return Pipeline.load(doc, { registry: options.registry, onnx, models, log, cache });
      }
      const folder = adapter.fileSource(dir);
      const json = await readJson(folder, base);
      const doc = parsePipelineDoc(json);
      if (!doc.model) throw new PipelineConfigError("model", `${path} names no model folder`);
      const models = await openModelFolder(adapter.fileSource(modelFolderOf(path, doc.model)));
      const moduleBase = adapter.host === "browser" ? webModuleBase(path) : `file://${absolute(path)}`;
      const openModels = (model: string) => adapter.fileSource(modelFolderOf(path, model));
      return Pipeline.load(doc, { registry: options.registry, onnx, models, moduleBase, log, cache, openModels });
    },
    dispose: () => onnx.dispose(),
  };
}

/**
 * The model folder a pipeline file names: its `model`, relative to the file's folder unless absolute.
 * The one rule for every caller (openPipeline, the API's scheduler lookup, `bun run eval`).
 */
export function modelFolderOf(pipelinePath: string, model: string): string {
  return model.startsWith("/") ? model : `${splitPath(pipelinePath)[0]}/${model}`;
}

/** A pipeline file's URL for resolving its plugin modules; none where a relative path has no page to resolve against (an edge worker). */
function webModuleBase(path: string): string | undefined {
  try {
    return new URL(path, globalThis.location?.href).href;
  } catch {
    return undefined;
  }
}

function absolute(path: string): string {
  if (path.startsWith("/")) return path;
  const cwd = (globalThis as { process?: { cwd(): string } }).process?.cwd?.() ?? (globalThis as { Deno?: { cwd(): string } }).Deno?.cwd?.() ?? "";
  return `${cwd}/${path}`;
}
