/**
 * Loading a pipeline: parse the JSON document, resolve every node to a plugin or core node, check
 * configs, wiring, port types and cycles — all before any model loads — then create each plugin
 * once (a metric node on the first run that asks for metrics). Every error names the node and field at fault.
 */
import { z } from "zod";
import { denoiseNode } from "./denoise.ts";
import { execute, type RunOptions, type RunResult, type RunStream } from "./executor.ts";
import { openModelFolder } from "./model-folder.ts";
import { issuesLine, ModelFileError, readModelJson, type ModelSource } from "./model-source.ts";
import type { NodeCache } from "./node-cache.ts";
import type { ExecutableGraph, GraphNode, NodeCreateContext, NodeInstance, NodeType } from "./node.ts";
import type { OnnxRuntime } from "./onnx.ts";
import { BUILTIN_DEFAULTS, type GenerationInput, type ParamDefaults } from "./params.ts";
import {
  parsePipelineDoc,
  parseRef,
  PipelineConfigError,
  RUN_INPUTS,
  type ComponentRef,
  type PipelineDoc,
} from "./pipeline-config.ts";
import type { GraphNodeInstance, PluginDefinition, PluginKind, PortSpec, PortType } from "./plugin.ts";
import { importPlugin, isModulePath, type PluginRegistry } from "./registry.ts";

export interface PipelineEnv {
  readonly registry: PluginRegistry;
  readonly onnx: OnnxRuntime;
  /** The pipeline's model folder (the document's `model`, already resolved by the caller). */
  readonly models: ModelSource;
  /** Base URL for plugins named by module path (the pipeline file's URL). */
  readonly moduleBase?: string;
  /** Opens a node's own model folder: its `model`, as the document writes it (relative to the pipeline file). */
  readonly openModels?: (model: string) => ModelSource;
  /** Core node types; default: the denoising loop. */
  readonly coreNodes?: readonly NodeType[];
  readonly log?: (message: string) => void;
  /** Cache for deterministic nodes' outputs, shared by the pipelines of one `Diffgraph`; none: no caching. */
  readonly cache?: NodeCache;
}

export type { GraphNode } from "./node.ts";

export interface PipelineRunOptions extends RunOptions {
  /**
   * Run the pipeline's metric nodes (a CLIP score) and return their values in `metrics`. Default
   * false: they are skipped, and their models are never loaded into a session (`bun run generate
   * --metrics`, the API's `metrics: true` job option).
   */
  readonly metrics?: boolean;
}

/** The most steps `Pipeline.check` tries before it gives up on finding a step count the scheduler accepts. */
const MAX_CHECK_STEPS = 8;

const GRAPH_KINDS: readonly PluginKind[] = ["encoder", "decoder", "metric"];

function pluginNodeType(def: PluginDefinition): NodeType {
  return {
    name: def.name,
    kind: def.kind,
    inputs: def.inputs ?? {},
    outputs: def.outputs ?? {},
    configSchema: def.configSchema,
    deterministic: def.deterministic ?? false,
    async create(config, ctx) {
      const inst = (await def.create(config, ctx)) as GraphNodeInstance<PortSpec, PortSpec>;
      return { run: (inputs, run) => inst.run(inputs as never, { signal: run.signal, rng: run.rng }), dispose: inst.dispose?.bind(inst) };
    },
  };
}

/**
 * A node instance made on its first run (concurrent first runs share one creation); a failed creation
 * is not kept, so a later run tries again after the files are fixed. Disposing disposes what was made.
 */
function createdOnFirstRun(create: () => Promise<NodeInstance>): NodeInstance {
  let made: Promise<NodeInstance> | undefined;
  const get = () => {
    if (made) return made;
    const p: Promise<NodeInstance> = create().catch((err) => {
      if (made === p) made = undefined; // not a newer creation's promise
      throw err;
    });
    return (made = p);
  };
  return {
    run: async (inputs, ctx) => (await get()).run(inputs, ctx),
    async dispose() {
      const m = made;
      made = undefined;
      await (await m?.catch(() => undefined))?.dispose?.();
    },
  };
}

