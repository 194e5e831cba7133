/**
 * Runs a graph (`ExecutableGraph`: a loaded pipeline, or fake nodes in tests): each node starts as
 * soon as its inputs are ready (independent nodes — the prompt and negative-prompt encodings,
 * several metrics — run concurrently), deterministic nodes are served from the graph's cache
 * (`core/node-cache.ts`, keyed on ancestry), an `AbortSignal` stops the run before the next node
 * or denoising step, and typed events stream out.
 */
import { EventQueue } from "./event-queue.ts";
import { digestValue, nodeKey } from "./node-cache.ts";
import type { ExecutableGraph, NodeRunContext, PipelineEvent, StepEvent, StepProfile, Values } from "./node.ts";
import { ParamsError, resolveParams, sizeProblem, type GenerationInput, type ResolvedParams } from "./params.ts";
import { createRng } from "./random.ts";
import type { Tensor } from "./tensor.ts";

export { ParamsError, resolveParams } from "./params.ts";

export interface RunOptions {
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PipelineEvent) => void;
  /** Decode a preview image at every `n`-th step (true = every step) with the pipeline's preview decoder. */
  readonly preview?: boolean | number;
  /** Accumulate where denoising steps spend their time (see `StepProfile`); off when absent. */
  readonly profile?: StepProfile;
  /** @internal set by `Pipeline.stream` */
  readonly stream?: boolean;
}

export interface RunResult {
  /** Final images [B, 3, H, W] in [0, 1]. */
  readonly images: Tensor;
  readonly params: ResolvedParams;
  /** Every node's outputs, by node name. */
  readonly outputs: Readonly<Record<string, Values>>;
  /** Metric nodes' values as "node.metric". */
  readonly metrics: Readonly<Record<string, number>>;
  /** Wall time per node in ms (0 when served from cache). */
  readonly timings: Readonly<Record<string, number>>;
}

export interface RunStream {
  readonly events: AsyncIterable<PipelineEvent>;
  readonly result: Promise<RunResult>;
}

function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function execute(graph: ExecutableGraph, input: GenerationInput, options: RunOptions): RunStream {
  const queue = options.stream ? new EventQueue<PipelineEvent>() : null;
  const emit = (e: PipelineEvent) => {
    options.onEvent?.(e);
    queue?.push(e);
  };
  const result = run(graph, input, options, emit, !!options.onEvent || !!queue);
  result.then(() => queue?.close(), (err) => queue?.close(err));
  if (!queue) result.catch(() => {}); // the caller handles it through `result`
  return { events: queue ?? emptyIterable(), result };
}

async function* emptyIterable(): AsyncIterable<PipelineEvent> {}

/** A node's outputs and its cache key (null: it, and everything downstream, is not cacheable). */
interface Done {
  readonly values: Values;
  readonly key: string | null;
}

/** A run's parameters for this graph: its defaults under the input, checked against every node's size rule. */
export function paramsFor(graph: ExecutableGraph, input: GenerationInput): ResolvedParams {
  const params = resolveParams(graph.defaults, input);
  for (const node of graph.nodes.values()) {
    const bad = node.instance.sizes && sizeProblem(node.instance.sizes, params.height, params.width);
    if (bad) throw new ParamsError(`${bad.field}: ${bad.message}`, bad.field);
  }
  return params;
}

