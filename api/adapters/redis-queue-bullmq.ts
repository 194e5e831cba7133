/**
 * `JobQueue` on BullMQ (Redis), shared by every API node and worker of a deployment.
 *
 * - `push` adds a BullMQ job whose id is derived from the diffgraph job id, with the img2img source
 *   and mask in its data. BullMQ runs the lowest priority number first (1 = highest); the API's
 *   priorities −100..100 map to 201..1, so higher API priority runs first and arrival order holds
 *   within one (BullMQ orders equal priorities FIFO).
 * - `claim` is fed by a BullMQ `Worker` (started on the first `claim`, so API nodes that never
 *   claim run none) whose processor hands the job to the JobManager's worker loop and settles when
 *   the JobManager calls `complete` or `fail`. BullMQ renews the job's lock while the processor
 *   runs (`heartbeat` has nothing to add); when a worker dies (kill -9) its lock expires and
 *   BullMQ's stalled-job check puts the job back in the queue for another worker: at-least-once.
 *   A job that stalls more than `maxStalledCount` times is failed by BullMQ; `onLost` reports it.
 * - `remove` takes a job out only while it waits (not once a worker holds it).
 * - The bound (`maxLength` waiting jobs) is checked against BullMQ's count before each add; two
 *   nodes adding at the same moment may each pass it, so it can be exceeded by the number of
 *   concurrent submitters (BullMQ has no bounded add).
 */
import { Job, Queue, UnrecoverableError, Worker, type ConnectionOptions } from "bullmq";
import { base64, fromBase64 } from "../image.ts";
import { QueueFullError, type JobInputs, type JobQueue } from "../ports.ts";
import type { Tensor } from "../../core/tensor.ts";

export interface BullJobQueueOptions {
  /** ioredis connection options (see `redisConnection` for a `redis://` URL). */
  readonly connection: ConnectionOptions;
  /** BullMQ queue name (default "diffgraph"). */
  readonly name?: string;
  /** BullMQ key prefix (default "bull"). */
  readonly prefix?: string;
  readonly maxLength?: number;
  /** Jobs this process runs at once (the BullMQ Worker's concurrency; the JobManager's). */
  readonly concurrency?: number;
  /** A job's lock, renewed at half this while its worker lives; a dead worker's job is re-delivered within about twice this (default 30 s). */
  readonly lockMs?: number;
  /** Re-deliveries after stalls before BullMQ fails the job (default 2). */
  readonly maxStalledCount?: number;
  readonly log?: (message: string) => void;
}

type WireTensor = { dims: number[]; data: string };
interface JobData {
  image?: WireTensor;
  mask?: WireTensor;
}

/** An API priority (−100..100, higher first) as a BullMQ priority (1..201, lower first). */
export const bullPriority = (p: number) => 101 - p;
const bullId = (id: string) => `job-${id}`;
const jobIdOf = (bid: string) => bid.replace(/^job-/, "");

interface Held {
  resolve(): void;
  reject(err: Error): void;
  readonly data: JobData;
}

export class BullJobQueue implements JobQueue {
  readonly shared = true;
  readonly maxLength: number;
  private readonly queue: Queue;
  private worker: Worker | null = null;
  private readonly ready: string[] = [];
  private readonly claimers: ((id: string | null) => void)[] = [];
  private readonly held = new Map<string, Held>();
  /** Jobs failed through `fail` whose BullMQ "failed" event has not come yet. */
  private readonly failedHere = new Set<string>();
  private readonly lost: ((id: string, reason: string) => void)[] = [];
  private readonly log: (m: string) => void;
  private closed = false;
  private shutdown: Promise<void> | null = null;

  constructor(private readonly options: BullJobQueueOptions) {
    this.maxLength = options.maxLength ?? 64;
    this.log = options.log ?? (() => {});
    this.queue = new Queue(options.name ?? "diffgraph", { connection: options.connection, prefix: options.prefix });
    this.queue.on("error", (err) => this.log(`queue: ${err.message}`));
  }

  async length(): Promise<number> {
    return this.queue.getJobCountByTypes("waiting", "prioritized");
  }

  async push(id: string, priority: number, inputs?: JobInputs): Promise<void> {
    if (this.closed) throw new QueueFullError("the server is shutting down and accepts no new jobs", this.maxLength);
    if ((await this.length()) >= this.maxLength) throw new QueueFullError(`the queue is full (${this.maxLength} jobs waiting); retry later`, this.maxLength);
    const data: JobData = { ...(inputs?.image ? { image: toWire(inputs.image) } : {}), ...(inputs?.mask ? { mask: toWire(inputs.mask) } : {}) };
    await this.queue.add("generate", data, { jobId: bullId(id), priority: bullPriority(priority), attempts: 3, removeOnComplete: true, removeOnFail: 1000 });
  }

  claim(): Promise<string | null> {
    if (this.closed) return Promise.resolve(null);
    this.startWorker();
    const next = this.ready.shift();
    if (next) return Promise.resolve(next);
    return new Promise((r) => this.claimers.push(r));
  }

