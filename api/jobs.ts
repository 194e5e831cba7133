/**
 * The job queue: a bounded priority queue, a configurable number of concurrent runs, cancellation
 * that frees a slot at the next denoising step, and per-subscriber event buffers so a slow client
 * never slows generation (its intermediate frames are dropped, its final event never is).
 *
 * Each job is one `Pipeline.run`; jobs running at the same time (`concurrency` > 1) on one pipeline
 * share noise-predictor calls through the denoise node's batcher (core/batcher.ts), so the queue
 * needs no batching logic of its own: concurrency decides how many jobs may share.
 */
import type { Pipeline } from "../core/pipeline.ts";
import type { PipelineEvent, StepEvent } from "../core/node.ts";
import type { GenerationInput } from "../core/params.ts";
import type { Tensor } from "../core/tensor.ts";
import { apiError, ErrorCode } from "./errors.ts";
import { batchToPng } from "./image.ts";
import { FINISHED, INTERRUPTED_CODE, INTERRUPTED_REASON, JobStore, type JobPage, type JobParams, type JobRecord, type JobStatus } from "./store.ts";

/** A PNG the server can hand out by id (`/images/<id>.png`). */
export interface StoredImage {
  readonly id: string;
  readonly width: number;
  readonly height: number;
  /** Present for preview frames (kept in memory); final images are read from the store. */
  readonly png?: Uint8Array;
}

export interface StepFrame {
  readonly jobId: string;
  /** The pipeline node (stage) whose step this is: "denoise" for a single-stage pipeline. */
  readonly node: string;
  readonly step: number;
  readonly totalSteps: number;
  readonly timestep: number;
  readonly elapsedMs: number;
  readonly previews: readonly StoredImage[];
  /** `performance.now()` when the step ended in the pipeline (for latency measurements). */
  readonly stepEndedAt: number;
  /** Frames dropped for this subscriber since its previous step event. */
  readonly dropped: number;
}

export type JobEvent =
  | { readonly type: "snapshot"; readonly job: JobRecord; readonly lastStep: StepFrame | null }
  | ({ readonly type: "step" } & StepFrame)
  | { readonly type: "finished"; readonly job: JobRecord };

export interface JobManagerOptions {
  readonly store: JobStore;
  /** Jobs run at the same time (default 1). */
  readonly concurrency?: number;
  /** Queued (not yet running) jobs accepted before `generate` fails with QUEUE_FULL (default 64). */
  readonly maxQueue?: number;
  /** Step events buffered per subscriber before its oldest intermediate frame is dropped (default 32). */
  readonly subscriberBuffer?: number;
  /**
   * Steps whose preview awaits PNG encoding before new previews are skipped (the step event still
   * goes out, with no frame), so encoding can never queue up behind a fast model (default 32).
   */
  readonly encodeBacklog?: number;
  /** Bytes of preview PNGs kept in memory for `/images/…` URLs (default 64 MiB). */
  readonly frameCacheBytes?: number;
  readonly log?: (message: string) => void;
}

export interface NewJob {
  readonly pipeline: Pipeline;
  readonly params: JobParams;
  readonly priority: number;
  readonly image?: Tensor;
}

/** One subscriber's view of a job's events: bounded, lossy for intermediate frames only. */
class Subscriber implements AsyncIterable<JobEvent> {
  private readonly items: JobEvent[] = [];
  private wake: (() => void) | null = null;
  private ended = false;
  private dropped = 0;
  private closed = false;
  constructor(
    private readonly capacity: number,
    private readonly onClose: () => void,
  ) {}

  push(e: JobEvent): void {
    if (this.ended) return;
    if (e.type === "step") {
      const steps = this.items.filter((i) => i.type === "step").length;
      if (steps >= this.capacity) {
        this.items.splice(this.items.findIndex((i) => i.type === "step"), 1);
        this.dropped++;
      }
    }
    this.items.push(e);
    this.wake?.();
  }

  end(): void {
    this.ended = true;
    this.wake?.();
  }

