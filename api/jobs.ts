/**
 * The job manager: runs submitted jobs on a `JobQueue`, keeps their records in a `JobStore` and
 * publishes their events on an `EventBus` (the ports in `api/ports.ts`; the embedded engines are in
 * `api/adapters/memory.ts` and `api/adapters/sqlite-*.ts`). `concurrency` worker loops claim jobs;
 * cancellation frees a slot at the next denoising step; preview encoding runs off the generation
 * path and is bounded, so a fast model or a slow client never makes generation wait.
 *
 * Jobs running at the same time (`concurrency` > 1) on one pipeline share noise-predictor calls
 * through the denoise node's batcher (core/batcher.ts), so the queue needs no batching of its own.
 *
 * Two sides, one class. The submit side validates nothing (the service did), stores the record and
 * pushes the job; the worker side claims jobs and runs them. In the embedded mode both are this
 * process, and a claimed job is found in `local` with its Pipeline object and inputs. On a shared
 * queue (`JobQueue.shared`: Redis) a worker claims jobs other processes submitted: it loads the
 * record from the store, finds the pipeline by name among its own (`pipelines`), takes the inputs
 * from the queue, and hears cancel requests through the bus.
 */
import type { PipelineEvent, StepEvent } from "../core/node.ts";
import type { GenerationInput } from "../core/params.ts";
import type { Pipeline } from "../core/pipeline.ts";
import type { Tensor } from "../core/tensor.ts";
import { apiError, ErrorCode } from "./errors.ts";
import { batchToPng } from "./image.ts";
import {
  FINISHED,
  INTERRUPTED_CODE,
  INTERRUPTED_REASON,
  QueueFullError,
  type EventBus,
  type JobEvent,
  type JobPage,
  type JobParams,
  type JobQueue,
  type JobRecord,
  type JobStatus,
  type JobStore,
  type NewJobRecord,
  type StepFrame,
  type StoredImage,
} from "./ports.ts";

export type { JobEvent, StepFrame, StoredImage } from "./ports.ts";

export interface JobManagerOptions {
  readonly store: JobStore;
  readonly queue: JobQueue;
  readonly bus: EventBus;
  /** Jobs run at the same time (default 1). */
  readonly concurrency?: number;
  /** Run worker loops that claim jobs (default true; false for an API node of the distributed mode). */
  readonly claim?: boolean;
  /**
   * Steps whose preview awaits PNG encoding before new previews are skipped (the step event still
   * goes out, with no frame), so encoding can never queue up behind a fast model (default 32).
   */
  readonly encodeBacklog?: number;
  /** Bytes of preview PNGs kept in memory for `/images/…` URLs (default 64 MiB). */
  readonly frameCacheBytes?: number;
  /** The worker side's pipelines by name, for jobs another process submitted (shared queues). */
  readonly pipelines?: (name: string) => Pipeline | undefined;
  /**
   * Run the store's `recover` at start (default: only when the queue is not shared; with a shared
   * queue other processes' jobs are live, not interrupted).
   */
  readonly recover?: boolean;
  readonly log?: (message: string) => void;
}

export interface NewJob {
  readonly pipeline: Pipeline;
  readonly params: JobParams;
  readonly priority: number;
  readonly image?: Tensor;
  readonly mask?: Tensor;
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

/**
 * What this process holds of a job it accepted (embedded mode) or claimed (shared queue): the run's
 * inputs and its controls.
 */
interface LocalJob {
  record: JobRecord;
  readonly pipeline: Pipeline;
  readonly image: Tensor | undefined;
  readonly mask?: Tensor | undefined;
  readonly abort: AbortController;
  /** Resolves once the record is in the store (a worker may claim the id before). */
  readonly stored: Promise<void>;
  /** Frame encoding runs off the generation path, in order; `backlog` bounds it. */
  chain: Promise<void>;
  backlog: number;
}

export class JobManager {
  readonly store: JobStore;
  readonly queue: JobQueue;
  readonly bus: EventBus;
  readonly concurrency: number;
  private readonly encodeBacklog: number;
  private readonly frames: FrameCache;
  private readonly log: (m: string) => void;
  private readonly pipelineFor: (name: string) => Pipeline | undefined;
  private readonly local = new Map<string, LocalJob>();
  private readonly workers: Promise<void>[] = [];
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  private constructor(options: JobManagerOptions) {
    this.store = options.store;
    this.queue = options.queue;
    this.bus = options.bus;
    this.concurrency = Math.max(1, options.concurrency ?? 1);
    this.encodeBacklog = Math.max(1, options.encodeBacklog ?? 32);
    this.frames = new FrameCache(options.frameCacheBytes ?? 64 * 2 ** 20);
    this.log = options.log ?? (() => {});
    this.pipelineFor = options.pipelines ?? (() => undefined);
  }

