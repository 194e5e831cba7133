/**
 * What the GraphQL schema resolves against: the registered pipelines (by name), the plugin
 * registry, the job manager, and input validation. Clients choose pipelines, schedulers and
 * plugins by name from what is registered here; no client input becomes a path or a module.
 */
import type { Diffgraph } from "../core/diffgraph.ts";
import { memorySource } from "../core/model-source.ts";
import { paramsFor } from "../core/executor.ts";
import { LIMITS, ParamsError, type GenerationInput, type ResolvedParams } from "../core/params.ts";
import type { Pipeline } from "../core/pipeline.ts";
import type { PluginDefinition, PluginKind, SchedulerInstance } from "../core/plugin.ts";
import type { ScheduleData } from "../core/scheduler.ts";
import type { Tensor } from "../core/tensor.ts";
import { badInput } from "./errors.ts";
import { fromBase64, ImageTooLargeError, imageToTensor } from "./image.ts";
import { JobManager, type NewJob } from "./jobs.ts";
import { MemoryEventBus, MemoryJobQueue } from "./adapters/memory.ts";
import type { EventBus, JobParams, JobQueue, JobStore } from "./ports.ts";

/** Bounds the API adds to the generation bounds in `core/params.ts` (`LIMITS`). */
export const API_LIMITS = Object.freeze({
  priority: { min: -100, max: 100 },
  previewEvery: { min: 0, max: LIMITS.steps.max },
  /** Decoded size of an img2img source sent as a data URL. */
  imageBytes: 8 * 2 ** 20,
  jobsPageSize: 100,
  /** Per-job pixel budget: height × width × batchSize. */
  pixels: 16 * 512 * 512,
  /** Deep enough for GraphiQL's introspection query (11), too shallow for recursive introspection abuse. */
  queryDepth: 15,
  queryCost: 2000,
  /** Tokens in one GraphQL document (GraphiQL's introspection query has ~700). */
  queryTokens: 5000,
  /** Root fields per operation: bounds the jobs one request can queue. */
  rootFields: 16,
  /** Nesting of a JSON literal or variable (scheduler configs are flat). */
  jsonDepth: 16,
  /** Bytes of a request body (an 8 MiB image is ~11 MiB as base64). */
  requestBytes: 12 * 2 ** 20,
  /** Pixels an img2img source may have before it is decoded (read from its header first). */
  sourcePixels: 4096 * 4096,
});

export interface RegisteredPipeline {
  readonly name: string;
  readonly file: string;
  readonly pipeline: Pipeline;
  readonly img2img: boolean;
  /** The denoise node's scheduler and its config (configFile merged), for `schedule(pipeline:)`. */
  readonly scheduler: { readonly use: string; readonly config: Readonly<Record<string, unknown>> } | null;
}

export interface ServiceOptions {
  readonly diffgraph: Diffgraph;
  /** Job records and images (`api/adapters/sqlite-*.ts`, or `MemoryJobStore`). */
  readonly store: JobStore;
  /** Where jobs wait (default: an in-process `MemoryJobQueue` of `maxQueue`). */
  readonly queue?: JobQueue;
  /** How job events reach subscribers (default: an in-process `MemoryEventBus`). */
  readonly bus?: EventBus;
  /** Pipeline documents to register, by path (a host lists a folder: `api/adapters/pipeline-files-node.ts`). */
  readonly pipelineFiles: readonly string[];
  /** Pipeline used when `generate` names none (default: the first registered, by name). */
  readonly defaultPipeline?: string;
  readonly concurrency?: number;
  /**
   * With a shared queue (`--queue`): "api" only accepts and serves jobs, "worker" also runs them,
   * "all" (the default) does both. In the embedded mode every process is "all".
   */
  readonly role?: "api" | "worker" | "all";
  readonly maxQueue?: number;
  readonly subscriberBuffer?: number;
  /** When set, mutations need `Authorization: Bearer <key>` (or `x-api-key`, or the WebSocket `connectionParams.apiKey`). */
  readonly apiKey?: string;
  readonly log?: (message: string) => void;
}