  // A hand-written iterator rather than an async generator: `return()` (a client that disconnects)
  // must take effect at once, even while `next()` is waiting for the job's next step.
  [Symbol.asyncIterator](): AsyncIterator<JobEvent> {
    const done = (): IteratorResult<JobEvent> => ({ value: undefined, done: true });
    const close = () => {
      if (this.closed) return;
      this.closed = true;
      this.ended = true;
      this.items.length = 0;
      this.wake?.();
      this.onClose();
    };
    const next = async (): Promise<IteratorResult<JobEvent>> => {
      for (;;) {
        if (this.closed) return done();
        const e = this.items.shift();
        if (e) {
          if (e.type === "finished") close();
          if (e.type === "step" && this.dropped) {
            const out = { ...e, dropped: this.dropped };
            this.dropped = 0;
            return { value: out, done: false };
          }
          return { value: e, done: false };
        }
        if (this.ended) {
          close();
          return done();
        }
        await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
      }
    };
    return {
      next,
      return: async () => {
        close();
        return done();
      },
    };
  }
}

/** Preview PNGs by image id, least recently used evicted first. */
class FrameCache {
  private readonly map = new Map<string, StoredImage>();
  private bytes = 0;
  constructor(private readonly capacity: number) {}
  get(id: string): StoredImage | undefined {
    return this.map.get(id);
  }
  set(img: StoredImage): void {
    this.map.set(img.id, img);
    this.bytes += img.png!.byteLength;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.capacity) break;
      this.map.delete(k);
      this.bytes -= v.png!.byteLength;
    }
  }
}

interface LiveJob {
  record: JobRecord;
  readonly pipeline: Pipeline;
  readonly image: Tensor | undefined;
  readonly abort: AbortController;
  readonly subscribers: Set<Subscriber>;
  lastStep: StepFrame | null;
  /** Frame encoding runs off the generation path, in order; `backlog` bounds it. */
  chain: Promise<void>;
  backlog: number;
}


export class JobManager {
  readonly store: JobStore;
  readonly concurrency: number;
  readonly maxQueue: number;
  private readonly subscriberBuffer: number;
  private readonly encodeBacklog: number;
  private readonly frames: FrameCache;
  private readonly log: (m: string) => void;
  private readonly live = new Map<string, LiveJob>();
  private readonly queued: LiveJob[] = [];
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(options: JobManagerOptions) {
    this.store = options.store;
    this.concurrency = Math.max(1, options.concurrency ?? 1);
    this.maxQueue = options.maxQueue ?? 64;
    this.subscriberBuffer = Math.max(1, options.subscriberBuffer ?? 32);
    this.encodeBacklog = Math.max(1, options.encodeBacklog ?? 32);
    this.frames = new FrameCache(options.frameCacheBytes ?? 64 * 2 ** 20);
    this.log = options.log ?? (() => {});
    const n = this.store.failInterrupted();
    if (n) this.log(`jobs: marked ${n} job(s) interrupted by the previous shutdown as FAILED`);
    const orphans = this.store.sweepOrphans();
    if (orphans) this.log(`jobs: removed ${orphans} image file(s) of jobs that never finished`);
  }

  get queueLength(): number {
    return this.queued.length;
  }

  get runningCount(): number {
    return this.running;
  }

  /** Throws QUEUE_FULL when a job submitted now would be refused (checked before any costly validation). */
  checkCapacity(): void {
    if (this.closed) throw apiError(ErrorCode.QUEUE_FULL, "the server is shutting down and accepts no new jobs");
    if (this.queued.length >= this.maxQueue) {
      throw apiError(ErrorCode.QUEUE_FULL, `the queue is full (${this.maxQueue} jobs waiting); retry later`, { field: "queue", limit: this.maxQueue });
    }
  }

  /** Enqueue a validated job. Throws QUEUE_FULL when the queue is at its bound. */
  submit(job: NewJob): JobRecord {
    this.checkCapacity();
    const record = this.store.insert({
      id: newJobId(),
      status: "QUEUED",
      pipeline: job.pipeline.name,
      params: job.params,
      priority: job.priority,
      createdAt: Date.now(),
      startedAt: null,
      finishedAt: null,
      error: null,
      errorCode: null,
      step: 0,
      totalSteps: null,
      metrics: {},
      imageCount: 0,
    });
    const live: LiveJob = {
      record,
      pipeline: job.pipeline,
      image: job.image,
      abort: new AbortController(),
      subscribers: new Set(),
      lastStep: null,
      chain: Promise.resolve(),
      backlog: 0,
    };
    this.live.set(record.id, live);
    // Highest priority first; equal priorities in arrival order.
    const at = this.queued.findIndex((q) => q.record.priority < record.priority);
    if (at < 0) this.queued.push(live);
    else this.queued.splice(at, 0, live);
    queueMicrotask(() => this.pump());
    return record;
  }

