/**
 * Job records in SQLite (bun:sqlite) and finished images as PNG files in a folder, so a restart
 * loses no finished job. The store knows nothing about GraphQL or the queue.
 */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const JOB_STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const FINISHED: ReadonlySet<JobStatus> = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

/** What a client asked for, after validation and defaults (the img2img source is not persisted). */
export interface JobParams {
  prompt: string;
  negativePrompt: string;
  steps: number;
  guidanceScale: number;
  seed: number;
  batchSize: number;
  height: number;
  width: number;
  strength: number;
  scheduler: string | null;
  img2img: boolean;
  previewEvery: number;
}

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
  /** Denoising steps done / planned (planned is known once the scheduler has its timesteps). */
  step: number;
  totalSteps: number | null;
  metrics: Record<string, number>;
  /** Number of final images (image i has id `${id}-${i}`). */
  imageCount: number;
}

interface Row {
  seq: number;
  id: string;
  status: string;
  pipeline: string;
  params: string;
  priority: number;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  error: string | null;
  step: number;
  total_steps: number | null;
  metrics: string;
  image_count: number;
}

function fromRow(r: Row): JobRecord {
  return {
    seq: r.seq,
    id: r.id,
    status: r.status as JobStatus,
    pipeline: r.pipeline,
    params: JSON.parse(r.params),
    priority: r.priority,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    error: r.error,
    step: r.step,
    totalSteps: r.total_steps,
    metrics: JSON.parse(r.metrics),
    imageCount: r.image_count,
  };
}

export interface JobPage {
  jobs: JobRecord[];
  hasNextPage: boolean;
  totalCount: number;
}

export const INTERRUPTED_REASON = "interrupted: the server stopped before this job finished";

export class JobStore {
  readonly db: Database;
  readonly imageDir: string;

  /** `dir` holds `jobs.sqlite` and `images/`. */
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.imageDir = join(dir, "images");
    mkdirSync(this.imageDir, { recursive: true });
    this.db = new Database(join(dir, "jobs.sqlite"), { create: true, strict: true });
    this.db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    this.db.exec(`CREATE TABLE IF NOT EXISTS jobs (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      status TEXT NOT NULL,
      pipeline TEXT NOT NULL,
      params TEXT NOT NULL,
      priority INTEGER NOT NULL DEFAULT 0,
      created_at REAL NOT NULL,
      started_at REAL,
      finished_at REAL,
      error TEXT,
      step INTEGER NOT NULL DEFAULT 0,
      total_steps INTEGER,
      metrics TEXT NOT NULL DEFAULT '{}',
      image_count INTEGER NOT NULL DEFAULT 0
    ); CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, seq);`);
  }

  /** Jobs left QUEUED or RUNNING by a previous process are failed with a reason; returns how many. */
  failInterrupted(now = Date.now()): number {
    return this.db
      .query("UPDATE jobs SET status = 'FAILED', error = $error, finished_at = $now WHERE status IN ('QUEUED', 'RUNNING')")
      .run({ error: INTERRUPTED_REASON, now }).changes;
  }

  insert(job: Omit<JobRecord, "seq">): JobRecord {
    const row = this.db
      .query(
        `INSERT INTO jobs (id, status, pipeline, params, priority, created_at, started_at, finished_at, error, step, total_steps, metrics, image_count)
         VALUES ($id, $status, $pipeline, $params, $priority, $createdAt, $startedAt, $finishedAt, $error, $step, $totalSteps, $metrics, $imageCount)
         RETURNING seq`,
      )
      .get({
        id: job.id,
        status: job.status,
        pipeline: job.pipeline,
        params: JSON.stringify(job.params),
        priority: job.priority,
        createdAt: job.createdAt,
        startedAt: job.startedAt,
        finishedAt: job.finishedAt,
        error: job.error,
        step: job.step,
        totalSteps: job.totalSteps,
        metrics: JSON.stringify(job.metrics),
        imageCount: job.imageCount,
      }) as { seq: number };
    return { ...job, seq: row.seq };
  }

  /** Persist the mutable fields of a job (status changes, not every step). */
  update(job: JobRecord): void {
    this.db
      .query(
        `UPDATE jobs SET status = $status, started_at = $startedAt, finished_at = $finishedAt, error = $error,
         step = $step, total_steps = $totalSteps, metrics = $metrics, image_count = $imageCount WHERE id = $id`,
      )
      .run({
        id: job.id,
        status: job.status,
        startedAt: job.startedAt,
        finishedAt: job.finishedAt,
        error: job.error,
        step: job.step,
        totalSteps: job.totalSteps,
        metrics: JSON.stringify(job.metrics),
        imageCount: job.imageCount,
      });
  }

  get(id: string): JobRecord | null {
    const r = this.db.query("SELECT * FROM jobs WHERE id = $id").get({ id }) as Row | null;
    return r ? fromRow(r) : null;
  }

  /** Newest first; `afterSeq` continues after a cursor. */
  page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): JobPage {
    const where: string[] = [];
    const params: Record<string, string | number> = {};
    if (status && status.length) {
      where.push(`status IN (${status.map((_, i) => `$s${i}`).join(", ")})`);
      status.forEach((s, i) => (params[`s${i}`] = s));
    }
    const filter = where.length ? `WHERE ${where.join(" AND ")}` : "";
    const totalCount = (this.db.query(`SELECT COUNT(*) AS n FROM jobs ${filter}`).get(params) as { n: number }).n;
    if (afterSeq !== null) {
      where.push("seq < $after");
      params.after = afterSeq;
    }
    params.limit = first + 1;
    const rows = this.db
      .query(`SELECT * FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq DESC LIMIT $limit`)
      .all(params) as Row[];
    return { jobs: rows.slice(0, first).map(fromRow), hasNextPage: rows.length > first, totalCount };
  }

  imagePath(imageId: string): string {
    return join(this.imageDir, `${imageId}.png`);
  }

  async writeImage(imageId: string, png: Uint8Array): Promise<void> {
    await writeFile(this.imagePath(imageId), png);
  }

  async readImage(imageId: string): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await readFile(this.imagePath(imageId)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  close(): void {
    this.db.close();
  }
}