/** `generate`'s input: every generation parameter of `core/params.ts` (null: the pipeline's default), plus what only the API takes. */
export type GenerateArgs = { prompt: string } & { [K in Exclude<keyof ResolvedParams, "prompt">]?: ResolvedParams[K] | null } & {
  pipeline?: string | null;
  image?: string | null;
  /** Inpainting mask as a data URL (white = repaint), with `image`. */
  mask?: string | null;
  previewEvery?: number | null;
  priority?: number | null;
  /** Run the pipeline's metric nodes (their models load on the first job that asks). */
  metrics?: boolean | null;
};

/** The default pipeline when none is named, first registered wins: the embedded model, then the fixture. */
export const PREFERRED_DEFAULTS: readonly string[] = ["emoji-64", "tiny-sd"];

export class ApiService {
  readonly diffgraph: Diffgraph;
  readonly jobs: JobManager;
  readonly pipelines: ReadonlyMap<string, RegisteredPipeline>;
  readonly defaultPipeline: string;
  readonly apiKey: string | undefined;
  readonly startedAt = Date.now();

  private constructor(options: ServiceOptions, pipelines: Map<string, RegisteredPipeline>, defaultPipeline: string, jobs: JobManager) {
    this.diffgraph = options.diffgraph;
    this.pipelines = pipelines;
    this.defaultPipeline = defaultPipeline;
    this.apiKey = options.apiKey || undefined;
    this.jobs = jobs;
  }

  /** Open every pipeline in the folder, skipping (and logging) the ones that fail to load. */
  static async create(options: ServiceOptions): Promise<ApiService> {
    const log = options.log ?? ((m: string) => console.error(m));
    const pipelines = new Map<string, RegisteredPipeline>();
    for (const file of options.pipelineFiles) {
      try {
        const pipeline = await options.diffgraph.openPipeline(file);
        if (pipelines.has(pipeline.name)) {
          log(`pipelines: skipping ${file}: the name "${pipeline.name}" is already taken by ${pipelines.get(pipeline.name)!.file}`);
          await pipeline.dispose();
          continue;
        }
        // A pipeline that loads but cannot generate is skipped like one that fails to load (never the default).
        await pipeline.check().catch(async (err) => {
          await pipeline.dispose();
          throw new Error(`dry run failed: ${(err as Error).message}`);
        });
        const img2img = Object.values(pipeline.doc.nodes).some((n) => Object.values(n.inputs ?? {}).includes("$image"));
        // The denoise node's scheduler as it was loaded (configFile merged, defaults filled): one source.
        const scheduler = [...pipeline.nodes.values()].find((n) => n.instance.scheduler)?.instance.scheduler ?? null;
        pipelines.set(pipeline.name, { name: pipeline.name, file, pipeline, img2img, scheduler });
        log(`pipelines: registered "${pipeline.name}" from ${file}`);
      } catch (err) {
        log(`pipelines: skipping ${file}: ${(err as Error).message}`);
      }
    }
    if (pipelines.size === 0) throw new Error(`none of the pipelines (${options.pipelineFiles.join(", ") || "no files"}) could be loaded (see the log lines above)`);
    const names = [...pipelines.keys()];
    // Without an explicit default: the embedded model's pipeline (as the CLI), not whichever file sorts
    // first (emoji-256.json, the cascade, sorts before emoji-64.json).
    const def = options.defaultPipeline ?? PREFERRED_DEFAULTS.find((n) => pipelines.has(n)) ?? names[0]!;
    if (!pipelines.has(def)) {
      await Promise.all([...pipelines.values()].map((p) => p.pipeline.dispose()));
      throw new Error(`default pipeline "${def}" is not registered (registered: ${names.join(", ")})`);
    }
    const jobs = await JobManager.start({
      store: options.store,
      queue: options.queue ?? new MemoryJobQueue(options.maxQueue ?? 64),
      bus: options.bus ?? new MemoryEventBus(options.subscriberBuffer ?? 32),
      concurrency: options.concurrency,
      claim: options.role !== "api",
      // A worker of the distributed mode runs jobs other nodes accepted: it finds their pipelines by name.
      pipelines: (name) => pipelines.get(name)?.pipeline,
      log,
    });
    return new ApiService({ ...options, log }, pipelines, def, jobs);
  }

