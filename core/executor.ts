/**
 * Runs a loaded pipeline: each node starts as soon as its inputs are ready (independent nodes —
 * the prompt and negative-prompt encodings, several metrics — run concurrently), deterministic
 * nodes are served from a cache keyed by plugin, config and inputs, an `AbortSignal` stops the run
 * before the next node or denoising step, and typed events stream out.
 */
import { EventQueue } from "./event-queue.ts";
import type { NodeRunContext, PipelineEvent, StepEvent, Values } from "./node.ts";
import { formatIssues, ParamsSchema, type GenerationInput, type ResolvedParams } from "./params.ts";
import type { Pipeline } from "./pipeline.ts";
import { createRng } from "./random.ts";
import { tensorKey, type Tensor } from "./tensor.ts";

export interface RunOptions {
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PipelineEvent) => void;
  /** Decode a preview image at every `n`-th step (true = every step) with the pipeline's preview decoder. */
  readonly preview?: boolean | number;
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

export class ParamsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ParamsError";
  }
}

/** Small LRU of node outputs shared by all runs of all pipelines in this process. */
class OutputCache {
  private readonly map = new Map<string, Values>();
  constructor(private readonly capacity: number) {}
  get(key: string): Values | undefined {
    const v = this.map.get(key);
    if (v) {
      this.map.delete(key);
      this.map.set(key, v);
    }
    return v;
  }
  set(key: string, v: Values): void {
    this.map.set(key, v);
    if (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value!);
  }
}
export const nodeCache = new OutputCache(64);

function valueKey(v: unknown): string {
  if (v && typeof v === "object" && "data" in v && (v as Tensor).data instanceof Float32Array) return tensorKey(v as Tensor);
  return JSON.stringify(v);
}

function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function resolveParams(pipeline: Pipeline, input: GenerationInput): ResolvedParams {
  const { image: _image, ...scalars } = input;
  const merged = { ...pipeline.defaults, ...Object.fromEntries(Object.entries(scalars).filter(([, v]) => v !== undefined)) };
  const r = ParamsSchema.safeParse(merged);
  if (!r.success) throw new ParamsError(formatIssues(r.error));
  return r.data;
}

export function execute(pipeline: Pipeline, input: GenerationInput, options: RunOptions): RunStream {
  const queue = options.stream ? new EventQueue<PipelineEvent>() : null;
  const emit = (e: PipelineEvent) => {
    options.onEvent?.(e);
    queue?.push(e);
  };
  const result = run(pipeline, input, options, emit);
  result.then(() => queue?.close(), (err) => queue?.close(err));
  if (!queue) result.catch(() => {}); // the caller handles it through `result`
  return { events: queue ?? emptyIterable(), result };
}

async function* emptyIterable(): AsyncIterable<PipelineEvent> {}

async function run(pipeline: Pipeline, input: GenerationInput, options: RunOptions, emit: (e: PipelineEvent) => void): Promise<RunResult> {
  const params = resolveParams(pipeline, input);
  const signal = options.signal ?? new AbortController().signal;
  const runInputs: Record<string, Values[string]> = { prompt: [params.prompt], negativePrompt: [params.negativePrompt] };
  if (input.image) runInputs.image = input.image;

  const previewEvery = options.preview === true ? 1 : typeof options.preview === "number" ? options.preview : 0;
  const outputs: Record<string, Values> = {};
  const timings: Record<string, number> = {};
  const pending = new Map<string, Promise<Values | null>>();

  // A node whose required run input is absent (no $image for img2img) is skipped, and so is anything
  // that needs it; an optional input from a skipped node is simply left out.
  const runNode = (name: string): Promise<Values | null> => {
    let p = pending.get(name);
    if (p) return p;
    p = (async () => {
      const node = pipeline.nodes.get(name)!;
      const inputs: Values = {};
      const deps = await Promise.all(
        Object.entries(node.wires).map(async ([port, [src, out]]) => {
          if (src === "$") return [port, runInputs[out]] as const;
          const v = await runNode(src);
          return [port, v ? v[out] : undefined] as const;
        }),
      );
      for (const [port, v] of deps) {
        if (v === undefined) {
          if (node.type.optionalInputs?.includes(port)) continue;
          return null;
        }
        inputs[port] = v;
      }
      if (signal.aborted) throw signal.reason ?? new DOMException("The run was cancelled", "AbortError");

      const key = node.type.deterministic
        ? `${node.type.name}|${JSON.stringify(node.config)}|${Object.entries(inputs).map(([k, v]) => `${k}=${valueKey(v)}`).join("|")}`
        : null;
      const at = performance.now();
      emit({ type: "node-start", node: name, use: node.type.name, at });
      const hit = key ? nodeCache.get(key) : undefined;
      let values: Values;
      if (hit) values = hit;
      else {
        const ctx: NodeRunContext = {
          signal,
          params,
          node: name,
          rng: createRng((params.seed + hashName(name)) % Number.MAX_SAFE_INTEGER),
          step: async (e) => {
            let preview: Tensor | undefined;
            if (pipeline.preview && previewEvery > 0 && (e.step % previewEvery === 0 || e.step === e.totalSteps)) {
              const source = pipeline.preview.source === "x0" ? e.predictedX0 : e.latents;
              preview = (await pipeline.preview.instance.run({ latents: source }, ctx)).images as Tensor;
            }
            const ev: StepEvent = { type: "step", node: name, ...e, ...(preview ? { preview } : {}) };
            emit(ev);
          },
        };
        values = await node.instance.run(inputs, ctx);
        for (const port of Object.keys(node.type.outputs)) {
          if (values[port] === undefined) throw new Error(`node "${name}" (${node.type.name}) returned no output "${port}"`);
        }
        if (key) nodeCache.set(key, values);
      }
      const durationMs = hit ? 0 : performance.now() - at;
      timings[name] = durationMs;
      outputs[name] = values;
      emit({ type: "node-end", node: name, use: node.type.name, durationMs, cached: !!hit });
      return values;
    })();
    pending.set(name, p);
    return p;
  };

  await Promise.all(pipeline.order.map(runNode));
  const [outNode, outPort] = pipeline.output;
  const images = outputs[outNode]?.[outPort] as Tensor | undefined;
  if (!images) throw new Error(`output "${outNode}.${outPort}" was not produced (a node it needs was skipped: is a run input missing?)`);
  const metrics: Record<string, number> = {};
  for (const [name, node] of pipeline.nodes) {
    if (node.type.kind === "metric" && outputs[name]?.metrics) {
      for (const [k, v] of Object.entries(outputs[name]!.metrics as Record<string, number>)) metrics[`${name}.${k}`] = v;
    }
  }
  return { images, params, outputs, metrics, timings };
}
