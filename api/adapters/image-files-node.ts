/**
 * Image files in a folder through `node:fs` (Bun, Deno and Node all provide it): each write goes to
 * a temporary name, is fsynced and renamed, so a crash leaves the whole file or a `.tmp` that the
 * store's `recover` removes.
 */
import { mkdirSync, readdirSync } from "node:fs";
import { open, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { ImageFiles } from "./job-images.ts";

export function imageFiles(dir: string): ImageFiles {
  mkdirSync(dir, { recursive: true });
  return {
    async write(name, bytes) {
      const path = join(dir, name);
      const tmp = `${path}.tmp`;
      const fh = await open(tmp, "w");
      try {
        await fh.writeFile(bytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    },
    async flush() {
      const d = await open(dir, "r");
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    },
    async read(name) {
      try {
        return new Uint8Array(await readFile(join(dir, name)));
      } catch (err) {
        if ((err as { code?: string }).code === "ENOENT") return null;
        throw err;
      }
    },
    async list() {
      return readdirSync(dir);
    },
    async remove(name) {
      await rm(join(dir, name), { force: true });
    },
  };
}

/** The crash-test fault point: with DIFFGRAPH_FAULT=after-images the process dies by SIGKILL there. */
export function envFaultHook(): (point: string) => void {
  const fault = process.env.DIFFGRAPH_FAULT;
  return (point) => {
    if (fault === point) process.kill(process.pid, "SIGKILL");
  };
}