  get(id: string): JobRecord | null {
    return this.live.get(id)?.record ?? this.store.get(id);
  }

  /** Cancel one job, queued or running. Returns it (unchanged when it had already finished). */
  cancel(id: string): JobRecord | null {
    const live = this.live.get(id);
    if (!live) return this.store.get(id);
    if (live.record.status === "QUEUED") {
      this.queued.splice(this.queued.indexOf(live), 1);
      this.finish(live, "CANCELLED", "cancelled by a client before it started", "CANCELLED");
    } else if (live.record.status === "RUNNING") {
      live.abort.abort(new DOMException("cancelled by a client", "AbortError"));
    }
    return live.record;
  }

  /** Cancel every queued job; running jobs finish. Returns the cancelled jobs. */
  clearQueue(): JobRecord[] {
    const jobs = this.queued.splice(0);
    for (const j of jobs) this.finish(j, "CANCELLED", "cancelled by clearQueue before it started", "CANCELLED");
    return jobs.map((j) => j.record);
  }

  /** Events of one job: a snapshot of the current state (or the final event), then live events. */
  subscribe(id: string): AsyncIterable<JobEvent> | null {
    const live = this.live.get(id);
    if (!live) {
      const record = this.store.get(id);
      if (!record) return null;
      return (async function* () {
        yield { type: "finished", job: record } as const;
      })();
    }
    const sub: Subscriber = new Subscriber(this.subscriberBuffer, () => live.subscribers.delete(sub));
    if (FINISHED.has(live.record.status)) {
      sub.push({ type: "finished", job: live.record });
      sub.end();
      return sub;
    }
    sub.push({ type: "snapshot", job: live.record, lastStep: live.lastStep });
    live.subscribers.add(sub);
    return sub;
  }

  /** Place of a queued job in the queue (0 = next), or null. */
  position(id: string): number | null {
    const i = this.queued.findIndex((j) => j.record.id === id);
    return i < 0 ? null : i;
  }

