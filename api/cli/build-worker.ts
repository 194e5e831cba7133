/**
 * `bun run build:worker`: dist/worker/ — worker.js (api/web/worker.ts, one ES module), config.capnp
 * (socket "http"; sharp is left out: api/image.ts falls back to core/png.ts without it), onnxruntime-web's WASM (declared as a wasm module, so workerd compiles it at
 * load) and the bundled pipelines and model folders under files/ (data bindings).
 *
 *   workerd serve dist/worker/config.capnp --socket-addr http=127.0.0.1:8787
 */
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("../..", import.meta.url).pathname;
const out = join(root, "dist/worker");
/** Pipelines the worker bundles; the first is the default. A missing one is skipped (emoji-64-fp16 is made by its recipe). */
const PIPELINES = ["emoji-64-fp16", "emoji-64"];
/** Files of a model folder a generation never reads (eval models, docs, training data). */
const SKIP = /(^|\/)(README\.md|samples\.png|split\.json|metrics\.json|eval\/.*)$/;

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

const capnpString = (s: string) => JSON.stringify(s);

export async function buildWorker(): Promise<{ out: string; bundleBytes: number; filesBytes: number; wasmBytes: number; pipelines: string[] }> {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(join(out, "files"), { recursive: true });
  const r = await Bun.build({ entrypoints: [join(root, "api/web/worker.ts")], outdir: out, target: "browser", format: "esm", minify: true, naming: "worker.js", external: ["sharp"] });
  if (!r.success) throw new AggregateError(r.logs, `build:worker failed: ${r.logs.map(String).join("\n")}`);
  cpSync(join(root, "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm"), join(out, "ort-wasm-simd-threaded.wasm"));

  const pipelines = PIPELINES.filter((p) => statSync(join(root, "pipelines", `${p}.json`), { throwIfNoEntry: false }));
  const files: Record<string, string> = {};
  const bindings: string[] = [];
  const add = (path: string, abs: string) => {
    const name = `F${bindings.length}`;
    cpSync(abs, join(out, "files", path));
    files[path] = name;
    bindings.push(`(name = ${capnpString(name)}, data = embed ${capnpString(`files/${path}`)})`);
  };
  let filesBytes = 0;
  for (const p of pipelines) {
    const path = `pipelines/${p}.json`;
    add(path, join(root, path));
    const doc = JSON.parse(readFileSync(join(root, path), "utf8")) as { model: string };
    const modelDir = join(root, "pipelines", doc.model);
    for (const f of walk(modelDir)) {
      const rel = relative(modelDir, f);
      if (SKIP.test(rel)) continue;
      const path = relative(root, f);
      if (files[path]) continue;
      add(path, f);
      filesBytes += statSync(f).size;
    }
  }
  const config = `# Written by api/cli/build-worker.ts (bun run build:worker).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "diffgraph", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "diffgraph")],
);

const worker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "ort-wasm-simd-threaded.wasm", wasm = embed "ort-wasm-simd-threaded.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  compatibilityFlags = ["nodejs_compat"],
  bindings = [
    (name = "FILES", json = ${capnpString(JSON.stringify(files))}),
    (name = "PIPELINES", json = ${capnpString(JSON.stringify(pipelines))}),
    (name = "DEFAULT_PIPELINE", text = ${capnpString(pipelines[0] ?? "")}),
    ${bindings.join(",\n    ")}
  ],
);
`;
  writeFileSync(join(out, "config.capnp"), config);
  const bundleBytes = statSync(join(out, "worker.js")).size;
  const wasmBytes = statSync(join(out, "ort-wasm-simd-threaded.wasm")).size;
  writeFileSync(join(out, "build.json"), JSON.stringify({ bundleBytes, wasmBytes, filesBytes, pipelines }, null, 1));
  return { out, bundleBytes, filesBytes, wasmBytes, pipelines };
}

if (import.meta.main) {
  const b = await buildWorker();
  console.log(`build:worker: ${b.out}: worker.js ${(b.bundleBytes / 1e6).toFixed(2)} MB, ort wasm ${(b.wasmBytes / 1e6).toFixed(2)} MB, model files ${(b.filesBytes / 1e6).toFixed(2)} MB (${b.pipelines.join(", ")})`);
}
