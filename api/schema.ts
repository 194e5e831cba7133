/**
 * The GraphQL schema, declared in code with Pothos and built once per service. Every type and
 * field carries a description, so GraphiQL's docs pane is the API reference.
 */
import SchemaBuilder from "@pothos/core";
import { GraphQLError, Kind, type ValueNode } from "graphql";
import { z } from "zod";
import { LIMITS, PARAM_NAMES, PARAMS } from "../core/params.ts";
import { PLUGIN_KINDS, type PluginDefinition, type PluginKind } from "../core/plugin.ts";
import type { ScheduleData } from "../core/scheduler.ts";
import { apiError, badInput, ErrorCode } from "./errors.ts";
import { base64, fromBase64, pngDataUrl, pngSize } from "./image.ts";
import { API_LIMITS, checkInt, type ApiService, type GenerateArgs, type RegisteredPipeline } from "./service.ts";
import { JOB_STATUSES, type JobEvent, type JobRecord, type JobStatus, type StepFrame, type StoredImage } from "./ports.ts";

export interface ApiContext {
  readonly service: ApiService;
  /** Where image URLs point (no trailing slash; "" for same-origin relative URLs). */
  readonly baseUrl: string;
}

interface ModelInfo {
  name: string;
  pipelines: string[];
}

const builder = new SchemaBuilder<{
  Context: ApiContext;
  Scalars: { JSON: { Input: unknown; Output: unknown } };
  DefaultFieldNullability: false;
}>({ defaultFieldNullability: false });

function literal(ast: ValueNode, depth = 0): unknown {
  if (depth > API_LIMITS.jsonDepth) throw badInput("JSON", `nested deeper than ${API_LIMITS.jsonDepth} levels`);
  switch (ast.kind) {
    case Kind.STRING:
    case Kind.BOOLEAN:
      return ast.value;
    case Kind.INT:
    case Kind.FLOAT:
      return Number(ast.value);
    case Kind.NULL:
      return null;
    case Kind.LIST:
      return ast.values.map((v) => literal(v, depth + 1));
    case Kind.OBJECT:
      return Object.fromEntries(ast.fields.map((f) => [f.name.value, literal(f.value, depth + 1)]));
    default:
      throw new GraphQLError("JSON literals cannot contain variables");
  }
}

/** A JSON variable as the client sent it, refused when nested deeper than the limit. */
function jsonValue(v: unknown, depth = 0): unknown {
  if (depth > API_LIMITS.jsonDepth) throw badInput("JSON", `nested deeper than ${API_LIMITS.jsonDepth} levels`);
  if (v && typeof v === "object") for (const x of Object.values(v)) jsonValue(x, depth + 1);
  return v;
}

builder.scalarType("JSON", {
  description: "Any JSON value (configs, JSON Schemas, metric maps).",
  serialize: (v) => v,
  parseValue: (v) => jsonValue(v),
  parseLiteral: (ast) => literal(ast),
});

const PluginKindEnum = builder.enumType("PluginKind", {
  description: "What a plugin does in a pipeline.",
  values: Object.fromEntries(PLUGIN_KINDS.map((k) => [k.toUpperCase().replace(/-/g, "_"), { value: k, description: `a ${k} plugin` }])) as Record<string, { value: PluginKind }>,
});

const JobStatusEnum = builder.enumType("JobStatus", {
  description: "Where a job is in its life.",
  values: {
    QUEUED: { value: "QUEUED", description: "Waiting for a free slot." },
    RUNNING: { value: "RUNNING", description: "Denoising now." },
    SUCCEEDED: { value: "SUCCEEDED", description: "Finished; its images and metrics are available." },
    FAILED: { value: "FAILED", description: "Stopped by an error (or by a server restart); see `error`." },
    CANCELLED: { value: "CANCELLED", description: "Cancelled by a client (cancelJob or clearQueue)." },
  } satisfies Record<JobStatus, unknown>,
});

