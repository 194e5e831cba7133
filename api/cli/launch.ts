/**
 * `bun api/cli/launch.ts NAME [ARGS…]` — what `bun run generate` runs: the CLI `api/cli/NAME.ts`
 * from its bytecode bundle in dist/cli/ (api/cli/build-cli.ts) when every file the bundle was built
 * from is unchanged (size and modification time) and this is the Bun that built it; from its source
 * otherwise. Both run the same `main(argv)`; the bundle only starts sooner (README, Performance).
 * After editing the source, `bun run build:cli` brings the fast path back.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { runMain } from "./run-main.ts";
import { CLI_BUNDLE_FORMAT, type SourcesStamp } from "./build-cli.ts";

const root = join(import.meta.dir, "..", "..");

/** The bundle of CLI `name` in `dir` if it matches its sources under `base` now; undefined (never throws) if not. */
export function freshBundle(name: string, dir = join(root, "dist/cli"), base = root): string | undefined {
  try {
    const stamp = JSON.parse(readFileSync(join(dir, `${name}.sources.json`), "utf8")) as SourcesStamp;
    if (stamp.format !== CLI_BUNDLE_FORMAT || stamp.bun !== Bun.version || stamp.root !== base || !Array.isArray(stamp.inputs) || !stamp.inputs.length) return undefined;
    for (const [file, size, mtimeMs] of stamp.inputs) {
      const s = statSync(join(base, file), { throwIfNoEntry: false });
      if (!s || s.size !== size || s.mtimeMs !== mtimeMs) return undefined;
    }
    const bundle = join(dir, `${name}.js`);
    statSync(`${bundle}.jsc`); // the bytecode too: without it the bundle would still run, only slower
    return bundle;
  } catch {
    return undefined;
  }
}

if (import.meta.main) {
  const name = process.argv[2];
  if (!name || !/^[a-z][a-z0-9-]*$/.test(name)) {
    console.error("usage: bun api/cli/launch.ts NAME [ARGS…] (NAME: a CLI in api/cli/, e.g. generate)");
    process.exit(2);
  }
  process.argv.splice(2, 1); // the CLI sees its own arguments only
  const bundle = freshBundle(name);
  let cli: { main?: unknown } | undefined;
  try {
    cli = bundle ? (require(bundle) as { main?: unknown }) : undefined;
  } catch {
    cli = undefined; // being rebuilt this moment, or unreadable: the source is the same CLI
  }
  if (!cli && !existsSync(join(import.meta.dir, `${name}.ts`))) {
    console.error(`launch: no CLI api/cli/${name}.ts`);
    process.exit(2);
  }
  cli ??= (await import(`./${name}.ts`)) as { main?: unknown }; // its own errors (a syntax error) are its to report
  if (typeof cli.main !== "function") {
    console.error(`launch: api/cli/${name}.ts is not a CLI (it exports no main(argv))`);
    process.exit(2);
  }
  runMain(name, cli.main as (argv: string[]) => Promise<number>);
}