function closest(name: string, options: readonly string[]): string {
  const dist = (a: string, b: string) => {
    const d = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = d[0]!;
      d[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const tmp = d[j]!;
        d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = tmp;
      }
    }
    return d[b.length]!;
  };
  const best = options.map((o) => [o, dist(name, o)] as const).sort((x, y) => x[1] - y[1])[0];
  return best && best[1] <= Math.max(2, name.length / 3) ? ` Did you mean "${best[0]}"?` : "";
}

export class Pipeline implements ExecutableGraph {
  private constructor(
    readonly doc: PipelineDoc,
    readonly nodes: ReadonlyMap<string, GraphNode>,
    /** Topological order (a node after all its inputs). */
    readonly order: readonly string[],
    readonly output: readonly [string, string],
    readonly preview: { readonly instance: NodeInstance; readonly source: "x0" | "latents" } | undefined,
    readonly defaults: ParamDefaults,
    readonly identity: string,
    readonly cache: NodeCache | undefined,
  ) {}

  get name(): string {
    return this.doc.name;
  }

  /** Validate a document and load its plugins. Throws `PipelineConfigError` naming the bad field. */
  static async load(json: unknown, env: PipelineEnv): Promise<Pipeline> {
    const doc = parsePipelineDoc(json);
    const models = await openModelFolder(env.models);
    // A node may name its own model folder (a cascade's later stage): its plugin, its components and
    // its configFile read from there.
    const nodeModels = new Map<string, ModelSource>();
    for (const [name, node] of Object.entries(doc.nodes)) {
      if (node.model === undefined) continue;
      if (!env.openModels) throw new PipelineConfigError(`nodes.${name}.model`, `model folder "${node.model}" given, but this pipeline was not loaded from a file`);
      nodeModels.set(name, await openModelFolder(env.openModels(node.model)));
    }
    const core = new Map((env.coreNodes ?? [denoiseNode]).map((n) => [n.name, n]));
    const log = env.log ?? (() => {});

    const resolveDef = async (at: string, use: string): Promise<PluginDefinition> => {
      if (isModulePath(use)) {
        if (!env.moduleBase) throw new PipelineConfigError(at, `plugin module "${use}" given, but this pipeline was not loaded from a file`);
        try {
          return await importPlugin(use, env.moduleBase);
        } catch (err) {
          throw new PipelineConfigError(at, (err as Error).message);
        }
      }
      const def = env.registry.get(use);
      if (!def) {
        const names = [...env.registry.names(), ...core.keys()];
        throw new PipelineConfigError(at, `unknown plugin "${use}".${closest(use, names)} Available: ${names.sort().join(", ")}`);
      }
      return def;
    };

    /** The JSON object in a component's `configFile` (model folder); errors name the file. */
    const readConfigFile = async (at: string, ref: ComponentRef, src = models): Promise<Record<string, unknown> | undefined> => {
      if (!ref.configFile) return undefined;
      // A file that is not there is the document's fault (it names it); a bad one is the file's.
      if (!(await src.exists(ref.configFile))) throw new PipelineConfigError(`${at}.configFile`, `${src.root}/${ref.configFile}: file not found`);
      return readModelJson(src, ref.configFile, z.looseObject({}));
    };

    /**
     * Check a config (the configFile's keys under the document's `config`). An issue at a key that
     * comes from the file is the file's fault and names it (`…/scheduler_config.json: steps_offset: …`);
     * one at a key the document sets names the document field.
     */
    const validate = (at: string, type: { configSchema: NodeType["configSchema"] }, ref: ComponentRef, fromFile: Record<string, unknown> | undefined, src = models): unknown => {
      const config = fromFile ? { ...fromFile, ...ref.config } : ref.config;
      const r = type.configSchema.safeParse(config);
      if (r.success) return r.data;
      const key = String(r.error.issues[0]!.path[0] ?? "");
      if (fromFile && ref.configFile && key in fromFile && !(key in ref.config)) {
        throw new ModelFileError(`${src.root}/${ref.configFile}`, issuesLine(r.error));
      }
      throw new PipelineConfigError(`${at}.config`, issuesLine(r.error));
    };

    const resolveComponent = async (at: string, ref: ComponentRef, kind: string, src = models) => {
      const def = await resolveDef(`${at}.use`, ref.use);
      if (def.kind !== kind) throw new PipelineConfigError(`${at}.use`, `"${ref.use}" is a ${def.kind} plugin, but a ${kind} is needed here`);
      const config = validate(at, def, ref, await readConfigFile(at, ref, src), src);
      return { def, config };
    };

    // 1. Resolve node types and validate configs (component references included).
    const resolved = new Map<string, { type: NodeType; config: unknown; components: Record<string, { def: PluginDefinition; config: unknown }> }>();
    for (const [name, node] of Object.entries(doc.nodes)) {
      const at = `nodes.${name}`;
      let type = core.get(node.use);
      if (!type) {
        const def = await resolveDef(`${at}.use`, node.use);
        if (!GRAPH_KINDS.includes(def.kind)) {
          throw new PipelineConfigError(`${at}.use`, `"${node.use}" is a ${def.kind} plugin; it is a component of a denoise node (config.${def.kind === "scheduler" ? "scheduler" : "noisePredictor"}), not a node of its own`);
        }
        type = pluginNodeType(def);
      }
      const src = nodeModels.get(name) ?? models;
      const config = validate(at, type, node, await readConfigFile(at, node, src), src) as Record<string, unknown>;
      const components: Record<string, { def: PluginDefinition; config: unknown }> = {};
      for (const [key, kind] of Object.entries(type.components ?? {})) {
        components[key] = await resolveComponent(`${at}.config.${key}`, config[key] as ComponentRef, kind, src);
      }
      resolved.set(name, { type, config, components });
    }

    // 2. Wiring and port types.
    const wires = new Map<string, Record<string, [string, string]>>();
    const typeOf = (at: string, ref: string): PortType => {
      const [src, port] = parseRef(ref, at);
      if (src === "$") {
        const t = RUN_INPUTS[port as keyof typeof RUN_INPUTS];
        if (!t) throw new PipelineConfigError(at, `unknown run input "$${port}" (run inputs: ${Object.keys(RUN_INPUTS).map((k) => `$${k}`).join(", ")})`);
        return t;
      }
      const source = resolved.get(src);
      if (!source) throw new PipelineConfigError(at, `"${ref}" refers to node "${src}", which does not exist.${closest(src, [...resolved.keys()])}`);
      const t = source.type.outputs[port];
      if (!t) throw new PipelineConfigError(at, `node "${src}" (${source.type.name}) has no output "${port}" (outputs: ${Object.keys(source.type.outputs).join(", ")})`);
      return t;
    };
    for (const [name, node] of Object.entries(doc.nodes)) {
      const { type } = resolved.get(name)!;
      const w: Record<string, [string, string]> = {};
      for (const [port, ref] of Object.entries(node.inputs)) {
        const at = `nodes.${name}.inputs.${port}`;
        const want = type.inputs[port];
        if (!want) throw new PipelineConfigError(at, `${type.name} has no input "${port}" (inputs: ${Object.keys(type.inputs).join(", ")})`);
        const got = typeOf(at, ref);
        if (got !== want) throw new PipelineConfigError(at, `"${ref}" is ${got}, but input "${port}" of ${type.name} takes ${want}`);
        w[port] = parseRef(ref, at);
      }
      for (const port of Object.keys(type.inputs)) {
        if (!(port in w) && !type.optionalInputs?.includes(port)) {
          throw new PipelineConfigError(`nodes.${name}.inputs.${port}`, `missing: ${type.name} needs input "${port}" (${type.inputs[port]})`);
        }
      }
      wires.set(name, w);
    }
    const outAt = "output";
    if (typeOf(outAt, doc.output) !== "images") throw new PipelineConfigError(outAt, `"${doc.output}" must be an images output`);
    const output = parseRef(doc.output, outAt);

    // 3. Cycles (depth-first search; the error shows the loop).
    const order: string[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (name: string, path: string[]) => {
      if (state.get(name) === "done") return;
      if (state.get(name) === "visiting") {
        // Shown in the direction data flows: each node feeds the next.
        const loop = [...path.slice(path.indexOf(name)), name].reverse();
        throw new PipelineConfigError(`nodes.${name}.inputs`, `cycle: ${loop.join(" → ")}`);
      }
      state.set(name, "visiting");
      for (const [src] of Object.values(wires.get(name)!)) if (src !== "$") visit(src, [...path, name]);
      state.set(name, "done");
      order.push(name);
    };
    for (const name of Object.keys(doc.nodes)) visit(name, []);

    // 4. Preview decoder.
    let previewDef: { def: PluginDefinition; config: unknown } | undefined;
    if (doc.preview) {
      previewDef = await resolveComponent("preview", doc.preview, "decoder");
      if (previewDef.def.inputs?.latents !== "latents") throw new PipelineConfigError("preview.use", `"${doc.preview.use}" does not decode latents`);
    }

    // 5. Create instances once (in parallel; each plugin loads its models).
    const ctx: NodeCreateContext = {
      models,
      onnx: env.onnx,
      log,
      component: async <T>(path: string, ref: { use: string; config: Record<string, unknown>; configFile?: string | undefined }, kind: string) => {
        const { def, config } = await resolveComponent(path, { use: ref.use, config: ref.config, configFile: ref.configFile }, kind);
        return (await def.create(config, ctx)) as T;
      },
    };
    const nodes = new Map<string, GraphNode>();
    await Promise.all(
      [...resolved].map(async ([name, r]) => {
        const src = nodeModels.get(name);
        const nodeCtx: NodeCreateContext = src
          ? {
              ...ctx,
              models: src,
              component: async <T>(path: string, ref: { use: string; config: Record<string, unknown>; configFile?: string | undefined }, kind: string) => {
                const { def, config } = await resolveComponent(`nodes.${name}.${path}`, { use: ref.use, config: ref.config, configFile: ref.configFile }, kind, src);
                return (await def.create(config, { ...ctx, models: src })) as T;
              },
            }
          : { ...ctx, component: (path, ref, kind) => ctx.component(`nodes.${name}.${path}`, ref, kind) };
        // A metric node is created (its files read and checked, its tokenizer built) by the first run
        // that asks for metrics: a run without them never touches it (emoji-64's open: 11.5 ms sooner).
        const make = () => r.type.create(r.config, nodeCtx);
        const instance = r.type.kind === "metric" ? createdOnFirstRun(make) : await make();
        nodes.set(name, { name, type: r.type, config: r.config, wires: wires.get(name)!, instance });
      }),
    );
    const preview = previewDef && doc.preview
      ? { instance: await pluginNodeType(previewDef.def).create(previewDef.config, ctx), source: doc.preview.source }
      : undefined;
    // Node outputs depend on the models (and the provider that runs them) besides plugin, config and inputs.
    const identity = JSON.stringify({
      models: env.models.root,
      provider: env.onnx.executionProvider,
      moduleBase: env.moduleBase ?? null,
      ...(nodeModels.size ? { nodeModels: Object.fromEntries([...nodeModels].map(([n, m]) => [n, m.root])) } : {}),
    });
    // A fixed-shape export (SD-Turbo's browser build) takes one size; defaults it cannot run give way to it.
    const fixed = [...nodes.values()].map((n) => n.instance.sizes?.fixed).find((f) => f !== undefined);
    const defaults = { ...BUILTIN_DEFAULTS, ...doc.defaults, ...(fixed ? { height: fixed.height, width: fixed.width } : {}) };
    return new Pipeline(doc, nodes, order, output, preview, defaults, identity, env.cache);
  }

  /** Run to completion. Events go to `options.onEvent` as they happen. */
  run(input: GenerationInput, options: PipelineRunOptions = {}): Promise<RunResult> {
    return execute(this.graphFor(options), input, options).result;
  }

  private lean?: ExecutableGraph;

  /**
   * The graph a run executes: the whole pipeline when it asks for metrics, else the pipeline without
   * its metric nodes (and anything fed by one), so a run that prints no metric creates no session for it.
   */
  private graphFor(options: PipelineRunOptions): ExecutableGraph {
    if (options.metrics) return this;
    if (this.lean) return this.lean;
    const drop = new Set<string>();
    for (const name of this.order) {
      const node = this.nodes.get(name)!;
      if (node.type.kind === "metric" || Object.values(node.wires).some(([src]) => drop.has(src))) drop.add(name);
    }
    this.lean = drop.size === 0 || drop.has(this.output[0])
      ? this
      : {
          nodes: new Map([...this.nodes].filter(([name]) => !drop.has(name))),
          order: this.order.filter((name) => !drop.has(name)),
          output: this.output,
          preview: this.preview,
          defaults: this.defaults,
          identity: this.identity,
          cache: this.cache,
        };
    return this.lean;
  }

  /**
   * A dry run: one generation at the fewest steps the pipeline's scheduler accepts (1 for most;
   * PNDM with its Runge–Kutta warm-up needs 4), tiny prompt, seed 0, no previews, the document's
   * defaults otherwise. A pipeline whose files load but cannot generate (a UNet that rejects the
   * text encoder's embeddings, a projection for the wrong channel count) fails here, with the
   * error of the failing node, instead of on the first real job. Returns the steps it used and
   * the time it took. Metric nodes run only with `metrics: true` (their configs were checked at load;
   * they are created, their files read and checked, by the first run that asks for metrics); an img2img encoder
   * runs only for an inpainting model, whose dry run needs an image.
   */
  async check(options: { readonly signal?: AbortSignal; readonly metrics?: boolean } = {}): Promise<{ readonly steps: number; readonly ms: number }> {
    const started = performance.now();
    // An inpainting model cannot draw without an image and a mask (it says so by naming the field
    // "mask"): its dry run repaints the whole of a grey image.
    let inpaint: Pick<GenerationInput, "image" | "mask" | "strength"> = {};
    for (let steps = 1; ; steps++) {
      try {
        await this.run({ prompt: "check", steps, seed: 0, batchSize: 1, ...inpaint }, { preview: false, metrics: options.metrics ?? false, ...(options.signal ? { signal: options.signal } : {}) });
        return { steps, ms: performance.now() - started };
      } catch (err) {
        if ((err as { field?: unknown }).field === "mask" && !inpaint.mask) {
          const { height, width } = this.defaults as { height: number; width: number };
          inpaint = { image: { dims: [1, 3, height, width], data: new Float32Array(3 * height * width).fill(0.5) }, mask: { dims: [1, 1, height, width], data: new Float32Array(height * width).fill(1) }, strength: 1 };
          steps--;
          continue;
        }
        // Schedulers name the argument at fault (`SchedulerConfigError.key`); too few steps → try one more.
        if ((err as { key?: unknown }).key !== "num_inference_steps" || steps >= MAX_CHECK_STEPS) throw err;
      }
    }
  }

  /** Run with the events as an async iterable. */
  stream(input: GenerationInput, options: PipelineRunOptions = {}): RunStream {
    return execute(this.graphFor(options), input, { ...options, stream: true });
  }

  /** Counters of the nodes that keep them (`NodeInstance.stats`), by node name. */
  nodeStats(): Record<string, Readonly<Record<string, number>>> {
    const out: Record<string, Readonly<Record<string, number>>> = {};
    for (const [name, n] of this.nodes) {
      const s = n.instance.stats?.();
      if (s) out[name] = s;
    }
    return out;
  }

  async dispose(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => n.instance.dispose?.()));
  }
}
