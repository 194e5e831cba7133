/**
 * The edge worker (workerd / Cloudflare Workers module syntax), built by `bun run build:worker`
 * into dist/worker/ with its config.capnp:
 *
 *   GET /generate?prompt=red+heart&seed=7&steps=20&pipeline=emoji-64  →  image/png
 *   GET /generate?…&format=f32                                        →  the image tensor's float32 bytes
 *   GET /pipelines                                                    →  the bundled pipeline names, and the host detected
 *   /graphql                                                          →  the API's read side: plugins, pipelines, schedule
 *
 * The pipeline files and model folders are bundled as data bindings (listed by path in the FILES
 * binding), onnxruntime-web's WASM arrives precompiled (a Wasm module of the worker), and the PNG is encoded in
 * JavaScript. Same pipeline + seed + steps ⇒ the CLI's image (onnxruntime-web WASM vs -node CPU:
 * kernel order only).
 */
import { getOperationAST } from "graphql";
import type { Plugin } from "graphql-yoga";
import { MemoryJobStore } from "../adapters/memory.ts";
import { createApp } from "../app.ts";
import { apiError, ErrorCode } from "../errors.ts";
import { ApiService } from "../service.ts";
import { createWorkerdAdapter } from "../../core/adapters/workerd.ts";
import { createDiffgraphWith, type Diffgraph } from "../../core/diffgraph-core.ts";
import { detectHost } from "../../core/host.ts";
import { ParamsError } from "../../core/params.ts";
import type { Pipeline } from "../../core/pipeline.ts";
import { tensorToPngJs } from "../../core/png.ts";
import { builtinRegistry } from "../../plugins/index.ts";

/** onnxruntime-web's WASM, a Wasm module of the worker (config.capnp): workerd compiles it at load, as it must. */
const ORT_WASM_MODULE = "./ort-wasm-simd-threaded.wasm";

interface Env {
  /** path → name of the data binding holding its bytes */
  readonly FILES: Record<string, string>;
  readonly PIPELINES: string[];
  readonly DEFAULT_PIPELINE: string;
  readonly [binding: string]: unknown;
}

let dg: Promise<Diffgraph> | undefined;
const pipelines = new Map<string, Promise<Pipeline>>();

function diffgraph(env: Env): Promise<Diffgraph> {
  dg ??= (async () => {
    // A specifier in a variable: the bundler leaves it to workerd, which knows the module.
    const spec = ORT_WASM_MODULE;
    const ortWasm = ((await import(spec)) as { default: WebAssembly.Module }).default;
    const files: Record<string, Uint8Array> = {};
    for (const [path, binding] of Object.entries(env.FILES)) files[path] = new Uint8Array(env[binding] as ArrayBuffer);
    const adapter = createWorkerdAdapter({ files, ortWasm });
    return createDiffgraphWith(adapter, { registry: builtinRegistry(), executionProvider: "wasm", log: (m) => console.log(m) });
  })();
  return dg;
}

function pipeline(env: Env, name: string): Promise<Pipeline> {
  let p = pipelines.get(name);
  if (!p) {
    p = diffgraph(env).then((d) => d.openPipeline(`pipelines/${name}.json`));
    p.catch(() => pipelines.delete(name));
    pipelines.set(name, p);
  }
  return p;
}

/** The edge worker answers the API's queries; jobs (mutations, subscriptions) need the server's queue and store. */
function readSideOnly(): Plugin {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const op = getOperationAST(args.document, args.operationName)?.operation;
      if (op && op !== "query") {
        setResultAndStopExecution({ errors: [apiError(ErrorCode.BAD_REQUEST, `this edge worker serves queries only (plugins, pipelines, schedule); a ${op} needs the API server. Draw with GET /generate`)] });
      }
    },
  };
}

let api: Promise<{ fetch(request: Request): Response | Promise<Response> }> | undefined;
function graphqlApp(env: Env) {
  api ??= (async () => {
    const service = await ApiService.create({ diffgraph: await diffgraph(env), store: new MemoryJobStore(), pipelineFiles: env.PIPELINES.map((p) => `pipelines/${p}.json`), defaultPipeline: env.DEFAULT_PIPELINE, log: (m) => console.log(m) });
    return createApp({ service, plugins: [readSideOnly()] }).app;
  })();
  return api;
}

const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

function intParam(params: URLSearchParams, key: string): number | undefined {
  const raw = params.get(key);
  if (raw === null || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${key}: expected an integer, got ${JSON.stringify(raw)}`);
  return n;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/graphql" || url.pathname.startsWith("/graphql/")) return (await graphqlApp(env)).fetch(request);
    if (url.pathname === "/pipelines") return json({ pipelines: env.PIPELINES, defaultPipeline: env.DEFAULT_PIPELINE, host: detectHost() });
    if (url.pathname !== "/generate") return json({ error: "not found: GET /generate?prompt=…&seed=…&steps=…&pipeline=NAME or GET /pipelines" }, 404);
    const q = url.searchParams;
    const prompt = q.get("prompt");
    if (!prompt) return json({ error: "prompt: required (GET /generate?prompt=red+heart)" }, 400);
    const name = q.get("pipeline") ?? env.DEFAULT_PIPELINE;
    if (!env.PIPELINES.includes(name)) return json({ error: `pipeline: unknown pipeline "${name}"; this worker bundles ${env.PIPELINES.join(", ")}` }, 400);
    let seed: number | undefined, steps: number | undefined;
    try {
      seed = intParam(q, "seed");
      steps = intParam(q, "steps");
    } catch (err) {
      return json({ error: (err as Error).message }, 400);
    }
    try {
      const p = await pipeline(env, name);
      const t0 = performance.now();
      const r = await p.run({ prompt, ...(seed !== undefined ? { seed } : {}), ...(steps !== undefined ? { steps } : {}) });
      const ms = performance.now() - t0;
      const headers = { "x-diffgraph-ms": ms.toFixed(1), "x-diffgraph-dims": r.images.dims.join(",") };
      // format=f32: the image tensor's float32 bytes, for comparing runtimes below 8-bit rounding.
      if (q.get("format") === "f32") return new Response(new Uint8Array(r.images.data.buffer, r.images.data.byteOffset, r.images.data.byteLength).slice(), { headers: { ...headers, "content-type": "application/octet-stream" } });
      return new Response((await tensorToPngJs(r.images, 0)) as Uint8Array<ArrayBuffer>, { headers: { ...headers, "content-type": "image/png" } });
    } catch (err) {
      const e = err as Error;
      const status = e instanceof ParamsError ? 400 : 500;
      return json({ error: e.message }, status);
    }
  },
};
