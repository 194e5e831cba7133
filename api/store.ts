/**
 * Job records in SQLite (bun:sqlite) and finished images as PNG files in a folder, so a restart
 * loses no finished job. The store knows nothing about GraphQL or the queue.
 *
 * A job is finished with all its images or not finished with none: images are written to temporary
 * names, fsynced and renamed, and only then is the record committed; at start, images that no
 * finished record claims (a crash between the two) and temporary files are swept away.
 */
import { Database } from "bun:sqlite";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { open, readFile, rename } from "node:fs/promises";
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
  /** Machine-readable reason for FAILED and CANCELLED jobs (RUN_FAILED, INTERRUPTED, CANCELLED). */
  errorCode: string | null;
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
  error_code: string | null;
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
    errorCode: r.error_code,
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
export const INTERRUPTED_CODE = "INTERRUPTED";

/** Set DIFFGRAPH_FAULT=after-images to die by SIGKILL between writing a job's images and committing its record (crash tests). */
const FAULT = process.env.DIFFGRAPH_FAULT;

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
    const columns = (this.db.query("PRAGMA table_info(jobs)").all() as { name: string }[]).map((c) => c.name);
    if (!columns.includes("error_code")) this.db.exec("ALTER TABLE jobs ADD COLUMN error_code TEXT");
  }

  /**
   * Remove images no finished record claims and temporary files (a crash between writing a job's
   * images and committing its record leaves them). Call after `failInterrupted`. Returns how many.
   */
  sweepOrphans(): number {
    const claimed = new Set<string>();
    for (const r of this.db.query("SELECT id, image_count FROM jobs WHERE status = 'SUCCEEDED' AND image_count > 0").all() as { id: string; image_count: number }[]) {
      for (let i = 0; i < r.image_count; i++) claimed.add(`${r.id}-${i}.png`);
    }
    let n = 0;
    for (const f of readdirSync(this.imageDir)) {
      if (claimed.has(f)) continue;
      rmSync(join(this.imageDir, f), { force: true });
      n++;
    }
    return n;
  }

  /** Jobs left QUEUED or RUNNING by a previous process are failed with a reason; returns how many. */
  failInterrupted(now = Date.now()): number {
    return this.db
      .query("UPDATE jobs SET status = 'FAILED', error = $error, error_code = $code, finished_at = $now WHERE status IN ('QUEUED', 'RUNNING')")
      .run({ error: INTERRUPTED_REASON, code: INTERRUPTED_CODE, now }).changes;
  }

  insert(job: Omit<JobRecord, "seq">): JobRecord {
    const row = this.db
      .query(
        `INSERT INTO jobs (id, status, pipeline, params, priority, created_at, started_at, finished_at, error, error_code, step, total_steps, metrics, image_count)
         VALUES ($id, $status, $pipeline, $params, $priority, $createdAt, $startedAt, $finishedAt, $error, $errorCode, $step, $totalSteps, $metrics, $imageCount)
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
        errorCode: job.errorCode,
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
        `UPDATE jobs SET status = $status, started_at = $startedAt, finished_at = $finishedAt, error = $error, error_code = $errorCode,
         step = $step, total_steps = $totalSteps, metrics = $metrics, image_count = $imageCount WHERE id = $id`,
      )
      .run({
        id: job.id,
        status: job.status,
        startedAt: job.startedAt,
        finishedAt: job.finishedAt,
        error: job.error,
        errorCode: job.errorCode,
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

  /**
   * Write a job's images durably (temporary file, fsync, rename, fsync of the folder). Commit the
   * record only after this resolves; until then a crash leaves files `sweepOrphans` removes.
   */
  async writeImages(jobId: string, pngs: readonly Uint8Array[]): Promise<void> {
    await Promise.all(
      pngs.map(async (png, i) => {
        const path = this.imagePath(`${jobId}-${i}`);
        const tmp = `${path}.tmp`;
        const fh = await open(tmp, "w");
        try {
          await fh.writeFile(png);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, path);
      }),
    );
    const dir = await open(this.imageDir, "r");
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    if (FAULT === "after-images") process.kill(process.pid, "SIGKILL");
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