  private startWorker(): void {
    if (this.worker) return;
    const lockDuration = this.options.lockMs ?? 30_000;
    this.worker = new Worker(
      this.options.name ?? "diffgraph",
      (job: Job<JobData>) =>
        new Promise<void>((resolve, reject) => {
          const id = jobIdOf(job.id!);
          this.held.set(id, { resolve, reject, data: job.data });
          const claimer = this.claimers.shift();
          if (claimer) claimer(id);
          else this.ready.push(id);
        }),
      {
        connection: this.options.connection,
        prefix: this.options.prefix,
        concurrency: Math.max(1, this.options.concurrency ?? 1),
        lockDuration,
        stalledInterval: lockDuration,
        maxStalledCount: this.options.maxStalledCount ?? 2,
      },
    );
    this.worker.on("error", (err) => this.log(`queue worker: ${err.message}`));
    this.worker.on("failed", (job, err) => {
      // Jobs this process's JobManager failed are finished already. A job BullMQ gave up on is not:
      // one that stalled more than maxStalledCount times (BullMQ fails it with an UnrecoverableError
      // when a worker next takes it), or one handed back at shutdown more often than its attempts.
      if (!job?.id) return;
      const id = jobIdOf(job.id);
      if (this.failedHere.delete(id)) return;
      const final = err.name === "UnrecoverableError" || job.attemptsMade >= (job.opts.attempts ?? 1);
      if (final) for (const l of this.lost) l(id, err.message);
    });
  }

  async inputs(id: string): Promise<JobInputs | undefined> {
    const d = this.held.get(id)?.data;
    if (!d) return undefined;
    return { ...(d.image ? { image: fromWire(d.image, "image") } : {}), ...(d.mask ? { mask: fromWire(d.mask, "mask") } : {}) };
  }

  onLost(listener: (id: string, reason: string) => void): void {
    this.lost.push(listener);
  }

  async heartbeat(): Promise<void> {}

  async complete(id: string): Promise<void> {
    this.held.get(id)?.resolve();
    this.held.delete(id);
  }

  /** Failed for good: BullMQ does not retry an `UnrecoverableError` (its retries are for jobs handed back at shutdown). */
  async fail(id: string, reason: string): Promise<void> {
    const held = this.held.get(id);
    if (held) this.failedHere.add(id);
    held?.reject(new UnrecoverableError(reason));
    this.held.delete(id);
  }

  /** Back to the queue: a plain error, which BullMQ retries at once on whichever worker claims next. */
  async release(id: string, reason: string): Promise<void> {
    this.held.get(id)?.reject(new Error(reason));
    this.held.delete(id);
  }

  async remove(id: string): Promise<boolean> {
    const job = await Job.fromId(this.queue, bullId(id));
    if (!job) return false;
    const state = await job.getState();
    if (state !== "waiting" && state !== "prioritized") return false;
    return (await this.queue.remove(bullId(id))) === 1;
  }

  /** Ids of waiting jobs in the order workers take them (no job data read). */
  private async waitingIds(): Promise<string[]> {
    // "waiting" holds jobs put back by the stalled check, taken before prioritized ones; "prioritized" is ordered by priority, then arrival.
    return this.queue.getRanges(["waiting", "prioritized"], 0, -1, true);
  }

  async clear(): Promise<string[]> {
    const out: string[] = [];
    for (const bid of await this.waitingIds()) {
      const id = jobIdOf(bid);
      if (await this.remove(id)) out.push(id);
    }
    return out;
  }

  async position(id: string): Promise<number | null> {
    const i = (await this.waitingIds()).indexOf(bullId(id));
    return i < 0 ? null : i;
  }

  /**
   * Stop claiming. Waiting jobs stay in Redis for other workers (none is returned); the BullMQ
   * worker finishes once the jobs this process holds are completed or failed (`dispose`).
   */
  async close(): Promise<string[]> {
    this.closed = true;
    for (const c of this.claimers.splice(0)) c(null);
    // Handed over but not yet taken by a worker loop: failed with a plain error, which BullMQ retries (on another worker).
    for (const id of this.ready.splice(0)) {
      this.held.get(id)?.reject(new Error("this worker shut down before it started the job"));
      this.held.delete(id);
    }
    this.shutdown ??= (async () => {
      await this.worker?.close();
      await this.queue.close();
    })();
    return [];
  }

  async dispose(): Promise<void> {
    await this.close();
    await this.shutdown;
  }
}

/** ioredis options from a `redis://[user:password@]host:port[/db]` URL; BullMQ needs retries per request off. */
export function redisConnection(url: string): { host: string; port: number; username?: string; password?: string; db?: number; maxRetriesPerRequest: null } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--queue: "${url}" is not a URL (expected redis://HOST:PORT)`);
  }
  if (u.protocol !== "redis:") throw new Error(`--queue: "${url}" is not a redis:// URL`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined;
  if (db !== undefined && !Number.isInteger(db)) throw new Error(`--queue: "${url}": the database ("${u.pathname.slice(1)}") must be a number`);
  return {
    host: u.hostname || "127.0.0.1",
    port: Number(u.port || 6379),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db !== undefined ? { db } : {}),
    maxRetriesPerRequest: null,
  };
}

function toWire(t: Tensor): WireTensor {
  return { dims: [...t.dims], data: base64(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)) };
}

function fromWire(w: WireTensor, field: string): Tensor {
  const bytes = fromBase64(w.data);
  if (!bytes || bytes.byteLength % 4) throw new Error(`queue: the job's ${field} input is not float32 data`);
  const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return { dims: w.dims, data };
}
