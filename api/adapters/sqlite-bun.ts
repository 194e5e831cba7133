/** The SQLite job store on Bun: bun:sqlite as the driver, images in `<dir>/images`. */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { JobStore } from "../ports.ts";
import { envFaultHook, imageFiles } from "./image-files-node.ts";
import { SqliteJobStore, type SqlDriver } from "./sqlite-store.ts";

export function openSqliteStore(dir: string): JobStore {
  mkdirSync(dir, { recursive: true });
  const db = new Database(join(dir, "jobs.sqlite"), { create: true, strict: true });
  const driver: SqlDriver = {
    exec: (sql) => db.exec(sql),
    all: (sql, params = {}) => db.query(sql).all(params) as Record<string, unknown>[],
    get: (sql, params = {}) => (db.query(sql).get(params) as Record<string, unknown> | null) ?? undefined,
    run: (sql, params = {}) => ({ changes: db.query(sql).run(params).changes }),
    close: () => db.close(),
  };
  return new SqliteJobStore(driver, imageFiles(join(dir, "images")), envFaultHook());
}
