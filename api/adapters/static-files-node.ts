/** Files of a folder for the app's static routes (`/local`, the web build in dist/web), read through node:fs (Bun, Deno, Node). */
import { readFile } from "node:fs/promises";
import { join, normalize } from "node:path";

export function staticFiles(dir: string): (path: string) => Promise<Uint8Array | undefined> {
  return async (path) => {
    const rel = normalize(path).replace(/^(\.\.(\/|$))+/, "");
    if (rel.startsWith("/") || rel.split("/").includes("..")) return undefined;
    try {
      return new Uint8Array(await readFile(join(dir, rel)));
    } catch {
      return undefined;
    }
  };
}