const PluginRef = builder.objectRef<PluginDefinition>("Plugin").implement({
  description: "A registered plugin: a building block pipelines are made of.",
  fields: (t) => ({
    name: t.exposeString("name", { description: "Unique name, as used in pipeline documents and in `generate(input: {scheduler})`." }),
    kind: t.field({ type: PluginKindEnum, description: "The plugin's kind.", resolve: (p) => p.kind }),
    description: t.exposeString("description", { description: "What it does." }),
    configSchema: t.field({
      type: "JSON",
      description: "JSON Schema of the plugin's config object.",
      resolve: (p) => {
        try {
          return z.toJSONSchema(p.configSchema as z.ZodType, { unrepresentable: "any", io: "input" });
        } catch {
          return null;
        }
      },
      nullable: true,
    }),
  }),
});

const PipelineDefaultsRef = builder.objectRef<RegisteredPipeline["pipeline"]["defaults"]>("PipelineDefaults").implement({
  description: "Parameter values a pipeline uses when `generate` leaves them out (null: none set).",
  // One field per generation parameter in core/params.ts (PARAMS), the prompt aside.
  fields: (t) =>
    Object.fromEntries(
      PARAM_NAMES.filter((k) => k !== "prompt").map((k) => [
        k,
        t.field({ type: PARAMS[k].output ?? PARAMS[k].graphql, nullable: true, description: PARAMS[k].description, resolve: (d) => (d[k as keyof typeof d] ?? null) as never }),
      ]),
    ),
});

const PipelineNodeRef = builder.objectRef<{ name: string; use: string }>("PipelineNode").implement({
  description: "One node of a pipeline graph.",
  fields: (t) => ({
    name: t.exposeString("name", { description: "Node name in the pipeline document." }),
    use: t.exposeString("use", { description: "The plugin (or core node) it runs." }),
  }),
});

interface BatchingStats {
  calls: number;
  modelCalls: number;
  rows: number;
  maxMerged: number;
  merging: boolean;
}

const BatchingRef = builder.objectRef<BatchingStats>("Batching").implement({
  description:
    "Cross-job batching since the server started: noise-predictor calls of jobs running at the same time are merged " +
    "into shared model calls (start the server with `--concurrency` above 1 for jobs to overlap).",
  fields: (t) => ({
    calls: t.exposeInt("calls", { description: "Noise-predictor calls the jobs made (one per job per step)." }),
    modelCalls: t.exposeInt("modelCalls", { description: "Model calls actually run; fewer than `calls` when jobs shared them." }),
    rows: t.exposeInt("rows", { description: "Batch rows sent to the model." }),
    maxMerged: t.exposeInt("maxMerged", { description: "Most jobs' calls merged into one model call." }),
    merging: t.exposeBoolean("merging", {
      description:
        "False while the batcher, which times merged against separate calls whenever two or more jobs run, " +
        "found separate calls faster on this machine and model.",
    }),
  }),
});

