/**
 * `EventBus` across processes on Redis pub/sub (ioredis): a worker publishes a job's steps and its
 * final event on `<p>:events:<id>`; every API node subscribes to the channels of the jobs its
 * clients watch (one subscriber connection per node, one channel per watched job).
 *
 * The latest state of a job lives in the hash `<p>:live:<id>` (`job`: the record, `step`: the last
 * frame, `done` once finished), so a subscriber on any node, or a client that reconnects to another
 * node after one died, starts from it. Preview PNGs are kept in `<p>:frame:<imageId>` with a TTL,
 * so any node serves `/images/<id>.png` and `dataUrl` for a frame another process encoded. Each
 * subscriber gets the same bounded, lossy buffer as the embedded bus (`Subscriber` in memory.ts).
 *
 * Redis pub/sub does not keep messages for a connection that is down: when the subscriber
 * connection comes back (Redis restarted), each watched job is read again from its live hash, and
 * one that finished meanwhile gets its final event from there.
 *
 * Cancel requests: `<p>:cancel:<id>` (kept an hour, for a worker that claims the job later) and a
 * message on `<p>:cancel`, which every process hears.
 */
import type { Redis } from "ioredis";
import { base64, fromBase64, pngSize } from "../image.ts";
import type { EventBus, JobEvent, JobRecord, StepFrame, StoredImage } from "../ports.ts";
import { Subscriber } from "./memory.ts";

export interface RedisEventBusOptions {
  /** Key and channel namespace (default "diffgraph"). */
  readonly prefix?: string;
  /** Steps buffered per subscriber before its oldest is dropped (default 32). */
  readonly subscriberBuffer?: number;
  /** Seconds preview PNGs stay readable (default 600). */
  readonly frameTtlSeconds?: number;
  /** Seconds a job's live state outlives its last change (default one day; a finished job's: 60 s). */
  readonly liveTtlSeconds?: number;
  readonly log?: (message: string) => void;
}

type Wire = { type: "step"; frame: WireFrame } | { type: "finished"; job: JobRecord };
/** `run`: the run's start time, which tells a re-delivered job's restarted steps from the first run's. */
type WireFrame = Omit<StepFrame, "previews"> & { run: number | null; previews: { id: string; width: number; height: number; png: string }[] };

interface Watch {
  readonly jobId: string;
  readonly sub: Subscriber;
  /** Messages that came before the snapshot was read; replayed after it. */
  pending: Wire[] | null;
  /**
   * The snapshot's last step: a message on the subscriber connection can arrive after the state was
   * read on the other, and is then in the snapshot already.
   */
  seen: { run: number | null; step: number } | null;
}

/**
 * Step clocks cross processes as wall-clock ms (`performance.timeOrigin + now`) and come back in the
 * receiver's `performance.now()` terms, so `stepEndedAt` stays comparable with the receiver's clock.
 */
const toWall = (t: number) => t + performance.timeOrigin;
const fromWall = (t: number) => t - performance.timeOrigin;

export class RedisEventBus implements EventBus {
  private readonly prefix: string;
  private readonly capacity: number;
  private readonly frameTtl: number;
  private readonly liveTtl: number;
  private readonly log: (m: string) => void;
  private readonly watches = new Map<string, Set<Watch>>();
  /** Start time of the run of each job this process publishes steps of. */
  private readonly runs = new Map<string, number | null>();
  private readonly cancelListeners: ((id: string) => void)[] = [];
  private cancelSubscribed = false;
  private connectedOnce = false;

