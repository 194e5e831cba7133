/**
 * Plugin contracts. A plugin is data plus a factory: a name, a kind, a zod config schema, the ports
 * it reads and writes (so a pipeline can be checked before it runs), and `create`, which loads its
 * resources once and returns an instance whose methods are typed by kind.
 */
import type { z } from "zod";
import type { OnnxRuntime } from "./onnx.ts";
import type { SizeRule } from "./params.ts";
import type { Rng } from "./random.ts";
import type { Scheduler } from "./scheduler.ts";
import type { Tensor } from "./tensor.ts";
import type { ModelSource } from "./model-source.ts";

export const PLUGIN_KINDS = ["encoder", "scheduler", "noise-predictor", "decoder", "metric"] as const;
export type PluginKind = (typeof PLUGIN_KINDS)[number];

/** Value types that flow along DAG edges. */
export interface PortTypes {
  /** One string per batch item. */
  text: string[];
  /** Token-level conditioning, [B, L, D]. */
  embeddings: Tensor;
  /** One vector per item, [B, E]. */
  vector: Tensor;
  /** Latents as the noise predictor sees them (already multiplied by the VAE scaling factor), [B, C, h, w]. */
  latents: Tensor;
  /** RGB images in [0, 1], [B, 3, H, W]. */
  images: Tensor;
  /** Named scalar results. */
  metrics: Record<string, number>;
}
export type PortType = keyof PortTypes;
export type PortSpec = Record<string, PortType>;
export type PortValues<P extends PortSpec> = { [K in keyof P]: PortTypes[P[K]] };

/** What a plugin gets when it is created: where its files are and how to run ONNX models. */
export interface PluginContext {
  /** Files of the model folder the pipeline points at (diffusers ONNX layout), or of the plugin's own. */
  readonly models: ModelSource;
  readonly onnx: OnnxRuntime;
  readonly log: (message: string) => void;
}

/** What a plugin's `run` gets each time. */
export interface RunContext {
  readonly signal: AbortSignal;
  readonly rng: Rng;
}

export interface GraphNodeInstance<I extends PortSpec, O extends PortSpec> {
  run(inputs: PortValues<I>, ctx: RunContext): Promise<PortValues<O>>;
  dispose?(): Promise<void> | void;
}

/**
 * One noise-predictor call's input. Its arrays are the caller's: the denoising loop refills the
 * same `sample` buffer every step, so a predictor reads them during its call and keeps none of
 * them once its promise settles.
 */
export interface NoisePredictorInput {
  /** Scaled model input [B, C, h, w]. */
  readonly sample: Tensor;
  /**
   * The timestep: one value for every row, or one per row (only for a predictor whose
   * `perRowTimesteps` is true). Float; exporters that want int64 or a scalar are adapted inside.
   */
  readonly timestep: number | Float32Array;
  readonly encoderHiddenStates: Tensor;
  /** SDXL: the pooled text embedding per row, [B, E] (the UNet's `text_embeds`). */
  readonly pooled?: Tensor;
  /** For a UNet that embeds the guidance scale (LCM's `timestep_cond`): the scale per row, [B]. */
  readonly guidance?: Float32Array;
  /** Inpainting UNets: the latent-size mask and the masked image's latents per row, stacked on channels, [B, 1 + C, h, w]. */
  readonly inpaint?: Tensor;
}

/** Conditioning a noise predictor takes besides latents, timestep and text states (all optional). */
export interface PredictorConditioning {
  /** Needs `pooled` (SDXL's text_embeds; its time_ids are made from the latent size). */
  readonly pooled?: boolean;
  /** Embeds `guidance` itself (LCM): the denoise loop runs no unconditional batch. */
  readonly guidance?: boolean;
  /** Needs `inpaint` (9-channel inpainting UNets). */
  readonly inpaint?: boolean;
}

export interface NoisePredictorInstance {
  /** Latent shape per image [C, h, w] the model expects at the requested pixel size. */
  latentShape(height: number, width: number): [number, number, number];
  /** Largest batch the model accepts in one call (Infinity for a dynamic batch axis). */
  readonly maxBatch: number;
  /**
   * Runs on the calling thread (onnxruntime-web's WASM without a proxy worker): each call finishes
   * before the event loop can serve I/O, so the denoising loop yields a macrotask between steps, or
   * a server on that backend would answer nothing (cancellation, event streams) until a run ends.
   */
  readonly blocking?: boolean;
  /** Image sizes the model takes, so a run can be refused before it starts. */
  readonly sizes?: SizeRule;
  /** Accepts a different timestep for each row (the model's `timestep` input is [batch]). */
  readonly perRowTimesteps?: boolean;
  /** What it takes besides latents, timestep and text states. */
  readonly takes?: PredictorConditioning;
  /** ε̂ (or v, x₀) for the input's rows: a new tensor each call, the caller's to keep and to change in place. */
  predict(input: NoisePredictorInput, signal?: AbortSignal): Promise<Tensor>;
  dispose?(): Promise<void> | void;
}

export interface SchedulerInstance {
  /** The resolved config (diffusers keys), for display and `from_config`-style reuse. */
  readonly config: Readonly<Record<string, unknown>>;
  createScheduler(): Scheduler;
}

export interface InstanceByKind {
  encoder: GraphNodeInstance<PortSpec, PortSpec>;
  decoder: GraphNodeInstance<PortSpec, PortSpec>;
  metric: GraphNodeInstance<PortSpec, { metrics: "metrics" }>;
  scheduler: SchedulerInstance;
  "noise-predictor": NoisePredictorInstance;
}

/** The instance a plugin's `create` returns: typed by kind, and for graph kinds by its declared ports. */
export type InstanceFor<K extends PluginKind, I extends PortSpec, O extends PortSpec> = K extends "scheduler"
  ? SchedulerInstance
  : K extends "noise-predictor"
    ? NoisePredictorInstance
    : GraphNodeInstance<I, O>;

export interface PluginDefinition<K extends PluginKind = PluginKind, C = any, I extends PortSpec = PortSpec, O extends PortSpec = PortSpec> {
  readonly name: string;
  readonly kind: K;
  readonly description: string;
  readonly configSchema: z.ZodType<C>;
  /** Ports for graph kinds (encoder, decoder, metric); schedulers and noise predictors are components of the denoise node. */
  readonly inputs?: I;
  readonly outputs?: O;
  /** True when equal config + equal inputs ⇒ equal outputs, so the executor may cache results. */
  readonly deterministic?: boolean;
  /** The diffusers class whose saved config this plugin reads (e.g. "DDIMScheduler"); opens model folders. */
  readonly className?: string;
  create(config: C, ctx: PluginContext): Promise<InstanceFor<K, I, O>> | InstanceFor<K, I, O>;
}

/** Typed helper so a plugin module reads `export default definePlugin({...})` with full inference. */
export function definePlugin<K extends PluginKind, C, const I extends PortSpec = {}, const O extends PortSpec = {}>(
  def: PluginDefinition<K, C, I, O>,
): PluginDefinition<K, C, I, O> {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(def.name)) {
    throw new Error(`plugin name "${def.name}" must be lowercase letters, digits and dashes`);
  }
  const graphKind = def.kind === "encoder" || def.kind === "decoder" || def.kind === "metric";
  if (graphKind && (!def.inputs || !def.outputs)) {
    throw new Error(`plugin "${def.name}" of kind ${def.kind} must declare its inputs and outputs`);
  }
  return Object.freeze(def);
}
