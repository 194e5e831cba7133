/**
 * The service's ports: what the job manager, the schema and the app need from storage, queueing and
 * event delivery, as interfaces. Engines plug in behind them, one small file each under
 * `api/adapters/` (SQLite through bun:sqlite or node:sqlite, in-memory, and Redis: `redis-store.ts`,
 * `redis-queue-bullmq.ts`, `redis-bus.ts`), so this file and everything that uses it imports no runtime.
 *
 * Every method that may cross a process boundary returns a Promise (or, on the bus, a `MaybePromise`
 * that the in-process engine answers at once), so a remote engine fits the same shape as the
 * embedded one. The optional members are what only shared engines do.
 */
import type { ResolvedParams } from "../core/params.ts";
import type { Tensor } from "../core/tensor.ts";

/** A value now, or later: in-process engines answer at once, remote ones over the network. */
export type MaybePromise<T> = T | Promise<T>;

/** A PNG the server can hand out by id (`/images/<id>.png`). */
export interface StoredImage {
  readonly id: string;
  readonly width: number;
  readonly height: number;
  /** Present for preview frames (kept in memory); final images are read from the store. */
  readonly png?: Uint8Array;
}

export const JOB_STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED: ReadonlySet<JobStatus> = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

export const INTERRUPTED_REASON = "interrupted: the server stopped before this job finished";
export const INTERRUPTED_CODE = "INTERRUPTED";

/**
 * What a client asked for, after validation and defaults: every generation parameter of
 * `core/params.ts` (`scheduler` null for the pipeline's own) plus what the API adds. The img2img
 * source and mask are not in the record: they travel with the queued job (`JobInputs`).
 */
export type JobParams = Omit<ResolvedParams, "scheduler"> & {
  scheduler: string | null;
  img2img: boolean;
  previewEvery: number;
  /** The job runs the pipeline's metric nodes (absent in records written before the option: false). */
  metrics?: boolean;
};

export interface JobRecord {
  /** Insertion order, for stable pagination. */
  seq: number;
  id: string;
  status: JobStatus;
  pipeline: string;
  params: JobParams;
  priority: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: string | null;
  /** Machine-readable reason for FAILED and CANCELLED jobs (RUN_FAILED, INTERRUPTED, CANCELLED). */
  errorCode: string | null;
  /** Denoising steps done / planned (planned is known once the scheduler has its timesteps). */
  step: number;
  totalSteps: number | null;
  metrics: Record<string, number>;
  /** Number of final images (image i has id `${id}-${i}`). */
  imageCount: number;
}

export type NewJobRecord = Omit<JobRecord, "seq">;

export interface JobPage {
  jobs: JobRecord[];
  hasNextPage: boolean;
  totalCount: number;
}

/**
 * Job records (queryable by status, paged newest first for the Relay `jobs` connection) and final
 * images. A job is finished with all its images or not finished with none: `writeImages` makes them
 * durable before the caller commits the record, and `recover` removes images no finished record claims.
 */
export interface JobStore {
  insert(job: NewJobRecord): Promise<JobRecord>;
  /** Persist the mutable fields of a job (status changes, not every step). */
  update(job: JobRecord): Promise<void>;
  get(id: string): Promise<JobRecord | null>;
  /** Newest first; `afterSeq` continues after a cursor. */
  page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): Promise<JobPage>;
  writeImages(jobId: string, pngs: readonly Uint8Array[]): Promise<void>;
  readImage(imageId: string): Promise<Uint8Array | null>;
  /**
   * After a crash or stop: fail jobs left QUEUED or RUNNING (`INTERRUPTED`) and remove images of
   * jobs that never finished. Returns what it did.
   */
  recover(): Promise<{ interrupted: number; orphanImages: number }>;
  /**
   * Commit a finished record unless another writer already finished it (a shared store, where a job
   * re-delivered after a lost lock may run twice). False: it was finished before; nothing written.
   * Stores without it finish with `update`.
   */
  finishOnce?(job: JobRecord): Promise<boolean>;
  /** Take a record out again (a shared queue refused the job just inserted); false if absent. */
  remove?(id: string): Promise<boolean>;
  close(): Promise<void>;
}

/** The queue refused a job: it holds `limit` waiting jobs, or it is closed. */
export class QueueFullError extends Error {
  constructor(
    message: string,
    readonly limit: number,
  ) {
    super(message);
    this.name = "QueueFullError";
  }
}