  get registry() {
    return this.diffgraph.registry;
  }

  plugins(kind?: PluginKind) {
    return this.registry.list(kind);
  }

  /**
   * Validate generate input against every bound and registered name; throws BAD_USER_INPUT naming the
   * field, or QUEUE_FULL. Cheap checks come first: a request the queue would refuse decodes no image.
   */
  async prepare(input: GenerateArgs): Promise<NewJob> {
    const name = input.pipeline ?? this.defaultPipeline;
    const reg = this.pipelines.get(name);
    if (!reg) throw badInput("input.pipeline", `unknown pipeline "${name}" (registered: ${[...this.pipelines.keys()].join(", ")})`);
    if (input.scheduler != null) this.schedulerPlugin("input.scheduler", input.scheduler);
    await this.jobs.checkCapacity();
    const previewEvery = input.previewEvery ?? 1;
    checkInt("input.previewEvery", previewEvery, API_LIMITS.previewEvery);
    const priority = input.priority ?? 0;
    checkInt("input.priority", priority, API_LIMITS.priority);

    let params: ResolvedParams;
    try {
      const { pipeline: _p, image: _i, mask: _m, previewEvery: _e, priority: _r, metrics: _x, ...scalars } = input;
      params = paramsFor(reg.pipeline, scalars as GenerationInput);
    } catch (err) {
      if (!(err instanceof ParamsError)) throw err;
      throw badInput(`input.${err.field ?? ""}`.replace(/\.$/, ""), err.message.replace(/^[\w.]+: /, ""), { allowed: allowedSizes(reg) });
    }
    if (params.height * params.width * params.batchSize > API_LIMITS.pixels) {
      throw badInput("input.batchSize", `height × width × batchSize = ${params.height * params.width * params.batchSize} exceeds the budget of ${API_LIMITS.pixels} pixels per job`, { limit: API_LIMITS.pixels });
    }

    let image: Tensor | undefined;
    if (input.image != null) {
      if (!reg.img2img) throw badInput("input.image", `pipeline "${reg.name}" has no image input (img2img is not supported by it)`);
      image = await decodeDataUrl(input.image, { width: params.width, height: params.height });
    }
    // Inpainting: the mask decodes like the image, at the same size; the pipeline refuses one it does not read.
    let mask: Tensor | undefined;
    if (input.mask != null) {
      if (!image) throw badInput("input.mask", "needs input.image (the picture whose unmasked part it keeps)");
      const readsMask = Object.values(reg.pipeline.doc.nodes).some((n) => Object.values(n.inputs ?? {}).includes("$mask"));
      if (!readsMask) throw badInput("input.mask", `pipeline "${reg.name}" takes no mask (inpainting is not supported by it)`);
      mask = await decodeDataUrl(input.mask, { width: params.width, height: params.height }, "input.mask");
    }
    const jobParams: JobParams = { ...params, scheduler: params.scheduler ?? null, img2img: image !== undefined, previewEvery, ...(input.metrics ? { metrics: true } : {}) };
    return { pipeline: reg.pipeline, params: jobParams, priority, ...(image ? { image } : {}), ...(mask ? { mask } : {}) };
  }

  /** A registered scheduler plugin by name; BAD_USER_INPUT at `field` otherwise. */
  private schedulerPlugin(field: string, name: string): PluginDefinition {
    try {
      return this.registry.require(name, "scheduler");
    } catch (err) {
      throw badInput(field, (err as Error).message);
    }
  }