  /** Recover the store after a crash or stop (interrupted jobs failed, orphan images removed), then start the workers. */
  static async start(options: JobManagerOptions): Promise<JobManager> {
    const m = new JobManager(options);
    if (options.recover ?? !m.queue.shared) {
      const { interrupted, orphanImages } = await m.store.recover();
      if (interrupted) m.log(`jobs: marked ${interrupted} job(s) interrupted by the previous shutdown as FAILED`);
      if (orphanImages) m.log(`jobs: removed ${orphanImages} image file(s) of jobs that never finished`);
    }
    // A cancel sent to another node reaches the process that runs the job.
    m.bus.onCancel?.((id) => m.local.get(id)?.abort.abort(new DOMException("cancelled by a client", "AbortError")));
    m.queue.onLost?.((id, reason) => void m.failLost(id, reason));
    if (options.claim ?? true) for (let i = 0; i < m.concurrency; i++) m.workers.push(m.work());
    return m;
  }

  get maxQueue(): number {
    return this.queue.maxLength;
  }

  /** Jobs this process accepted that wait to run. */
  get queueLength(): number {
    let n = 0;
    for (const j of this.local.values()) if (j.record.status === "QUEUED") n++;
    return n;
  }

  get runningCount(): number {
    return this.running;
  }

  /** Throws QUEUE_FULL when a job submitted now would be refused (checked before any costly validation). */
  async checkCapacity(): Promise<void> {
    if (this.closed) throw apiError(ErrorCode.QUEUE_FULL, "the server is shutting down and accepts no new jobs");
    if ((await this.queue.length()) >= this.queue.maxLength) throw queueFull(this.queue.maxLength);
  }

  /** Enqueue a validated job: it is queued and stored, or (QUEUE_FULL) nothing is created. */
  async submit(job: NewJob): Promise<JobRecord> {
    if (this.closed) throw apiError(ErrorCode.QUEUE_FULL, "the server is shutting down and accepts no new jobs");
    if (this.queue.shared) return this.submitShared(job);
    const id = newJobId();
    let markStored!: () => void;
    const local: LocalJob = {
      record: { seq: 0, ...newRecord(id, job) },
      pipeline: job.pipeline,
      image: job.image,
      mask: job.mask,
      abort: new AbortController(),
      stored: new Promise<void>((r) => (markStored = r)),
      chain: Promise.resolve(),
      backlog: 0,
    };
    // The queue is the bound's one authority: a job it refuses leaves no record.
    this.local.set(id, local);
    try {
      await this.queue.push(id, job.priority);
    } catch (err) {
      this.local.delete(id);
      if (err instanceof QueueFullError) throw this.closed ? apiError(ErrorCode.QUEUE_FULL, err.message) : queueFull(err.limit);
      throw err;
    }
    try {
      const { seq: _seq, ...fresh } = local.record;
      local.record = { ...(await this.store.insert(fresh)), status: local.record.status };
    } catch (err) {
      await this.queue.remove(id);
      this.local.delete(id);
      throw err;
    }
    this.bus.state(local.record);
    markStored();
    return local.record;
  }