/**
 * Job ids waiting to run: highest priority first, arrival order within a priority, bounded length.
 * Workers `claim` the next one; a claimed job is `complete`d or `fail`ed by the worker that holds it
 * (a remote queue re-delivers one whose worker stops sending `heartbeat`s).
 */
export interface JobQueue {
  readonly maxLength: number;
  /**
   * True for a queue other processes share (Redis): the job's record is in the store before it is
   * pushed, a worker claims jobs other processes submitted, and jobs outlive this process.
   */
  readonly shared?: boolean;
  length(): Promise<number>;
  /**
   * Enqueue; rejects with `QueueFullError` when `maxLength` jobs wait (or the queue is closed).
   * `inputs` travel with the job to whichever worker claims it (a shared queue keeps them).
   */
  push(id: string, priority: number, inputs?: JobInputs): Promise<void>;
  /** The inputs pushed with a job this process claimed (shared queues). */
  inputs?(id: string): Promise<JobInputs | undefined>;
  /**
   * A claimed job the queue gave up on without its worker saying so (a shared queue: it stalled
   * more often than allowed, e.g. its workers kept dying): its record must be failed by someone.
   */
  onLost?(listener: (id: string, reason: string) => void): void;
  /** The next job id to run; waits while the queue is empty; null once the queue is closed. */
  claim(): Promise<string | null>;
  /** The worker is still running `id`. */
  heartbeat(id: string): Promise<void>;
  complete(id: string): Promise<void>;
  fail(id: string, reason: string): Promise<void>;
  /**
   * Hand a claimed job back unfinished for another worker (a shared queue, when this worker shuts
   * down). Queues without it: the job is failed as interrupted.
   */
  release?(id: string, reason: string): Promise<void>;
  /** Take a waiting job out (cancelled before it started); false if it was not waiting. */
  remove(id: string): Promise<boolean>;
  /** Take every waiting job out; returns their ids. */
  clear(): Promise<string[]>;
  /** Place of a waiting job (0 = next), or null. */
  position(id: string): Promise<number | null>;
  /**
   * Refuse new jobs and wake waiting `claim`s with null; returns the ids still waiting (a shared
   * queue keeps them for other workers and returns none).
   */
  close(): Promise<string[]>;
  /** Release connections once the jobs this process claimed are completed or failed (remote queues). */
  dispose?(): Promise<void>;
}

/** What a run needs besides its record's params: the img2img source and the inpainting mask. */
export interface JobInputs {
  readonly image?: Tensor;
  readonly mask?: Tensor;
}

/** One denoising step of a job as subscribers see it. */
export interface StepFrame {
  readonly jobId: string;
  /** The pipeline node (stage) whose step this is, e.g. "denoise". */
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

/**
 * Per-job events to every subscriber, wherever it is connected, plus the latest state of a running
 * job so that a late subscriber starts from it. A subscription is bounded per subscriber: when it
 * reads too slowly its oldest intermediate steps are dropped (counted in `dropped`), never the final
 * event, and generation never waits for it.
 */
export interface EventBus {
  /** A job was accepted or changed state (queued, running, progress): becomes its latest state. */
  state(job: JobRecord): void | Promise<void>;
  step(frame: StepFrame): void;
  /** The job finished: subscribers get this last event and end; its latest state is dropped. */
  finished(job: JobRecord): void;
  /**
   * Events of a job that has not finished: its snapshot first, then live events until `finished`.
   * Null when the bus knows no live state for it (ask the store for a finished one).
   */
  subscribe(jobId: string): MaybePromise<AsyncIterable<JobEvent> | null>;
  /** The latest state of an unfinished job, or null. */
  latest(jobId: string): MaybePromise<{ job: JobRecord; lastStep: StepFrame | null } | null>;
  /** A preview frame by image id, from wherever its worker left it (shared buses; else the worker's own cache). */
  previewImage?(imageId: string): Promise<StoredImage | null>;
  /**
   * Ask whichever process runs `jobId` to stop it (shared buses): the request is kept for a while,
   * so a worker that claims the job after it was sent still sees it (`cancelRequested`).
   */
  requestCancel?(jobId: string): Promise<void>;
  cancelRequested?(jobId: string): Promise<boolean>;
  /** Called in each process for every cancel request (whether or not it runs the job). */
  onCancel?(listener: (jobId: string) => void): void;
  close(): Promise<void>;
}