const PipelineRef = builder.objectRef<RegisteredPipeline>("Pipeline").implement({
  description: "A pipeline the server registered at startup. Choose one by name in `generate`.",
  fields: (t) => ({
    name: t.exposeString("name", { description: "Unique name." }),
    description: t.string({ nullable: true, description: "What the pipeline makes.", resolve: (p) => p.pipeline.doc.description ?? null }),
    model: t.string({ nullable: true, description: "Name of the model folder it runs.", resolve: (p) => modelName(p.pipeline.doc.model) }),
    isDefault: t.boolean({ description: "True for the pipeline `generate` uses when it names none.", resolve: (p, _a, ctx) => p.name === ctx.service.defaultPipeline }),
    scheduler: t.string({ nullable: true, description: "Its scheduler plugin (override per job with `input.scheduler`).", resolve: (p) => p.scheduler?.use ?? null }),
    schedulerConfig: t.field({ type: "JSON", nullable: true, description: "That scheduler's config (diffusers keys), which an override reuses.", resolve: (p) => p.scheduler?.config ?? null }),
    img2img: t.boolean({ description: "True when it accepts a source image (`input.image`).", resolve: (p) => p.img2img }),
    preview: t.string({ nullable: true, description: "The preview decoder plugin that draws per-step frames, if any.", resolve: (p) => p.pipeline.doc.preview?.use ?? null }),
    defaults: t.field({ type: PipelineDefaultsRef, description: "Defaults for parameters a job leaves out.", resolve: (p) => p.pipeline.defaults }),
    batching: t.field({
      type: BatchingRef,
      nullable: true,
      description: "Cross-job batching counters; null when the pipeline's denoise node has `batching: false`.",
      resolve: (p) => {
        const all = Object.entries(p.pipeline.nodeStats()).filter(([name]) => p.pipeline.doc.nodes[name]?.use === "denoise");
        if (all.length === 0) return null;
        const sum = (k: "calls" | "modelCalls" | "rows") => all.reduce((n, [, s]) => n + (s[k] ?? 0), 0);
        return {
          calls: sum("calls"),
          modelCalls: sum("modelCalls"),
          rows: sum("rows"),
          maxMerged: Math.max(...all.map(([, s]) => s.maxMerged ?? 0)),
          merging: all.every(([, s]) => s.merging !== 0),
        };
      },
    }),
    nodes: t.field({
      type: [PipelineNodeRef],
      description: "The graph's nodes in execution order.",
      resolve: (p) => p.pipeline.order.map((name) => ({ name, use: p.pipeline.doc.nodes[name]!.use })),
    }),
  }),
});

function modelName(model: string | undefined): string | null {
  return model ? (model.replace(/\/+$/, "").split("/").pop() ?? null) : null;
}

const ModelRef = builder.objectRef<ModelInfo>("Model").implement({
  description: "A model folder that registered pipelines run.",
  fields: (t) => ({
    name: t.exposeString("name", { description: "Folder name." }),
    pipelines: t.exposeStringList("pipelines", { description: "Pipelines that run it." }),
  }),
});

const ScheduleRef = builder.objectRef<ScheduleData>("Schedule").implement({
  description: "A noise schedule: the timesteps a scheduler visits and the training schedule behind them.",
  fields: (t) => ({
    scheduler: t.exposeString("scheduler", { description: "Scheduler plugin name." }),
    numInferenceSteps: t.exposeInt("numInferenceSteps", { description: "Steps asked for." }),
    timesteps: t.exposeFloatList("timesteps", { description: "Training timesteps visited, in order (decreasing)." }),
    betas: t.exposeFloatList("betas", { description: "β_t for t = 0..T−1." }),
    alphas: t.exposeFloatList("alphas", { description: "α_t = 1 − β_t." }),
    alphasCumprod: t.exposeFloatList("alphasCumprod", { description: "ᾱ_t = ∏ α_s (s ≤ t)." }),
    sigmas: t.exposeFloatList("sigmas", { description: "σ = √((1−ᾱ)/ᾱ) at each visited timestep." }),
    logSnr: t.exposeFloatList("logSnr", { description: "log(ᾱ/(1−ᾱ)) at each visited timestep." }),
  }),
});

const ImageRef = builder.objectRef<StoredImage>("Image").implement({
  description: "A PNG image: a final result (stored) or a per-step preview frame (kept in memory for a while).",
  fields: (t) => ({
    id: t.exposeID("id", { description: "Image id; the PNG is at /images/{id}.png." }),
    url: t.string({ description: "URL of the PNG.", resolve: (img, _a, ctx) => `${ctx.baseUrl}/images/${img.id}.png` }),
    width: t.exposeInt("width", { description: "Width in pixels." }),
    height: t.exposeInt("height", { description: "Height in pixels." }),
    dataUrl: t.string({
      nullable: true,
      description: "The PNG inline as a data: URL (null if the image is no longer available).",
      resolve: async (img, _a, ctx) => {
        const png = img.png ?? (await ctx.service.jobs.store.readImage(img.id));
        return png ? pngDataUrl(png) : null;
      },
    }),
  }),
});

const MetricRef = builder.objectRef<[string, number]>("Metric").implement({
  description: "One value computed by a metric node of the pipeline.",
  fields: (t) => ({
    name: t.string({ description: '"node.metric", e.g. "clip.score".', resolve: (m) => m[0] }),
    value: t.float({ description: "The value.", resolve: (m) => m[1] }),
  }),
});