  /**
   * On a shared queue the record is stored first, so the worker that claims the job finds it; a job
   * the queue refuses is taken out again (nothing is created).
   */
  private async submitShared(job: NewJob): Promise<JobRecord> {
    const record = await this.store.insert(newRecord(newJobId(), job));
    await this.bus.state(record);
    const inputs = { ...(job.image ? { image: job.image } : {}), ...(job.mask ? { mask: job.mask } : {}) };
    try {
      await this.queue.push(record.id, job.priority, inputs);
    } catch (err) {
      await this.store.remove?.(record.id);
      this.bus.finished(record);
      if (err instanceof QueueFullError) throw this.closed ? apiError(ErrorCode.QUEUE_FULL, err.message) : queueFull(err.limit);
      throw err;
    }
    return record;
  }

  async get(id: string): Promise<JobRecord | null> {
    return this.local.get(id)?.record ?? (await this.bus.latest(id))?.job ?? (await this.store.get(id));
  }

  /** Cancel one job, queued or running. Returns it (unchanged when it had already finished). */
  async cancel(id: string): Promise<JobRecord | null> {
    const local = this.local.get(id);
    if (local && this.queue.shared) {
      local.abort.abort(new DOMException("cancelled by a client", "AbortError"));
      return local.record;
    }
    if (!local && this.queue.shared) return this.cancelShared(id);
    if (!local) return this.store.get(id);
    if (local.record.status === "QUEUED" && (await this.queue.remove(id))) {
      await local.stored;
      await this.finish(local, "CANCELLED", "cancelled by a client before it started", "CANCELLED");
    } else local.abort.abort(new DOMException("cancelled by a client", "AbortError"));
    return local.record;
  }

  /** A job another process may run: out of the queue if it still waits, else a cancel request its worker hears. */
  private async cancelShared(id: string): Promise<JobRecord | null> {
    const record = await this.get(id);
    if (!record || FINISHED.has(record.status)) return record;
    if (await this.queue.remove(id)) return this.finishRecord(record, "CANCELLED", "cancelled by a client before it started", "CANCELLED");
    await this.bus.requestCancel?.(id);
    return record;
  }

  /** Cancel every queued job; running jobs finish. Returns the cancelled jobs. */
  async clearQueue(): Promise<JobRecord[]> {
    const ids = await this.queue.clear();
    const out: JobRecord[] = [];
    for (const id of ids) {
      const local = this.local.get(id);
      if (!local && this.queue.shared) {
        const record = await this.store.get(id);
        if (record && !FINISHED.has(record.status)) out.push(await this.finishRecord(record, "CANCELLED", "cancelled by clearQueue before it started", "CANCELLED"));
        continue;
      }
      if (!local) continue;
      await local.stored;
      await this.finish(local, "CANCELLED", "cancelled by clearQueue before it started", "CANCELLED");
      out.push(local.record);
    }
    return out;
  }

  /** Events of one job: a snapshot of the current state, then live events; a finished job sends its final event only. */
  async subscribe(id: string): Promise<AsyncIterable<JobEvent> | null> {
    const live = await this.bus.subscribe(id);
    if (live) return live;
    const record = await this.store.get(id);
    if (!record) return null;
    return (async function* () {
      yield { type: "finished", job: record } as const;
    })();
  }

  /** Place of a queued job in the queue (0 = next), or null. */
  position(id: string): Promise<number | null> {
    return this.queue.position(id);
  }

  /** A page of jobs from the store, with live progress for unfinished ones. */
  async page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): Promise<JobPage> {
    const page = await this.store.page(first, afterSeq, status);
    const live = async (j: JobRecord) => this.local.get(j.id)?.record ?? (FINISHED.has(j.status) ? j : ((await this.bus.latest(j.id))?.job ?? j));
    return { ...page, jobs: await Promise.all(page.jobs.map(live)) };
  }

  /** A preview frame: from this process's cache, else from the bus (a shared bus keeps frames for any node). */
  async previewImage(id: string): Promise<StoredImage | undefined> {
    return this.frames.get(id) ?? (await this.bus.previewImage?.(id)) ?? undefined;
  }

