/**
 * `JobStore` on SQLite: the SQL, written once for every driver. A host hands in its driver through
 * `SqlDriver` (`sqlite-bun.ts`: bun:sqlite; `sqlite-node.ts`: node:sqlite, which Deno and Node ≥ 22.5
 * provide) and the folder for images (`image-files-node.ts`). Records live in `jobs.sqlite` (WAL), so
 * another process can read them.
 */
import { JobImages, type FaultHook, type ImageFiles } from "./job-images.ts";
import { INTERRUPTED_CODE, INTERRUPTED_REASON, type JobPage, type JobRecord, type JobStatus, type JobStore, type NewJobRecord } from "../ports.ts";

/** The few statements the store needs, with `$name` parameters bound from an object without the `$`. */
export interface SqlDriver {
  exec(sql: string): void;
  all(sql: string, params?: Record<string, string | number | null>): Record<string, unknown>[];
  get(sql: string, params?: Record<string, string | number | null>): Record<string, unknown> | undefined;
  run(sql: string, params?: Record<string, string | number | null>): { changes: number };
  close(): void;
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

/** A record's mutable fields as statement parameters (what `update` writes). */
function mutable(job: NewJobRecord) {
  return {
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
  };
}

/** Every field of a record as statement parameters (what `insert` writes). */
function bindings(job: NewJobRecord) {
  return { ...mutable(job), pipeline: job.pipeline, params: JSON.stringify(job.params), priority: job.priority, createdAt: job.createdAt };
}


export class SqliteJobStore implements JobStore {
  private readonly images: JobImages;

  constructor(
    private readonly db: SqlDriver,
    files: ImageFiles,
    fault?: FaultHook,
  ) {
    this.images = new JobImages(files, fault);
    db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
    db.exec(`CREATE TABLE IF NOT EXISTS jobs (
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
    const columns = db.all("PRAGMA table_info(jobs)").map((c) => c.name);
    if (!columns.includes("error_code")) db.exec("ALTER TABLE jobs ADD COLUMN error_code TEXT");
  }

  async recover(now = Date.now()): Promise<{ interrupted: number; orphanImages: number }> {
    const interrupted = this.db.run(
      "UPDATE jobs SET status = 'FAILED', error = $error, error_code = $code, finished_at = $now WHERE status IN ('QUEUED', 'RUNNING')",
      { error: INTERRUPTED_REASON, code: INTERRUPTED_CODE, now },
    ).changes;
    const finished = this.db.all("SELECT id, image_count FROM jobs WHERE status = 'SUCCEEDED' AND image_count > 0") as { id: string; image_count: number }[];
    const orphanImages = await this.images.sweep(finished.map((r) => [r.id, r.image_count] as const));
    return { interrupted, orphanImages };
  }

  async insert(job: NewJobRecord): Promise<JobRecord> {
    const row = this.db.get(
      `INSERT INTO jobs (id, status, pipeline, params, priority, created_at, started_at, finished_at, error, error_code, step, total_steps, metrics, image_count)
       VALUES ($id, $status, $pipeline, $params, $priority, $createdAt, $startedAt, $finishedAt, $error, $errorCode, $step, $totalSteps, $metrics, $imageCount)
       RETURNING seq`,
      bindings(job),
    ) as { seq: number };
    return { ...job, seq: row.seq };
  }

  async update(job: JobRecord): Promise<void> {
    this.db.run(
      `UPDATE jobs SET status = $status, started_at = $startedAt, finished_at = $finishedAt, error = $error, error_code = $errorCode,
       step = $step, total_steps = $totalSteps, metrics = $metrics, image_count = $imageCount WHERE id = $id`,
      mutable(job),
    );
  }

  async get(id: string): Promise<JobRecord | null> {
    const r = this.db.get("SELECT * FROM jobs WHERE id = $id", { id }) as Row | undefined;
    return r ? fromRow(r) : null;
  }

  async page(first: number, afterSeq: number | null, status: readonly JobStatus[] | null): Promise<JobPage> {
    const where: string[] = [];
    const params: Record<string, string | number> = {};
    if (status && status.length) {
      where.push(`status IN (${status.map((_, i) => `$s${i}`).join(", ")})`);
      status.forEach((s, i) => (params[`s${i}`] = s));
    }
    const filter = where.length ? `WHERE ${where.join(" AND ")}` : "";
    const totalCount = (this.db.get(`SELECT COUNT(*) AS n FROM jobs ${filter}`, params) as { n: number }).n;
    if (afterSeq !== null) {
      where.push("seq < $after");
      params.after = afterSeq;
    }
    params.limit = first + 1;
    const rows = this.db.all(`SELECT * FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY seq DESC LIMIT $limit`, params) as unknown as Row[];
    return { jobs: rows.slice(0, first).map(fromRow), hasNextPage: rows.length > first, totalCount };
  }

  writeImages(jobId: string, pngs: readonly Uint8Array[]): Promise<void> {
    return this.images.write(jobId, pngs);
  }

  readImage(imageId: string): Promise<Uint8Array | null> {
    return this.images.read(imageId);
  }

  async close(): Promise<void> {
    this.db.close();
  }
}



