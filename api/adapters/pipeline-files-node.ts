/** The pipeline documents in a folder (`*.json`, sorted), listed through node:fs (Bun, Deno, Node). */
import { readdir } from "node:fs/promises";
import { join } from "node:path";

export async function pipelineFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new Error(`pipelines folder ${dir}: ${(err as { code?: string }).code === "ENOENT" ? "not found" : (err as Error).message}`);
  }
  return names.filter((f) => f.endsWith(".json")).sort().map((f) => join(dir, f));
}