async function run(graph: ExecutableGraph, input: GenerationInput, options: RunOptions, emit: (e: PipelineEvent) => void, listened: boolean): Promise<RunResult> {
  const params = paramsFor(graph, input);
  const signal = options.signal ?? new AbortController().signal;
  const runInputs: Record<string, Values[string]> = { prompt: [params.prompt], negativePrompt: [params.negativePrompt] };
  if (input.image) runInputs.image = input.image;
  if (input.mask) {
    // A mask no node reads would be ignored silently, and the whole image repainted.
    if (![...graph.nodes.values()].some((n) => Object.values(n.wires).some(([src, out]) => src === "$" && out === "mask"))) {
      throw new ParamsError(`mask: this pipeline does not take a mask (no node reads $mask; wire "mask": "$mask" into its denoise node)`, "mask");
    }
    runInputs.mask = input.mask;
  }
  const cache = graph.cache;
  const runInputKeys = new Map<string, Promise<string>>();
  const runInputKey = (name: string) => {
    let k = runInputKeys.get(name);
    if (!k) runInputKeys.set(name, (k = digestValue(runInputs[name])));
    return k;
  };

  const previewEvery = options.preview === true ? 1 : typeof options.preview === "number" ? options.preview : 0;
  const outputs: Record<string, Values> = {};
  const timings: Record<string, number> = {};
  const pending = new Map<string, Promise<Done | null>>();

  // A node whose required run input is absent (no $image for img2img) is skipped, and so is anything
  // that needs it; an optional input from a skipped node is simply left out.
  const runNode = (name: string): Promise<Done | null> => {
    let p = pending.get(name);
    if (p) return p;
    p = (async () => {
      const node = graph.nodes.get(name)!;
      const inputs: Values = {};
      const inputKeys: Record<string, string> = {};
      let cacheable = !!cache && node.type.deterministic;
      const deps = await Promise.all(
        Object.entries(node.wires).map(async ([port, [src, out]]) => {
          if (src === "$") return [port, runInputs[out], runInputs[out] === undefined ? null : `$${out}`] as const;
          const d = await runNode(src);
          return [port, d?.values[out], d?.key == null ? null : `${d.key}.${out}`] as const;
        }),
      );
      for (const [port, v, key] of deps) {
        if (v === undefined) {
          if (node.type.optionalInputs?.includes(port)) continue;
          return null;
        }
        inputs[port] = v;
        if (key === null) cacheable = false;
        else if (cacheable) inputKeys[port] = key.startsWith("$") ? await runInputKey(key.slice(1)) : key;
      }
      signal.throwIfAborted();

      const key = cacheable ? await nodeKey({ use: node.type.name, config: node.config, identity: graph.identity, inputs: inputKeys }) : null;
      const at = performance.now();
      emit({ type: "node-start", node: name, use: node.type.name, at });
      const hit = key ? (cache!.get(key) as Values | undefined) : undefined;
      let values: Values;
      if (hit) values = hit;
      else {
        const ctx: NodeRunContext = {
          signal,
          params,
          node: name,
          rng: createRng((params.seed + hashName(name)) % Number.MAX_SAFE_INTEGER),
          ...(options.profile ? { profile: options.profile } : {}),
          stepsWatched: listened || (!!graph.preview && previewEvery > 0),
          // Synchronous unless a preview is decoded: a step without one costs the loop no await.
          step: (e) => {
            if (graph.preview && previewEvery > 0 && (e.step % previewEvery === 0 || e.step === e.totalSteps)) {
              const source = graph.preview.source === "x0" ? e.predictedX0 : e.latents;
              return graph.preview.instance.run({ latents: source }, ctx).then((v) => {
                emit({ type: "step", node: name, ...e, preview: v.images as Tensor });
              });
            }
            const ev: StepEvent = { type: "step", node: name, ...e };
            emit(ev);
          },
        };
        values = await node.instance.run(inputs, ctx);
        for (const port of Object.keys(node.type.outputs)) {
          if (values[port] === undefined) throw new Error(`node "${name}" (${node.type.name}) returned no output "${port}"`);
        }
        if (key) cache!.set(key, values);
      }
      const durationMs = hit ? 0 : performance.now() - at;
      timings[name] = durationMs;
      outputs[name] = values;
      emit({ type: "node-end", node: name, use: node.type.name, durationMs, cached: !!hit });
      return { values, key };
    })();
    pending.set(name, p);
    return p;
  };

  await Promise.all(graph.order.map(runNode));
  const [outNode, outPort] = graph.output;
  const images = outputs[outNode]?.[outPort] as Tensor | undefined;
  if (!images) throw new Error(`output "${outNode}.${outPort}" was not produced (a node it needs was skipped: is a run input missing?)`);
  const metrics: Record<string, number> = {};
  for (const [name, node] of graph.nodes) {
    if (node.type.kind === "metric" && outputs[name]?.metrics) {
      for (const [k, v] of Object.entries(outputs[name]!.metrics as Record<string, number>)) metrics[`${name}.${k}`] = v;
    }
  }
  return { images, params, outputs, metrics, timings };
}
