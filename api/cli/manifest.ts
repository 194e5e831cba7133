/**
 * `bun run manifest DIR [DIR…] [--check]` — write DIR/manifest.sha256.json: every file of the model
 * folder with its size and SHA-256. Pipelines opened from a folder that has one check each file they
 * read against it (core/manifest.ts). `--check` verifies every listed file instead of writing, and
 * names files that changed, went missing or were added since.
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import { buildManifest, MANIFEST_FILE, manifestMismatch, readManifest } from "../../core/manifest.ts";
import { fileSource } from "../../core/adapters/node.ts";
import { runMain } from "./run-main.ts";

const HELP = `diffgraph manifest — SHA-256 manifest of a model folder

  bun run manifest models/emoji-64 [more folders…]   write FOLDER/${MANIFEST_FILE}
  bun run manifest --check models/emoji-64           verify every file against it`;

async function walk(dir: string, root = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const full = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(full, root)));
    else if (e.isFile()) out.push(relative(root, full).split("\\").join("/"));
  }
  return out.filter((f) => f !== MANIFEST_FILE).sort();
}

async function write(dir: string): Promise<string> {
  const files = await walk(dir);
  const started = performance.now();
  const entries: [string, Uint8Array][] = [];
  for (const f of files) entries.push([f, new Uint8Array(await readFile(join(dir, f)))]);
  const manifest = await buildManifest(entries);
  await writeFile(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  const bytes = entries.reduce((s, [, b]) => s + b.length, 0);
  return `wrote ${join(dir, MANIFEST_FILE)}: ${files.length} files, ${(bytes / 1e6).toFixed(1)} MB, ${(performance.now() - started).toFixed(0)} ms`;
}

async function check(dir: string): Promise<string[]> {
  const source = fileSource(dir);
  const manifest = await readManifest(source);
  if (!manifest) throw new Error(`${dir}: no ${MANIFEST_FILE} (write one with \`bun run manifest ${dir}\`)`);
  const problems: string[] = [];
  for (const f of Object.keys(manifest.files)) {
    if (!(await source.exists(f))) {
      problems.push(`${source.root}/${f}: listed in ${MANIFEST_FILE} but missing`);
      continue;
    }
    const why = await manifestMismatch(manifest, f, await source.read(f));
    if (why) problems.push(`${source.root}/${f}: ${why}`);
  }
  for (const f of await walk(dir)) if (!manifest.files[f]) problems.push(`${source.root}/${f}: not listed in ${MANIFEST_FILE}`);
  return problems;
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { check: { type: "boolean" }, help: { type: "boolean", short: "h" } }, allowPositionals: true, strict: true });
  if (values.help || positionals.length === 0) {
    console.log(HELP);
    return values.help ? 0 : 2;
  }
  let bad = 0;
  for (const dir of positionals) {
    if (!values.check) {
      console.log(await write(dir));
      continue;
    }
    const problems = await check(dir);
    for (const p of problems) console.log(p);
    if (problems.length === 0) console.log(`${dir}: every file matches ${MANIFEST_FILE}`);
    bad += problems.length;
  }
  if (bad > 0) throw new Error(`${bad} file${bad === 1 ? " does" : "s do"} not match the manifest (listed above)`);
  return 0;
}

if (import.meta.main) runMain("manifest", main);
