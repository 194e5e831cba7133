/**
 * In-process engines: a job store in memory (tests, edge hosts without a disk), the priority queue
 * and the event bus of the embedded mode. Nothing here outlives the process.
 */
import { Repeater } from "@repeaterjs/repeater";
import {
  QueueFullError,
  type EventBus,
  type JobEvent,
  type JobPage,
  type JobQueue,
  type JobRecord,
  type JobStatus,
  type JobStore,
  type NewJobRecord,
  type StepFrame,
  INTERRUPTED_CODE,
  INTERRUPTED_REASON,
} from "../ports.ts";

export class MemoryJobStore implements JobStore {
  private readonly jobs = new Map<string, JobRecord>();
  private readonly images = new Map<string, Uint8Array>();
  private seq = 0;

  async insert(job: NewJobRecord): Promise<JobRecord> {
    if (this.jobs.has(job.id)) throw new Error(`job ${job.id} exists`);
    const r = { ...structuredClone(job), seq: ++this.seq };
    this.jobs.set(r.id, r);
    return structuredClone(r);
  }
  async update(job: JobRecord): Promise<void> {
    const old = this.jobs.get(job.id);
    if (old) this.jobs.set(job.id, { ...structuredClone(job), seq: old.seq, params: old.params, pipeline: old.pipeline, priority: old.priority, createdAt: old.createdAt });
  }
  async get(id: string): Promise<JobRecord | null> {
    const r = this.jobs.get(id);
    return r ? structuredClone(r) : null;
  }
  async page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): Promise<JobPage> {
    const all = [...this.jobs.values()].filter((j) => !status?.length || status.includes(j.status)).sort((a, b) => b.seq - a.seq);
    const rest = afterSeq === null ? all : all.filter((j) => j.seq < afterSeq);
    return { jobs: rest.slice(0, first).map((j) => structuredClone(j)), hasNextPage: rest.length > first, totalCount: all.length };
  }
  async writeImages(jobId: string, pngs: readonly Uint8Array[]): Promise<void> {
    pngs.forEach((png, i) => this.images.set(`${jobId}-${i}`, png.slice()));
  }
  async readImage(imageId: string): Promise<Uint8Array | null> {
    return this.images.get(imageId)?.slice() ?? null;
  }
  async recover(now = Date.now()): Promise<{ interrupted: number; orphanImages: number }> {
    let interrupted = 0;
    for (const j of this.jobs.values()) {
      if (j.status === "QUEUED" || j.status === "RUNNING") {
        Object.assign(j, { status: "FAILED", error: INTERRUPTED_REASON, errorCode: INTERRUPTED_CODE, finishedAt: now });
        interrupted++;
      }
    }
    let orphanImages = 0;
    for (const id of this.images.keys()) {
      const m = /^(.*)-(\d+)$/.exec(id)!;
      const j = this.jobs.get(m[1]!);
      if (!j || j.status !== "SUCCEEDED" || Number(m[2]) >= j.imageCount) {
        this.images.delete(id);
        orphanImages++;
      }
    }
    return { interrupted, orphanImages };
  }
  async close(): Promise<void> {}
}

/** Highest priority first, arrival order within a priority; `claim` waits while empty. */
export class MemoryJobQueue implements JobQueue {
  private readonly waiting: { id: string; priority: number }[] = [];
  private readonly claimers: ((id: string | null) => void)[] = [];
  private closed = false;

  constructor(readonly maxLength = 64) {}

  async length(): Promise<number> {
    return this.waiting.length;
  }
  async push(id: string, priority: number): Promise<void> {
    if (this.closed) throw new QueueFullError("the server is shutting down and accepts no new jobs", this.maxLength);
    if (this.waiting.length >= this.maxLength) throw new QueueFullError(`the queue is full (${this.maxLength} jobs waiting); retry later`, this.maxLength);
    const claimer = this.claimers.shift();
    if (claimer) return claimer(id);
    const at = this.waiting.findIndex((q) => q.priority < priority);
    if (at < 0) this.waiting.push({ id, priority });
    else this.waiting.splice(at, 0, { id, priority });
  }
  claim(): Promise<string | null> {
    const next = this.waiting.shift();
    if (next) return Promise.resolve(next.id);
    if (this.closed) return Promise.resolve(null);
    return new Promise((r) => this.claimers.push(r));
  }
  async heartbeat(): Promise<void> {}
  async complete(): Promise<void> {}
  async fail(): Promise<void> {}
  async remove(id: string): Promise<boolean> {
    const i = this.waiting.findIndex((q) => q.id === id);
    if (i < 0) return false;
    this.waiting.splice(i, 1);
    return true;
  }
  async clear(): Promise<string[]> {
    return this.waiting.splice(0).map((q) => q.id);
  }
  async position(id: string): Promise<number | null> {
    const i = this.waiting.findIndex((q) => q.id === id);
    return i < 0 ? null : i;
  }
  async close(): Promise<string[]> {
    this.closed = true;
    for (const c of this.claimers.splice(0)) c(null);
    return this.clear();
  }
}

