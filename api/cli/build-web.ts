/**
 * `bun run build:web`: dist/web/ — the ES-module bundle of the core and built-in plugins
 * (index.js, from api/web/index.ts), the client-side page (local.html + local.js), onnxruntime-web's
 * `.wasm` files, the pipelines and model folders the page draws with (pipelines/, models/) and
 * models.json (the pipelines with their download sizes).
 * Every file is a static file: any web server can serve the folder.
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;
const out = join(root, "dist/web");
const ortDist = join(root, "node_modules/onnxruntime-web/dist");
/** Pipelines the page offers, the default first; one not made yet (emoji-64-fp16 comes from its recipe) is left out. */
const PAGE_PIPELINES = ["emoji-64-fp16", "emoji-64"];
/** The files a web page's pipeline reads; eval data, samples and the training split stay behind. */
export const MODEL_FILE_SKIP = /(^|\/)(README\.md|samples\.png|split\.json|metrics\.json|eval\/.*)$/;

function folderBytes(dir: string): number {
  return readdirSync(dir, { withFileTypes: true, recursive: true }).reduce((n, e) => (e.isFile() ? n + statSync(join(e.parentPath, e.name)).size : n), 0);
}

export async function buildWeb(): Promise<{ out: string; bundleBytes: number }> {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const r = await Bun.build({
    entrypoints: [join(root, "api/web/index.ts"), join(root, "api/web/local.ts")],
    outdir: out,
    target: "browser",
    format: "esm",
    splitting: true,
    minify: true,
    naming: { entry: "[name].js", chunk: "chunk-[hash].js" },
  });
  if (!r.success) throw new AggregateError(r.logs, `build:web failed: ${r.logs.map(String).join("\n")}`);
  for (const o of r.outputs) {
    const text = await o.text();
    const bad = /(?:import\(|from)\s*["'](onnxruntime-node|sharp|node:[\w/]+)["']/.exec(text);
    if (bad) throw new Error(`build:web: ${o.path} imports ${bad[1]}: a Node or Deno adapter is reachable from the web entry`);
  }
  // With wasmPaths set, onnxruntime-web imports its emscripten glue (.mjs) from there too, not only the .wasm.
  for (const f of ["ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.asyncify.wasm", "ort-wasm-simd-threaded.asyncify.mjs"]) cpSync(join(ortDist, f), join(out, f));
  cpSync(join(root, "api/web/local.html"), join(out, "local.html"));
  mkdirSync(join(out, "pipelines"));
  const pipelines: { name: string; bytes: number; description?: string }[] = [];
  for (const name of PAGE_PIPELINES) {
    const file = join(root, "pipelines", `${name}.json`);
    if (!statSync(file, { throwIfNoEntry: false })) continue;
    cpSync(file, join(out, "pipelines", `${name}.json`));
    const doc = JSON.parse(readFileSync(file, "utf8")) as { model: string; description?: string };
    const src = join(root, "pipelines", doc.model);
    const dst = join(out, "pipelines", doc.model);
    cpSync(src, dst, { recursive: true, filter: (s) => !MODEL_FILE_SKIP.test(s.slice(src.length + 1)) });
    pipelines.push({ name, bytes: folderBytes(dst), ...(doc.description ? { description: doc.description } : {}) });
  }
  writeFileSync(join(out, "models.json"), JSON.stringify({ pipelines }, null, 1));
  const bundleBytes = r.outputs.reduce((n, o) => n + o.size, 0);
  return { out, bundleBytes };
}

if (import.meta.main) {
  const { out: dir, bundleBytes } = await buildWeb();
  console.log(`build:web: ${dir} (JS ${(bundleBytes / 1e6).toFixed(2)} MB)`);
}