  /**
   * @param pub connection for commands and PUBLISH
   * @param sub connection in subscriber mode (both are owned and closed by `close`)
   */
  constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    options: RedisEventBusOptions = {},
  ) {
    this.prefix = options.prefix ?? "diffgraph";
    this.capacity = Math.max(1, options.subscriberBuffer ?? 32);
    this.frameTtl = options.frameTtlSeconds ?? 600;
    this.liveTtl = options.liveTtlSeconds ?? 86_400;
    this.log = options.log ?? (() => {});
    sub.on("message", (channel: string, message: string) => this.onMessage(channel, message));
    sub.on("ready", () => {
      if (this.connectedOnce) void this.resync();
      this.connectedOnce = true;
    });
  }

  private key = (k: string) => `${this.prefix}:${k}`;
  private channel = (jobId: string) => this.key(`events:${jobId}`);

  /** Never rejects (the job manager does not await it on every step): a failed write is logged. */
  async state(job: JobRecord): Promise<void> {
    this.runs.set(job.id, job.startedAt);
    const live = this.key(`live:${job.id}`);
    await this.pub
      .multi()
      .hset(live, "job", JSON.stringify(job))
      .expire(live, this.liveTtl)
      .exec()
      .catch((err) => this.log(`bus: state of job ${job.id} not written: ${(err as Error).message}`));
  }

  step(frame: StepFrame): void {
    const wire: WireFrame = { ...frame, run: this.runs.get(frame.jobId) ?? null, stepEndedAt: toWall(frame.stepEndedAt), previews: frame.previews.map((p) => ({ id: p.id, width: p.width, height: p.height, png: p.png ? base64(p.png) : "" })) };
    const json = JSON.stringify({ type: "step", frame: wire } satisfies Wire);
    const m = this.pub.multi();
    for (const p of wire.previews) if (p.png) m.set(this.key(`frame:${p.id}`), p.png, "EX", this.frameTtl);
    m.hset(this.key(`live:${frame.jobId}`), "step", JSON.stringify(wire)).publish(this.channel(frame.jobId), json);
    m.exec().catch((err) => this.log(`bus: step ${frame.step} of job ${frame.jobId} not published: ${(err as Error).message}`));
  }

  finished(job: JobRecord): void {
    this.runs.delete(job.id);
    const live = this.key(`live:${job.id}`);
    this.pub
      .multi()
      .hset(live, { job: JSON.stringify(job), done: "1" })
      .expire(live, 60)
      .publish(this.channel(job.id), JSON.stringify({ type: "finished", job } satisfies Wire))
      .exec()
      .catch((err) => this.log(`bus: final event of job ${job.id} not published: ${(err as Error).message}`));
  }

  private async readLive(jobId: string): Promise<{ job: JobRecord; lastStep: StepFrame | null; done: boolean } | null> {
    const h = await this.pub.hgetall(this.key(`live:${jobId}`));
    if (!h.job) return null;
    return { job: JSON.parse(h.job), lastStep: h.step ? fromWire(JSON.parse(h.step)) : null, done: h.done === "1" };
  }

  async latest(jobId: string): Promise<{ job: JobRecord; lastStep: StepFrame | null } | null> {
    const l = await this.readLive(jobId);
    return l && !l.done ? { job: l.job, lastStep: l.lastStep } : null;
  }

  async subscribe(jobId: string): Promise<AsyncIterable<JobEvent> | null> {
    const ch = this.channel(jobId);
    let set = this.watches.get(ch);
    const first = !set;
    if (!set) this.watches.set(ch, (set = new Set()));
    const watch: Watch = {
      jobId,
      pending: [],
      seen: null,
      sub: new Subscriber(this.capacity, () => {
        set!.delete(watch);
        if (set!.size === 0 && this.watches.get(ch) === set) {
          this.watches.delete(ch);
          void this.sub.unsubscribe(ch).catch(() => {});
        }
      }),
    };
    set.add(watch);
    // Subscribe before reading the state, so nothing published in between is missed.
    if (first) await this.sub.subscribe(ch);
    const live = await this.readLive(jobId);
    if (!live || live.done) {
      set.delete(watch);
      if (set.size === 0 && this.watches.get(ch) === set) {
        this.watches.delete(ch);
        await this.sub.unsubscribe(ch).catch(() => {});
      }
      return null;
    }
    watch.sub.push({ type: "snapshot", job: live.job, lastStep: live.lastStep });
    const pending = watch.pending!;
    watch.pending = null;
    const last = live.lastStep as (StepFrame & { run?: number | null }) | null;
    if (last) watch.seen = { run: last.run ?? null, step: last.step };
    for (const w of pending) this.deliver(watch, w);
    return watch.sub.events;
  }

  private onMessage(channel: string, message: string): void {
    if (channel === this.key("cancel")) {
      for (const l of this.cancelListeners) l(message);
      return;
    }
    const set = this.watches.get(channel);
    if (!set) return;
    const w = JSON.parse(message) as Wire;
    for (const watch of set) this.deliver(watch, w);
  }

  private deliver(watch: Watch, w: Wire): void {
    if (watch.pending) return void watch.pending.push(w);
    if (w.type === "step" && watch.seen) {
      if (w.frame.run === watch.seen.run && w.frame.step <= watch.seen.step) return;
      watch.seen = null;
    }
    watch.sub.push(w.type === "finished" ? { type: "finished", job: w.job } : { type: "step", ...fromWire(w.frame) });
  }

  /** After the subscriber connection came back: deliver final events published while it was down. */
  private async resync(): Promise<void> {
    for (const set of this.watches.values()) {
      for (const watch of set) {
        try {
          const live = await this.readLive(watch.jobId);
          if (live?.done) this.deliver(watch, { type: "finished", job: live.job });
        } catch (err) {
          this.log(`bus: could not re-read job ${watch.jobId} after reconnecting: ${(err as Error).message}`);
        }
      }
    }
  }

  async previewImage(imageId: string): Promise<StoredImage | null> {
    const b64 = await this.pub.get(this.key(`frame:${imageId}`));
    const png = b64 ? fromBase64(b64) : null;
    if (!png) return null;
    const size = pngSize(png) ?? { width: 0, height: 0 };
    return { id: imageId, ...size, png };
  }

  async requestCancel(jobId: string): Promise<void> {
    await this.pub.multi().set(this.key(`cancel:${jobId}`), "1", "EX", 3600).publish(this.key("cancel"), jobId).exec();
  }

  async cancelRequested(jobId: string): Promise<boolean> {
    return (await this.pub.exists(this.key(`cancel:${jobId}`))) === 1;
  }

  onCancel(listener: (jobId: string) => void): void {
    this.cancelListeners.push(listener);
    if (!this.cancelSubscribed) {
      this.cancelSubscribed = true;
      void this.sub.subscribe(this.key("cancel")).catch((err) => this.log(`bus: cannot hear cancel requests: ${(err as Error).message}`));
    }
  }

  async close(): Promise<void> {
    this.watches.clear();
    await Promise.all([this.pub.quit().catch(() => this.pub.disconnect()), this.sub.quit().catch(() => this.sub.disconnect())]);
  }
}

function fromWire(f: WireFrame): StepFrame {
  return {
    ...f,
    stepEndedAt: fromWall(f.stepEndedAt),
    previews: f.previews.map((p) => ({ id: p.id, width: p.width, height: p.height, ...(p.png ? { png: fromBase64(p.png) ?? undefined } : {}) })),
  };
}