/**
 * One subscriber's bounded, lossy buffer: when it holds `capacity` steps the oldest step is dropped
 * (and counted); snapshot and final events are never dropped. Delivered through a Repeater, whose
 * `return()` (a client that disconnects) ends the subscription at once, even mid-wait. The Redis bus
 * (`redis-bus.ts`) gives each of its subscribers one too.
 */
export class Subscriber {
  private readonly items: JobEvent[] = [];
  private dropped = 0;
  private ended = false;
  private wake: (() => void) | null = null;
  readonly events: Repeater<JobEvent>;

  constructor(capacity: number, onClose: () => void) {
    this.capacity = capacity;
    this.events = new Repeater<JobEvent>(async (push, stop) => {
      let stopped = false;
      void stop.then(() => {
        stopped = true;
        this.wake?.();
      });
      try {
        while (!stopped) {
          const e = this.items.shift();
          if (e) {
            let out = e;
            if (e.type === "step" && this.dropped) {
              out = { ...e, dropped: this.dropped };
              this.dropped = 0;
            }
            await push(out);
            if (e.type === "finished") break;
            continue;
          }
          if (this.ended) break;
          await new Promise<void>((r) => (this.wake = r));
          this.wake = null;
        }
      } finally {
        this.items.length = 0;
        onClose();
        stop();
      }
    });
  }
  private readonly capacity: number;

  push(e: JobEvent): void {
    if (this.ended) return;
    if (e.type === "step" && this.items.filter((i) => i.type === "step").length >= this.capacity) {
      this.items.splice(this.items.findIndex((i) => i.type === "step"), 1);
      this.dropped++;
    }
    this.items.push(e);
    if (e.type === "finished") this.ended = true;
    this.wake?.();
  }
}

interface LiveState {
  job: JobRecord;
  lastStep: StepFrame | null;
  readonly subscribers: Set<Subscriber>;
}

/** The embedded mode's bus: events fan out to subscribers in this process. */
export class MemoryEventBus implements EventBus {
  private readonly live = new Map<string, LiveState>();

  /** Steps buffered per subscriber before its oldest intermediate one is dropped (default 32). */
  constructor(private readonly subscriberBuffer = 32) {}

  state(job: JobRecord): void {
    const s = this.live.get(job.id);
    if (s) s.job = job;
    else this.live.set(job.id, { job, lastStep: null, subscribers: new Set() });
  }
  step(frame: StepFrame): void {
    const s = this.live.get(frame.jobId);
    if (!s) return;
    s.lastStep = frame;
    for (const sub of s.subscribers) sub.push({ type: "step", ...frame });
  }
  finished(job: JobRecord): void {
    const s = this.live.get(job.id);
    if (!s) return;
    this.live.delete(job.id);
    for (const sub of s.subscribers) sub.push({ type: "finished", job });
  }
  subscribe(jobId: string): AsyncIterable<JobEvent> | null {
    const s = this.live.get(jobId);
    if (!s) return null;
    const sub: Subscriber = new Subscriber(Math.max(1, this.subscriberBuffer), () => s.subscribers.delete(sub));
    sub.push({ type: "snapshot", job: s.job, lastStep: s.lastStep });
    s.subscribers.add(sub);
    return sub.events;
  }
  latest(jobId: string): { job: JobRecord; lastStep: StepFrame | null } | null {
    const s = this.live.get(jobId);
    return s ? { job: s.job, lastStep: s.lastStep } : null;
  }
  async close(): Promise<void> {
    this.live.clear();
  }
}