  /** A page of jobs from the store, with live progress for unfinished ones. */
  page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): JobPage {
    const page = this.store.page(first, afterSeq, status);
    return { ...page, jobs: page.jobs.map((j) => this.live.get(j.id)?.record ?? j) };
  }

  previewImage(id: string): StoredImage | undefined {
    return this.frames.get(id);
  }

  /** Resolves when no job is queued or running. */
  idle(): Promise<void> {
    if (this.running === 0 && this.queued.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * Stop accepting jobs and stop the running ones at their next step. Unfinished jobs are FAILED
   * with the same reason a crash leaves (`INTERRUPTED_REASON`), so a shutdown and a crash read alike.
   */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of this.queued.splice(0)) this.finish(j, "FAILED", INTERRUPTED_REASON, INTERRUPTED_CODE);
    for (const j of this.live.values()) if (j.record.status === "RUNNING") j.abort.abort(new ShutdownError());
    await this.idle();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.queued.length > 0) {
      const job = this.queued.shift()!;
      this.running++;
      void this.execute(job).finally(() => {
        this.running--;
        this.pump();
        if (this.running === 0 && this.queued.length === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  private async execute(job: LiveJob): Promise<void> {
    const r = job.record;
    this.update(job, { status: "RUNNING", startedAt: Date.now() });
    const p = r.params;
    const input: GenerationInput = {
      prompt: p.prompt,
      negativePrompt: p.negativePrompt,
      steps: p.steps,
      guidanceScale: p.guidanceScale,
      seed: p.seed,
      batchSize: p.batchSize,
      height: p.height,
      width: p.width,
      strength: p.strength,
      ...(p.scheduler ? { scheduler: p.scheduler } : {}),
      ...(job.image ? { image: job.image } : {}),
    };
    try {
      const result = await job.pipeline.run(input, {
        signal: job.abort.signal,
        preview: p.previewEvery > 0 ? p.previewEvery : false,
        onEvent: (e) => this.onPipelineEvent(job, e),
      });
      await job.chain;
      const pngs = await batchToPng(result.images);
      await this.store.writeImages(r.id, pngs);
      job.record = { ...job.record, metrics: { ...result.metrics }, imageCount: pngs.length };
      this.finish(job, "SUCCEEDED", null, null);
    } catch (err) {
      await job.chain;
      const reason = job.abort.signal.reason as Error | undefined;
      if (reason instanceof ShutdownError) this.finish(job, "FAILED", INTERRUPTED_REASON, INTERRUPTED_CODE);
      else if (job.abort.signal.aborted) this.finish(job, "CANCELLED", String(reason?.message ?? "cancelled"), "CANCELLED");
      else {
        // The log keeps the detail (paths, stack); the client gets a code and a message free of server paths.
        this.log(`job ${r.id} failed: ${(err as Error)?.stack ?? err}`);
        this.finish(job, "FAILED", publicMessage(err), ErrorCode.RUN_FAILED);
      }
    }
  }

  private onPipelineEvent(job: LiveJob, e: PipelineEvent): void {
    if (e.type !== "step") return;
    const stepEndedAt = performance.now();
    job.record = { ...job.record, step: e.step, totalSteps: e.totalSteps };
    const preview = e.preview && job.backlog < this.encodeBacklog ? e.preview : undefined;
    job.backlog++;
    job.chain = job.chain.then(async () => {
      try {
        const frame = await this.encodeFrame(job.record.id, e, preview, stepEndedAt);
        job.lastStep = frame;
        for (const s of job.subscribers) s.push({ type: "step", ...frame });
      } catch (err) {
        this.log(`job ${job.record.id}: preview of step ${e.step} failed: ${(err as Error).message}`);
      } finally {
        job.backlog--;
      }
    });
  }

  private async encodeFrame(jobId: string, e: StepEvent, preview: Tensor | undefined, stepEndedAt: number): Promise<StepFrame> {
    const previews: StoredImage[] = [];
    if (preview) {
      const pngs = await batchToPng(preview, { compressionLevel: 1 });
      const [, , height, width] = preview.dims as [number, number, number, number];
      pngs.forEach((png, i) => {
        const img = { id: `${jobId}-s${e.step}-${i}`, width, height, png };
        this.frames.set(img);
        previews.push(img);
      });
    }
    return { jobId, node: e.node, step: e.step, totalSteps: e.totalSteps, timestep: e.timestep, elapsedMs: e.elapsedMs, previews, stepEndedAt, dropped: 0 };
  }

  private update(job: LiveJob, patch: Partial<JobRecord>): void {
    job.record = { ...job.record, ...patch };
    this.store.update(job.record);
  }

  private finish(job: LiveJob, status: JobStatus, error: string | null, errorCode: string | null): void {
    this.update(job, { status, error, errorCode, finishedAt: Date.now() });
    for (const s of job.subscribers) {
      s.push({ type: "finished", job: job.record });
      s.end();
    }
    job.subscribers.clear();
    // Finished jobs are served from the store from now on.
    this.live.delete(job.record.id);
  }
}

/**
 * What a client may read of a run's failure: the first line of the message with every absolute path
 * or file URL cut to its last component, at most 300 characters.
 */
export function publicMessage(err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err);
  const line = (raw.split("\n")[0] ?? "").replace(/(?:file:\/\/)?(?:[A-Za-z]:)?(?:[\\/][^\s\\/'"`()\[\],;]+){2,}/g, (p) => p.split(/[\\/]/).pop()!);
  const text = line.length > 300 ? `${line.slice(0, 297)}...` : line;
  return `the run failed: ${text || (err as Error)?.name || "error"} (the server log has the detail)`;
}

class ShutdownError extends DOMException {
  constructor() {
    super("the server is shutting down", "AbortError");
  }
}

function newJobId(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Image ids: `<job>-<i>` (final) or `<job>-s<step>-<i>` (preview frame). Anything else is rejected. */
export const IMAGE_ID = /^[0-9a-f]{24}-(?:s\d{1,4}-)?\d{1,3}$/;