const JobParamsRef = builder.objectRef<JobRecord["params"]>("JobParams").implement({
  description: "The resolved parameters a job runs with (defaults filled in).",
  // One field per generation parameter in core/params.ts (PARAMS), plus what the API adds.
  fields: (t) => ({
    ...Object.fromEntries(
      PARAM_NAMES.map((k) => [
        k,
        t.field({
          type: PARAMS[k].output ?? PARAMS[k].graphql,
          nullable: k === "scheduler",
          description: k === "scheduler" ? "Scheduler override, or null for the pipeline's own." : PARAMS[k].description,
          resolve: (p) => p[k] as never,
        }),
      ]),
    ),
    img2img: t.exposeBoolean("img2img", { description: "True when a source image was given." }),
    previewEvery: t.exposeInt("previewEvery", { description: "A preview frame every n-th step (0: none)." }),
    metrics: t.boolean({ description: "True when the job runs the pipeline's metric nodes (Job.metrics is empty otherwise).", resolve: (p) => p.metrics === true }),
  }),
});

const JobRef = builder.objectRef<JobRecord>("Job").implement({
  description: "One generation request and its outcome.",
  fields: (t) => ({
    id: t.exposeID("id", { description: "Job id (use with job, cancelJob, jobProgress)." }),
    status: t.field({ type: JobStatusEnum, description: "Current status.", resolve: (j) => j.status }),
    pipeline: t.exposeString("pipeline", { description: "Pipeline name." }),
    params: t.field({ type: JobParamsRef, description: "Resolved parameters.", resolve: (j) => j.params }),
    priority: t.exposeInt("priority", { description: "Queue priority (higher runs first)." }),
    createdAt: t.string({ description: "When it was submitted (ISO 8601).", resolve: (j) => new Date(j.createdAt).toISOString() }),
    startedAt: t.string({ nullable: true, description: "When it started running.", resolve: (j) => (j.startedAt ? new Date(j.startedAt).toISOString() : null) }),
    finishedAt: t.string({ nullable: true, description: "When it finished.", resolve: (j) => (j.finishedAt ? new Date(j.finishedAt).toISOString() : null) }),
    error: t.exposeString("error", { nullable: true, description: "Why it failed or was cancelled (free of server paths; the server log has the detail)." }),
    errorCode: t.exposeString("errorCode", {
      nullable: true,
      description: "Machine-readable reason: RUN_FAILED (the pipeline failed while running), INTERRUPTED (the server stopped first) or CANCELLED.",
    }),
    step: t.exposeInt("step", { description: "Denoising steps done." }),
    totalSteps: t.exposeInt("totalSteps", { nullable: true, description: "Denoising steps planned (known once it runs; may differ from params.steps for multi-stage solvers or img2img)." }),
    images: t.field({
      type: [ImageRef],
      description: "Final images (empty until SUCCEEDED).",
      // Sizes come from the PNGs: a cascade's output is bigger than the generation size (params).
      resolve: (j, _a, ctx) =>
        Promise.all(
          Array.from({ length: j.imageCount }, async (_, i) => {
            const id = `${j.id}-${i}`;
            const size = pngSize(await ctx.service.jobs.store.readImage(id));
            return { id, width: size?.width ?? j.params.width, height: size?.height ?? j.params.height };
          }),
        ),
    }),
    metrics: t.field({ type: [MetricRef], description: "Values from the pipeline's metric nodes.", resolve: (j) => Object.entries(j.metrics) }),
    position: t.int({
      nullable: true,
      description: "Place in the queue (0 = next), or null when not queued.",
      resolve: (j, _a, ctx) => (j.status === "QUEUED" ? ctx.service.jobs.position(j.id) : null),
    }),
  }),
});

