/**
 * A node type: what the DAG executor runs. Graph-kind plugins (encoder, decoder, metric) become
 * node types directly; core nodes (the denoising loop) implement the same shape with access to
 * run parameters and the event stream.
 */
import type { ZodType } from "zod";
import type { NodeCache } from "./node-cache.ts";
import type { ParamDefaults, ResolvedParams, SizeRule } from "./params.ts";
import type { PluginContext, PortSpec, PortTypes } from "./plugin.ts";
import type { Rng } from "./random.ts";
import type { Tensor } from "./tensor.ts";

export interface StepEvent {
  readonly type: "step";
  readonly node: string;
  /** 1-based index of the step just finished. */
  readonly step: number;
  readonly totalSteps: number;
  readonly timestep: number;
  readonly elapsedMs: number;
  /** Current latents x_{t−1} [B, C, h, w] (a copy: safe to keep). */
  readonly latents: Tensor;
  /** The scheduler's predicted clean latents x₀ [B, C, h, w]. */
  readonly predictedX0: Tensor;
  /** Preview images [B, 3, H, W] in [0, 1], when the run asked for previews. */
  readonly preview?: Tensor;
}

export type PipelineEvent =
  | { readonly type: "node-start"; readonly node: string; readonly use: string; readonly at: number }
  | { readonly type: "node-end"; readonly node: string; readonly use: string; readonly durationMs: number; readonly cached: boolean }
  | StepEvent;

/**
 * Where a denoising loop's time goes, in ms summed over its steps: filled in only when a run passes
 * one (`RunOptions.profile`; `bun run bench` does), so a run without it reads no clock per part.
 * `predict` is the noise-predictor call as the loop awaits it (cross-run batcher, the plugin's feeds,
 * the ONNX wrapper and `session.run`); the rest is the loop's own work between those calls.
 */
export interface StepProfile {
  /** Steps accounted. */
  steps: number;
  /** Before the first step: the scheduler's timesteps, the start noise, the conditioning batch. */
  setup: number;
  /** Abort check, scheduler.scaleModelInput, scheduler.step, inpainting's re-noise and blend. */
  scheduler: number;
  /** Building the guidance batch (both halves' rows) and ε_u + w·(ε_c − ε_u). */
  guidance: number;
  predict: number;
  /** The step event: its latent and x₀ copies, previews, listeners. */
  events: number;
  /** The macrotask turn a blocking noise predictor (onnxruntime-web WASM) gives the event loop after each step. */
  yielding: number;
}

export function emptyStepProfile(): StepProfile {
  return { steps: 0, setup: 0, scheduler: 0, guidance: 0, predict: 0, events: 0, yielding: 0 };
}

export interface NodeRunContext {
  readonly signal: AbortSignal;
  readonly rng: Rng;
  readonly params: ResolvedParams;
  readonly node: string;
  /** Emit a step event; the executor adds the preview when asked to (then it returns a promise to await). */
  readonly step: (event: Omit<StepEvent, "type" | "node" | "preview">) => Promise<void> | void;
  /**
   * Whether anything receives step events (a listener, a stream, previews): when false a loop may skip
   * building them (copies of the latents nobody reads). Absent counts as true.
   */
  readonly stepsWatched?: boolean;
  /** Per-part timing of a denoising loop, when the run asked for it. */
  readonly profile?: StepProfile;
}

export type Values = Partial<Record<string, PortTypes[keyof PortTypes]>>;

export interface NodeInstance {
  run(inputs: Values, ctx: NodeRunContext): Promise<Values>;
  /** The scheduler a denoising node runs, with its resolved config (configFile merged, defaults filled). */
  readonly scheduler?: { readonly use: string; readonly config: Readonly<Record<string, unknown>> };
  /** Image sizes the node can make (the denoising loop: its noise predictor's); checked before a run starts. */
  readonly sizes?: SizeRule;
  /** Counters the node keeps across runs (the denoising loop: its cross-run batching). */
  stats?(): Readonly<Record<string, number>>;
  dispose?(): Promise<void> | void;
}

export interface NodeCreateContext extends PluginContext {
  /** Resolve and create a component plugin (scheduler, noise predictor) by reference. */
  readonly component: <T>(path: string, ref: { use: string; config: Record<string, unknown>; configFile?: string | undefined }, kind: string) => Promise<T>;
}

export interface NodeType {
  readonly name: string;
  readonly kind: string;
  readonly inputs: PortSpec;
  readonly optionalInputs?: readonly string[];
  readonly outputs: PortSpec;
  readonly configSchema: ZodType;
  /** Equal config + equal inputs ⇒ equal outputs (the executor may serve it from cache). */
  readonly deterministic: boolean;
  /** Config keys that hold component plugin references, and the plugin kind each must be. */
  readonly components?: Readonly<Record<string, "scheduler" | "noise-predictor">>;
  create(config: any, ctx: NodeCreateContext): Promise<NodeInstance>;
}

/** A node of a loaded graph: its type, validated config, wiring and created instance. */
export interface GraphNode {
  readonly name: string;
  readonly type: NodeType;
  readonly config: unknown;
  /** Input port → [source node or "$", port or run input]. */
  readonly wires: Readonly<Record<string, readonly [string, string]>>;
  readonly instance: NodeInstance;
}

/** What the executor runs: a loaded pipeline, or any graph of nodes (tests use fake ones). */
export interface ExecutableGraph {
  readonly nodes: ReadonlyMap<string, GraphNode>;
  /** Topological order (a node after all its inputs). */
  readonly order: readonly string[];
  readonly output: readonly [string, string];
  readonly preview: { readonly instance: NodeInstance; readonly source: "x0" | "latents" } | undefined;
  readonly defaults: ParamDefaults;
  /** What decides node outputs besides plugin, config and inputs: the model folder, the execution provider. */
  readonly identity: string;
  /** Where deterministic nodes' outputs are kept; none: nothing is cached. */
  readonly cache: NodeCache | undefined;
}
