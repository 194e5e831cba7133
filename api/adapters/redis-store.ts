/**
 * `JobStore` on Redis (ioredis), for the distributed mode: every API node and worker reads and
 * writes the same records. A record is a hash `<p>:job:<id>` (`json`: the record, `status`, and
 * `final` once a worker has finished it); `<p>:seq` (INCR) numbers records; the sorted sets
 * `<p>:jobs` and `<p>:status:<STATUS>` (score = seq) page newest first for the Relay `jobs`
 * connection. Each change of a record and its set memberships is one MULTI, so a listing never
 * shows a job twice or under two statuses. Durable as Redis is: with AOF on (`appendonly yes`) a
 * restart replays every acknowledged write.
 *
 * Final images are files in a folder every node mounts (`ImageFiles`, e.g. `image-files-node.ts`
 * on a shared path), written before the record commits, as the SQLite store does.
 */
import type { Redis } from "ioredis";
import { INTERRUPTED_CODE, INTERRUPTED_REASON, JOB_STATUSES, type JobPage, type JobRecord, type JobStatus, type JobStore, type NewJobRecord } from "../ports.ts";
import { JobImages, type FaultHook, type ImageFiles } from "./job-images.ts";

export class RedisJobStore implements JobStore {
  /**
   * @param redis a connection this store owns (closed by `close`)
   * @param prefix key namespace, so several deployments (or test runs) can share one Redis
   */
  private readonly images: JobImages;

  constructor(
    private readonly redis: Redis,
    files: ImageFiles,
    private readonly prefix = "diffgraph",
    fault?: FaultHook,
  ) {
    this.images = new JobImages(files, fault);
  }

  private key = (k: string) => `${this.prefix}:${k}`;
  private jobKey = (id: string) => this.key(`job:${id}`);
  private statusKey = (s: JobStatus) => this.key(`status:${s}`);

  async insert(job: NewJobRecord): Promise<JobRecord> {
    if (await this.redis.exists(this.jobKey(job.id))) throw new Error(`job ${job.id} exists`);
    const seq = await this.redis.incr(this.key("seq"));
    const r: JobRecord = { ...job, seq };
    await this.redis
      .multi()
      .hset(this.jobKey(r.id), { json: JSON.stringify(r), status: r.status })
      .zadd(this.key("jobs"), seq, r.id)
      .zadd(this.statusKey(r.status), seq, r.id)
      .exec()
      .then(check);
    return r;
  }

  /** The immutable fields (seq, params, pipeline, priority, createdAt) stay as inserted. */
  private async write(job: JobRecord, guard?: "final"): Promise<boolean> {
    const old = await this.get(job.id);
    if (!old) return false;
    const r: JobRecord = { ...job, seq: old.seq, params: old.params, pipeline: old.pipeline, priority: old.priority, createdAt: old.createdAt };
    const tx = this.redis.multi();
    if (guard) tx.hsetnx(this.jobKey(r.id), "final", String(Date.now()));
    const res = check(await tx.exec());
    if (guard && res[0] !== 1) return false;
    const m = this.redis.multi().hset(this.jobKey(r.id), { json: JSON.stringify(r), status: r.status });
    for (const s of JOB_STATUSES) if (s !== r.status) m.zrem(this.statusKey(s), r.id);
    m.zadd(this.statusKey(r.status), r.seq, r.id);
    check(await m.exec());
    return true;
  }

  async update(job: JobRecord): Promise<void> {
    await this.write(job);
  }

  /** HSETNX on the record's `final` field: the first finisher of a job wins, later ones write nothing. */
  async finishOnce(job: JobRecord): Promise<boolean> {
    return this.write(job, "final");
  }

  async remove(id: string): Promise<boolean> {
    const m = this.redis.multi().del(this.jobKey(id)).zrem(this.key("jobs"), id);
    for (const s of JOB_STATUSES) m.zrem(this.statusKey(s), id);
    const res = check(await m.exec());
    return res[0] === 1;
  }

  async get(id: string): Promise<JobRecord | null> {
    const json = await this.redis.hget(this.jobKey(id), "json");
    return json ? (JSON.parse(json) as JobRecord) : null;
  }

  async page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): Promise<JobPage> {
    const sets = status?.length ? [...new Set(status)].map(this.statusKey) : [this.key("jobs")];
    const max = afterSeq === null ? "+inf" : `(${afterSeq}`;
    // The status sets are disjoint: the newest first+1 of their union are among each set's newest first+1.
    const tops = await Promise.all(sets.map((k) => this.redis.zrevrangebyscore(k, max, "-inf", "WITHSCORES", "LIMIT", 0, first + 1)));
    const merged: { id: string; seq: number }[] = [];
    for (const t of tops) for (let i = 0; i < t.length; i += 2) merged.push({ id: t[i]!, seq: Number(t[i + 1]) });
    merged.sort((a, b) => b.seq - a.seq);
    const ids = merged.slice(0, first + 1).map((m) => m.id);
    const counts = await Promise.all(sets.map((k) => this.redis.zcard(k)));
    const jsons = ids.length ? await this.redis.pipeline(ids.map((id) => ["hget", this.jobKey(id), "json"])).exec().then(check) : [];
    const jobs = (jsons as (string | null)[]).filter((j): j is string => !!j).map((j) => JSON.parse(j) as JobRecord);
    return { jobs: jobs.slice(0, first), hasNextPage: jobs.length > first, totalCount: counts.reduce((a, b) => a + b, 0) };
  }

  writeImages(jobId: string, pngs: readonly Uint8Array[]): Promise<void> {
    return this.images.write(jobId, pngs);
  }

  readImage(imageId: string): Promise<Uint8Array | null> {
    return this.images.read(imageId);
  }

  /**
   * Fail every QUEUED or RUNNING record and remove images no SUCCEEDED record claims. Only for a
   * whole-cluster restart (every worker and API node stopped): while nodes run, their jobs are live.
   */
  async recover(now = Date.now()): Promise<{ interrupted: number; orphanImages: number }> {
    let interrupted = 0;
    for (const s of ["QUEUED", "RUNNING"] as const) {
      for (const id of await this.redis.zrange(this.statusKey(s), "0", "-1")) {
        const r = await this.get(id);
        if (r && (await this.finishOnce({ ...r, status: "FAILED", error: INTERRUPTED_REASON, errorCode: INTERRUPTED_CODE, finishedAt: now }))) interrupted++;
      }
    }
    const finished: (readonly [string, number])[] = [];
    for (const id of await this.redis.zrange(this.statusKey("SUCCEEDED"), "0", "-1")) finished.push([id, (await this.get(id))?.imageCount ?? 0]);
    const orphanImages = await this.images.sweep(finished);
    return { interrupted, orphanImages };
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}

/** The results of a MULTI or pipeline, or the first command error thrown. */
function check(res: [Error | null, unknown][] | null): unknown[] {
  if (!res) throw new Error("redis: transaction aborted");
  for (const [err] of res) if (err) throw err;
  return res.map(([, v]) => v);
}