// Relay-style connection, written out (no relay plugin needed for one connection).
const PageInfoRef = builder.objectRef<{ hasNextPage: boolean; endCursor: string | null; startCursor: string | null }>("PageInfo").implement({
  description: "Relay page info.",
  fields: (t) => ({
    hasNextPage: t.exposeBoolean("hasNextPage", { description: "More jobs follow endCursor." }),
    hasPreviousPage: t.boolean({ description: "Always false (forward pagination only).", resolve: () => false }),
    startCursor: t.exposeString("startCursor", { nullable: true, description: "Cursor of the first edge." }),
    endCursor: t.exposeString("endCursor", { nullable: true, description: "Cursor of the last edge; pass as `after`." }),
  }),
});
const JobEdgeRef = builder.objectRef<{ cursor: string; node: JobRecord }>("JobEdge").implement({
  description: "A job and its cursor.",
  fields: (t) => ({
    cursor: t.exposeString("cursor", { description: "Opaque cursor." }),
    node: t.field({ type: JobRef, description: "The job.", resolve: (e) => e.node }),
  }),
});
const JobConnectionRef = builder
  .objectRef<{ edges: { cursor: string; node: JobRecord }[]; pageInfo: { hasNextPage: boolean; endCursor: string | null; startCursor: string | null }; totalCount: number }>("JobConnection")
  .implement({
    description: "Jobs, newest first.",
    fields: (t) => ({
      edges: t.field({ type: [JobEdgeRef], description: "The page.", resolve: (c) => c.edges }),
      nodes: t.field({ type: [JobRef], description: "The page's jobs without cursors.", resolve: (c) => c.edges.map((e) => e.node) }),
      pageInfo: t.field({ type: PageInfoRef, description: "Pagination state.", resolve: (c) => c.pageInfo }),
      totalCount: t.exposeInt("totalCount", { description: "Jobs matching the filter, in all pages." }),
    }),
  });