  /** Resolves when no job this process accepted is queued or running. */
  idle(): Promise<void> {
    if (this.local.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * Stop accepting jobs and stop the running ones at their next step. Unfinished jobs are FAILED
   * with the same reason a crash leaves (`INTERRUPTED_REASON`), so a shutdown and a crash read alike.
   */
  async close(): Promise<void> {
    if (this.closed) return this.idle();
    this.closed = true;
    for (const id of await this.queue.close()) {
      const local = this.local.get(id);
      if (!local) continue;
      await local.stored;
      await this.finish(local, "FAILED", INTERRUPTED_REASON, INTERRUPTED_CODE);
    }
    for (const j of this.local.values()) if (j.record.status === "RUNNING") j.abort.abort(new ShutdownError());
    await Promise.all(this.workers);
    await this.idle();
  }

  /** One worker: claim, run, repeat, until the queue closes. */
  private async work(): Promise<void> {
    for (;;) {
      const id = await this.queue.claim();
      if (id === null) return;
      const job = this.local.get(id) ?? (this.queue.shared ? await this.adopt(id).catch((err) => void this.log(`job ${id}: could not be taken on: ${(err as Error).message}`)) : undefined);
      if (!job) {
        if (!this.queue.shared) await this.queue.fail(id, "no such job in this process");
        continue;
      }
      await job.stored;
      this.running++;
      try {
        await this.execute(job);
      } finally {
        this.running--;
      }
    }
  }

  /**
   * Take on a job another process submitted (shared queue): its record from the store, its pipeline
   * by name from this worker's own, its inputs from the queue. A job re-delivered after its worker
   * died starts again from step 0; one that had already finished is only acknowledged.
   */
  private async adopt(id: string): Promise<LocalJob | undefined> {
    const record = await this.store.get(id);
    if (!record) {
      this.log(`job ${id}: claimed, but the store has no record of it`);
      await this.queue.fail(id, "no record of this job in the store");
      return undefined;
    }
    if (FINISHED.has(record.status)) {
      await this.queue.complete(id);
      return undefined;
    }
    const pipeline = this.pipelineFor(record.pipeline);
    if (!pipeline) {
      await this.finishRecord(record, "FAILED", `the run failed: pipeline "${record.pipeline}" is not registered on this worker`, ErrorCode.RUN_FAILED);
      await this.queue.fail(id, "pipeline not registered");
      return undefined;
    }
    const inputs = await this.queue.inputs?.(id);
    const job: LocalJob = {
      record: { ...record, step: 0 },
      pipeline,
      image: inputs?.image,
      mask: inputs?.mask,
      abort: new AbortController(),
      stored: Promise.resolve(),
      chain: Promise.resolve(),
      backlog: 0,
    };
    this.local.set(id, job);
    // A cancel sent before this worker held the job is kept by the bus.
    if (await this.bus.cancelRequested?.(id)) job.abort.abort(new DOMException("cancelled by a client", "AbortError"));
    return job;
  }

  /** The queue gave up on a job nobody finished (shared queues): fail its record with the reason. */
  private async failLost(id: string, reason: string): Promise<void> {
    try {
      const record = await this.store.get(id);
      if (!record || FINISHED.has(record.status) || this.local.has(id)) return;
      this.log(`job ${id}: the queue gave up on it (${reason})`);
      await this.finishRecord(record, "FAILED", `${INTERRUPTED_REASON} (${reason})`, INTERRUPTED_CODE);
    } catch (err) {
      this.log(`job ${id}: could not be failed after the queue gave up on it: ${(err as Error).message}`);
    }
  }

  private async execute(job: LocalJob): Promise<void> {
    const r = job.record;
    await this.update(job, { status: "RUNNING", startedAt: Date.now(), step: 0 });
    const p = r.params;
    const { scheduler, img2img: _i, previewEvery: _e, metrics, ...scalars } = p;
    const input: GenerationInput = {
      ...scalars,
      ...(scheduler ? { scheduler } : {}),
      ...(job.image ? { image: job.image } : {}),
      ...(job.mask ? { mask: job.mask } : {}),
    };
    try {
      // A job cancelled between its claim and its start never runs.
      job.abort.signal.throwIfAborted();
      const result = await job.pipeline.run(input, {
        signal: job.abort.signal,
        preview: p.previewEvery > 0 ? p.previewEvery : false,
        metrics: metrics === true,
        onEvent: (e) => this.onPipelineEvent(job, e),
      });
      await job.chain;
      // A cancel that came while the last frames were being encoded still cancels: the job had not finished.
      job.abort.signal.throwIfAborted();
      const pngs = await batchToPng(result.images);
      await this.store.writeImages(r.id, pngs);
      job.record = { ...job.record, metrics: { ...result.metrics }, imageCount: pngs.length };
      await this.finish(job, "SUCCEEDED", null, null);
      await this.queue.complete(r.id);
    } catch (err) {
      await job.chain;
      const reason = job.abort.signal.reason as Error | undefined;
      if (reason instanceof ShutdownError && this.queue.release) {
        // A shared queue gives the job to another worker: it has not finished, here or anywhere.
        this.forget(r.id);
        await this.queue.release(r.id, INTERRUPTED_REASON);
        return;
      }
      if (reason instanceof ShutdownError) await this.finish(job, "FAILED", INTERRUPTED_REASON, INTERRUPTED_CODE);
      else if (job.abort.signal.aborted) await this.finish(job, "CANCELLED", String(reason?.message ?? "cancelled"), "CANCELLED");
      else {
        // The log keeps the detail (paths, stack); the client gets a code and a message free of server paths.
        this.log(`job ${r.id} failed: ${(err as Error)?.stack ?? err}`);
        await this.finish(job, "FAILED", publicMessage(err), ErrorCode.RUN_FAILED);
      }
      await this.queue.fail(r.id, job.record.error ?? "failed");
    }
  }

  private onPipelineEvent(job: LocalJob, e: PipelineEvent): void {
    if (e.type !== "step") return;
    const stepEndedAt = performance.now();
    job.record = { ...job.record, step: e.step, totalSteps: e.totalSteps };
    this.bus.state(job.record);
    const preview = e.preview && job.backlog < this.encodeBacklog ? e.preview : undefined;
    job.backlog++;
    job.chain = job.chain.then(async () => {
      try {
        this.bus.step(await this.encodeFrame(job.record.id, e, preview, stepEndedAt));
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

  private async update(job: LocalJob, patch: Partial<JobRecord>): Promise<void> {
    job.record = { ...job.record, ...patch };
    this.bus.state(job.record);
    await this.store.update(job.record);
  }

  private async finish(job: LocalJob, status: JobStatus, error: string | null, errorCode: string | null): Promise<void> {
    job.record = await this.finishRecord(job.record, status, error, errorCode);
    // Finished jobs are served from the store from now on.
    this.forget(job.record.id);
  }

  private forget(id: string): void {
    this.local.delete(id);
    if (this.local.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Commit a job's final record and send its final event. On a store shared with other workers the
   * first to finish wins (`finishOnce`); a later finisher (a job re-delivered while its first worker
   * still ran) writes nothing and sends the winner's record, so every subscriber's one final event
   * carries the record the store keeps.
   */
  private async finishRecord(record: JobRecord, status: JobStatus, error: string | null, errorCode: string | null): Promise<JobRecord> {
    let done: JobRecord = { ...record, status, error, errorCode, finishedAt: Date.now() };
    if (!this.store.finishOnce) await this.store.update(done);
    else if (!(await this.store.finishOnce(done))) done = (await this.store.get(done.id)) ?? done;
    this.bus.finished(done);
    return done;
  }
}

function newRecord(id: string, job: NewJob): NewJobRecord {
  return {
    id,
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
  };
}

function queueFull(limit: number) {
  return apiError(ErrorCode.QUEUE_FULL, `the queue is full (${limit} jobs waiting); retry later`, { field: "queue", limit });
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
