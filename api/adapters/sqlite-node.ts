/** The SQLite job store on node:sqlite (Deno; Node ≥ 22.5), images in `<dir>/images`. */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import type { JobStore } from "../ports.ts";
import { envFaultHook, imageFiles } from "./image-files-node.ts";
import { SqliteJobStore, type SqlDriver } from "./sqlite-store.ts";

export function openSqliteStore(dir: string): JobStore {
  mkdirSync(dir, { recursive: true });
  const db = new DatabaseSync(join(dir, "jobs.sqlite"));
  const driver: SqlDriver = {
    exec: (sql) => db.exec(sql),
    all: (sql, params = {}) => db.prepare(sql).all(params) as Record<string, unknown>[],
    get: (sql, params = {}) => db.prepare(sql).get(params) as Record<string, unknown> | undefined,
    run: (sql, params = {}) => ({ changes: Number(db.prepare(sql).run(params).changes) }),
    close: () => db.close(),
  };
  return new SqliteJobStore(driver, imageFiles(join(dir, "images")), envFaultHook());
}