  /**
   * The noise schedule a scheduler makes for `steps`. With a pipeline, it starts from that pipeline's
   * scheduler config (the model's schedule) as `generate` would run it; `config` keys override.
   */
  async schedule(args: { scheduler?: string | null; steps: number; config?: unknown; pipeline?: string | null }): Promise<ScheduleData> {
    const pipelineName = args.pipeline ?? (args.scheduler ? null : this.defaultPipeline);
    let base: Record<string, unknown> = {};
    let name = args.scheduler ?? null;
    if (pipelineName !== null) {
      const reg = this.pipelines.get(pipelineName);
      if (!reg) throw badInput("pipeline", `unknown pipeline "${pipelineName}" (registered: ${[...this.pipelines.keys()].join(", ")})`);
      if (reg.scheduler) {
        base = { ...reg.scheduler.config };
        name ??= reg.scheduler.use;
      }
    }
    if (!name) throw badInput("scheduler", "name a scheduler (the pipeline has none)");
    const def = this.schedulerPlugin("scheduler", name);
    checkInt("steps", args.steps, LIMITS.steps);
    const raw = args.config ?? {};
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw badInput("config", "must be a JSON object");
    const parsed = def.configSchema.safeParse({ ...base, ...(raw as Record<string, unknown>) });
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw badInput(["config", ...issue.path.map(String)].join("."), issue.message);
    }
    try {
      // A scheduler reads no model files; its context is the service's runtime and an empty folder.
      const inst = (await def.create(parsed.data, { models: memorySource({}, "schedule:"), onnx: this.diffgraph.onnx, log: () => {} })) as SchedulerInstance;
      const s = inst.createScheduler();
      s.setTimesteps(args.steps);
      return s.schedule();
    } catch (err) {
      throw badInput("config", (err as Error).message);
    }
  }

  async close(): Promise<void> {
    await this.jobs.close();
    await this.jobs.queue.dispose?.();
    await this.jobs.store.close();
    await this.jobs.bus.close();
    await Promise.all([...this.pipelines.values()].map((p) => p.pipeline.dispose()));
    await this.diffgraph.dispose();
  }
}

export function checkInt(field: string, v: number, range: { min: number; max: number }): void {
  if (!Number.isInteger(v)) throw badInput(field, `must be an integer`);
  if (v < range.min || v > range.max) throw badInput(field, `must be between ${range.min} and ${range.max}, got ${v}`, { min: range.min, max: range.max });
}

async function decodeDataUrl(url: string, size: { width: number; height: number }, field = "input.image"): Promise<Tensor> {
  if ((url.length * 3) / 4 > API_LIMITS.imageBytes + 64) throw badInput(field, `is larger than ${API_LIMITS.imageBytes} bytes`, { limit: API_LIMITS.imageBytes });
  const m = /^data:image\/(png|jpeg|webp);base64,([A-Za-z0-9+/=]+)$/.exec(url);
  if (!m) throw badInput(field, "must be a data URL: data:image/png;base64,… (png, jpeg or webp)");
  if ((m[2]!.length * 3) / 4 > API_LIMITS.imageBytes) throw badInput(field, `is larger than ${API_LIMITS.imageBytes} bytes`, { limit: API_LIMITS.imageBytes });
  const bytes = fromBase64(m[2]!);
  if (!bytes) throw badInput(field, "is not valid base64");
  try {
    return await imageToTensor(bytes, size, { maxPixels: API_LIMITS.sourcePixels });
  } catch (err) {
    if (err instanceof ImageTooLargeError) throw badInput(field, err.message, { limit: API_LIMITS.sourcePixels });
    throw badInput(field, `cannot be decoded: ${(err as Error).message}`);
  }
}

/** The image sizes a pipeline's model takes, for error details. */
function allowedSizes(reg: RegisteredPipeline): { multipleOf: number; height?: number; width?: number } | undefined {
  for (const node of reg.pipeline.nodes.values()) {
    const rule = node.instance.sizes;
    if (rule) return { multipleOf: rule.multipleOf, ...(rule.fixed ?? {}) };
  }
  return undefined;
}