const cursorOf = (seq: number) => base64(new TextEncoder().encode(`job:${seq}`)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
function seqOf(cursor: string): number {
  const bytes = fromBase64(cursor);
  const m = bytes && /^job:(\d+)$/.exec(new TextDecoder().decode(bytes));
  if (!m) throw badInput("after", "is not a cursor returned by this server");
  return Number(m[1]);
}

// Progress events.
const JobStepRef = builder.objectRef<StepFrame>("JobStep").implement({
  description: "One denoising step finished.",
  fields: (t) => ({
    jobId: t.exposeID("jobId", { description: "The job." }),
    node: t.exposeString("node", { description: "The pipeline node (stage) that made this step: \"denoise\" for the base model's steps." }),
    step: t.exposeInt("step", { description: "1-based index of the step just finished." }),
    totalSteps: t.exposeInt("totalSteps", { description: "Steps this run makes." }),
    timestep: t.exposeFloat("timestep", { description: "The training timestep t of this step." }),
    elapsedMs: t.exposeFloat("elapsedMs", { description: "Milliseconds since denoising began." }),
    previews: t.field({ type: [ImageRef], description: "Preview frame per batch item (empty on steps without a preview).", resolve: (s) => s.previews }),
    dropped: t.exposeInt("dropped", { description: "Step events dropped for this subscriber (it read too slowly) since its previous one." }),
    serverTime: t.float({ description: "Server clock (performance.now, ms) when the step ended; for latency measurement.", resolve: (s) => s.stepEndedAt }),
  }),
});
const JobSnapshotRef = builder.objectRef<Extract<JobEvent, { type: "snapshot" }>>("JobSnapshot").implement({
  description: "The job's state when the subscription began (always the first event for an unfinished job).",
  fields: (t) => ({
    job: t.field({ type: JobRef, description: "The job.", resolve: (e) => e.job }),
    lastStep: t.field({ type: JobStepRef, nullable: true, description: "The latest step (with its frame), if it is running.", resolve: (e) => e.lastStep }),
  }),
});
const JobFinishedRef = builder.objectRef<Extract<JobEvent, { type: "finished" }>>("JobFinished").implement({
  description: "The last event: the job succeeded (images, metrics), failed or was cancelled.",
  fields: (t) => ({
    job: t.field({ type: JobRef, description: "The finished job.", resolve: (e) => e.job }),
  }),
});
const JobEventUnion = builder.unionType("JobEvent", {
  description: "An event of jobProgress: JobSnapshot first, then JobStep per step, then JobFinished.",
  types: [JobSnapshotRef, JobStepRef, JobFinishedRef],
  resolveType: (e) => ((e as JobEvent).type === "snapshot" ? "JobSnapshot" : (e as JobEvent).type === "step" ? "JobStep" : "JobFinished"),
});

const GenerateInputRef = builder.inputType("GenerateInput", {
  description: `What to generate. Omitted fields take the pipeline's defaults. Bounds: prompt ≤ ${LIMITS.promptChars} chars; steps ${LIMITS.steps.min}–${LIMITS.steps.max}; guidanceScale ${LIMITS.guidanceScale.min}–${LIMITS.guidanceScale.max}; batchSize ${LIMITS.batchSize.min}–${LIMITS.batchSize.max}; height/width ${LIMITS.size.min}–${LIMITS.size.max}, multiple of ${LIMITS.size.multipleOf}; height×width×batchSize ≤ ${API_LIMITS.pixels}; priority ${API_LIMITS.priority.min}–${API_LIMITS.priority.max}.`,
  fields: (t) => ({
    // One field per generation parameter in core/params.ts (PARAMS), then what only the API takes.
    ...Object.fromEntries(PARAM_NAMES.map((k) => [k, t.field({ type: PARAMS[k].graphql, required: k === "prompt", description: PARAMS[k].description })])),
    pipeline: t.string({ description: "Registered pipeline name (see pipelines); default: the server's default pipeline." }),
    image: t.string({ description: `img2img source as a data URL (PNG, JPEG or WebP, ≤ ${API_LIMITS.imageBytes} bytes); resized to width × height.` }),
    mask: t.string({ description: "Inpainting: a mask as a data URL like image (white = repaint, black = keep), with image; resized to width × height." }),
    previewEvery: t.int({ description: "A preview frame every n-th step (default 1; 0: no frames)." }),
    priority: t.int({ description: `Queue priority, ${API_LIMITS.priority.min}–${API_LIMITS.priority.max} (higher runs first; default 0).` }),
    metrics: t.boolean({ description: "Run the pipeline's metric nodes (a CLIP score) and report them in Job.metrics (default false: skipped, their models not loaded)." }),
  }),
});

builder.queryType({
  description: "Read the server's plugins, pipelines, schedules and jobs.",
  fields: (t) => ({
    plugins: t.field({
      type: [PluginRef],
      description: "Registered plugins, optionally of one kind.",
      args: { kind: t.arg({ type: PluginKindEnum, description: "Only plugins of this kind." }) },
      resolve: (_r, a, ctx) => ctx.service.plugins(a.kind ?? undefined),
    }),
    pipelines: t.field({ type: [PipelineRef], description: "Pipelines registered at startup.", resolve: (_r, _a, ctx) => [...ctx.service.pipelines.values()] }),
    models: t.field({
      type: [ModelRef],
      description: "Model folders the registered pipelines run.",
      resolve: (_r, _a, ctx) => {
        const m = new Map<string, string[]>();
        for (const p of ctx.service.pipelines.values()) {
          const name = modelName(p.pipeline.doc.model);
          if (name) m.set(name, [...(m.get(name) ?? []), p.name]);
        }
        return [...m].map(([name, pipelines]) => ({ name, pipelines }));
      },
    }),
    schedule: t.field({
      type: ScheduleRef,
      description:
        "The noise schedule a scheduler makes for a number of steps. With `pipeline`, it starts from that pipeline's scheduler config (the model's schedule), as `generate` would run it; `config` keys override.",
      args: {
        scheduler: t.arg.string({ description: "Scheduler plugin name; default: the pipeline's." }),
        steps: t.arg.int({ required: true, description: `Inference steps (${LIMITS.steps.min}–${LIMITS.steps.max}).` }),
        config: t.arg({ type: "JSON", description: "Scheduler config (diffusers keys, e.g. {beta_schedule: \"scaled_linear\"}), over the pipeline's when one is named." }),
        pipeline: t.arg.string({ description: "Registered pipeline whose scheduler config to start from. Default: none (plugin defaults) when `scheduler` is given, else the default pipeline." }),
      },
      resolve: (_r, a, ctx) => ctx.service.schedule(a),
    }),
    job: t.field({
      type: JobRef,
      nullable: true,
      description: "One job by id (null if there is none).",
      args: { id: t.arg.id({ required: true, description: "Job id." }) },
      resolve: (_r, a, ctx) => ctx.service.jobs.get(String(a.id)),
    }),
    jobs: t.field({
      type: JobConnectionRef,
      description: "Jobs, newest first, as a Relay connection.",
      args: {
        first: t.arg.int({ description: `Page size (1–${API_LIMITS.jobsPageSize}; default 20).` }),
        after: t.arg.string({ description: "Cursor (pageInfo.endCursor of the previous page)." }),
        status: t.arg({ type: [JobStatusEnum], description: "Only jobs with one of these statuses." }),
      },
      resolve: async (_r, a, ctx) => {
        const first = a.first ?? 20;
        checkInt("first", first, { min: 1, max: API_LIMITS.jobsPageSize });
        const page = await ctx.service.jobs.page(first, a.after ? seqOf(a.after) : null, (a.status as JobStatus[] | null | undefined) ?? null);
        const edges = page.jobs.map((node) => ({ cursor: cursorOf(node.seq), node }));
        return {
          edges,
          totalCount: page.totalCount,
          pageInfo: { hasNextPage: page.hasNextPage, startCursor: edges[0]?.cursor ?? null, endCursor: edges.at(-1)?.cursor ?? null },
        };
      },
    }),
  }),
});

builder.mutationType({
  description: "Submit and cancel jobs. Needs the API key when the server has one (Authorization: Bearer <key>).",
  fields: (t) => ({
    generate: t.field({
      type: JobRef,
      // Nullable so that in a request with several aliased `generate` fields, one refused job
      // (QUEUE_FULL) nulls only its own field: the client still learns the ids of the jobs it created.
      nullable: true,
      description: "Queue a generation. Fails with BAD_USER_INPUT (extensions.field names the input) or QUEUE_FULL, and then creates nothing.",
      args: { input: t.arg({ type: GenerateInputRef, required: true, description: "What to generate." }) },
      resolve: async (_r, a, ctx) => ctx.service.jobs.submit(await ctx.service.prepare(a.input as GenerateArgs)),
    }),
    cancelJob: t.field({
      type: JobRef,
      description: "Cancel one job, queued or running (a running job stops before its next step). Returns the job; a finished job is returned unchanged.",
      args: { id: t.arg.id({ required: true, description: "Job id." }) },
      resolve: async (_r, a, ctx) => {
        const job = await ctx.service.jobs.cancel(String(a.id));
        if (!job) throw apiError(ErrorCode.NOT_FOUND, `no job "${a.id}"`, { field: "id" });
        return job;
      },
    }),
    clearQueue: t.field({
      type: [JobRef],
      description: "Cancel every queued job; running jobs finish. Returns the cancelled jobs.",
      resolve: (_r, _a, ctx) => ctx.service.jobs.clearQueue(),
    }),
  }),
});

builder.subscriptionType({
  description: "Live job events (over SSE at /graphql, or WebSocket with the graphql-transport-ws protocol).",
  fields: (t) => ({
    jobProgress: t.field({
      type: JobEventUnion,
      description: "A job's events: JobSnapshot (current state), one JobStep per denoising step, then JobFinished. A finished job sends JobFinished only.",
      args: { id: t.arg.id({ required: true, description: "Job id." }) },
      subscribe: async (_r, a, ctx) => {
        const events = await ctx.service.jobs.subscribe(String(a.id));
        if (!events) throw apiError(ErrorCode.NOT_FOUND, `no job "${a.id}"`, { field: "id" });
        return events;
      },
      resolve: (e) => e as JobEvent,
    }),
  }),
});

export const schema = builder.toSchema();
