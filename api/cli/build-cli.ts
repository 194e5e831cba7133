/**
 * `bun run build:cli` (also run by `npm install`, as postinstall): the `generate` CLI as one bundle
 * compiled to Bun bytecode, dist/cli/generate.js + generate.js.jsc, with
 * dist/cli/generate.sources.json naming every file it was built from (size and modification time)
 * and the Bun that built it. `bun run generate` runs it through api/cli/launch.ts while those files
 * are unchanged, and the source otherwise.
 *
 * Why: a cold CLI spends most of its imports parsing and compiling ~110 modules (zod alone ≈ 17 ms);
 * the bytecode bundle skips both. Measured, 12 interleaved pairs of cold `generate` runs, launcher
 * against source: imports −36.0 ms, wall −39.7 ms (README, Performance). onnxruntime-node,
 * onnxruntime-web and sharp stay outside the bundle (native addons, WASM files found beside their
 * packages).
 *
 * Besides the bundle's inputs, the stamp covers the files that decide how imports resolve and which
 * package versions are installed (package.json, tsconfig.json, the lockfiles): a dependency updated
 * in place (npm may keep sizes and old mtimes) changes its lockfile. A file modified while the build
 * ran (its mtime at or after the build's start) fails the build rather than stamping old code as new.
 */
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const root = join(import.meta.dir, "..", "..");
/** Files outside the bundle's inputs that change what it would be: resolution and installed versions. */
const ALSO_STAMPED = ["package.json", "tsconfig.json", "bunfig.toml", "package-lock.json", "bun.lock", "bun.lockb"];
/** The CLIs that are bundled: `api/cli/<name>.ts`, each exporting `main(argv)`. */
export const BUNDLED_CLIS = ["generate"] as const;
export const CLI_BUNDLE_FORMAT = "diffgraph-cli-bundle/2";

export interface SourcesStamp {
  readonly format: typeof CLI_BUNDLE_FORMAT;
  /** The Bun that compiled the bytecode (another Bun cannot use it). */
  readonly bun: string;
  /**
   * The repository's absolute path when it was built: Bun writes each bundled module's
   * `import.meta.url` as its source file's URL (the adapter finds its worker script by it), so a tree
   * copied or moved elsewhere runs its source until the bundle is rebuilt there.
   */
  readonly root: string;
  /** [path relative to the repository root, size, mtimeMs] of every input of the bundle. */
  readonly inputs: readonly (readonly [string, number, number])[];
}

export async function buildCli(name: (typeof BUNDLED_CLIS)[number], out = join(root, "dist/cli")): Promise<{ bundle: string; inputs: number; bytes: number }> {
  mkdirSync(out, { recursive: true });
  // The stamp first: a launcher never pairs an old stamp with a half-written bundle.
  for (const f of [`${name}.sources.json`, `${name}.js`, `${name}.js.jsc`]) rmSync(join(out, f), { force: true });
  const started = Date.now();
  const r = await Bun.build({
    entrypoints: [join(root, `api/cli/${name}.ts`)],
    outdir: out,
    target: "bun",
    format: "cjs", // Bun's bytecode needs CommonJS output
    bytecode: true,
    external: ["onnxruntime-node", "onnxruntime-web", "sharp"],
    naming: "[name].[ext]",
    metafile: true,
  });
  if (!r.success) throw new AggregateError(r.logs, `build:cli ${name} failed: ${r.logs.map(String).join("\n")}`);
  // Metafile paths are relative to the working directory; the stamp keeps them relative to the root.
  const bundled = Object.keys(r.metafile?.inputs ?? {}).map((f) => relative(root, resolve(f)));
  if (!bundled.length) throw new Error("build:cli: Bun.build returned no metafile inputs");
  const inputs = [...new Set([...bundled, ...ALSO_STAMPED.filter((f) => existsSync(join(root, f)))])].sort();
  const stamp: SourcesStamp = {
    format: CLI_BUNDLE_FORMAT,
    bun: Bun.version,
    root,
    inputs: inputs.map((f) => {
      const s = statSync(join(root, f));
      if (s.mtimeMs >= started) throw new Error(`build:cli: ${f} changed while the bundle was built; run bun run build:cli again`);
      return [f, s.size, s.mtimeMs] as const;
    }),
  };
  // The stamp last: a bundle without its stamp is never run.
  writeFileSync(join(out, `${name}.sources.json`), JSON.stringify(stamp));
  const bundle = join(out, `${name}.js`);
  return { bundle, inputs: inputs.length, bytes: statSync(bundle).size + statSync(`${bundle}.jsc`).size };
}

if (import.meta.main) {
  for (const name of BUNDLED_CLIS) {
    const t0 = performance.now();
    const { bundle, inputs, bytes } = await buildCli(name);
    console.log(`build:cli: ${bundle} (${(bytes / 1e6).toFixed(2)} MB with its bytecode, ${inputs} source files) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
}
