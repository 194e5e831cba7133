/**
 * `generate --timings`: where a cold CLI process spends its wall time. Wraps the runtime adapter
 * (nothing in core/ knows): model files read are remembered by their bytes, so each ONNX session
 * created from them is timed under its file's name, and so is every `session.run` of it. Prints
 * one JSON line at exit; `bun run bench` spawns the CLI with it and tabulates the phases.
 *
 * Times are `performance.now()` of this process (ms since `performance.timeOrigin`, which is in the
 * JSON so that the spawning process can place them on its own clock).
 */
import type { RuntimeAdapter } from "../../core/host.ts";
import type { ModelSource } from "../../core/model-source.ts";
import type { OnnxBackends, OrtModuleLike, OrtSessionLike } from "../../core/onnx.ts";
import type { PipelineEvent } from "../../core/node.ts";
import { loadRuntimeAdapter } from "../../core/runtime.ts";

export interface SessionTiming {
  readonly file: string;
  readonly backend: string;
  /** Loading the session: start (of the optimized-graph cache lookup where there is one, else of InferenceSession.create) and end. */
  readonly created: readonly [number, number];
  /** The part of `created` spent in the optimized-graph cache lookup (reading and checking its record and file), ms. */
  readonly cacheLookupMs: number;
  runs: number;
  runMs: number;
}

export interface CliTimings {
  readonly timeOrigin: number;
  /** Named instants: main (entered main, after the imports), created, opened, runStart, ran, png, done (main returns; the process exits). */
  readonly marks: Record<string, number>;
  /** Each node's [start, end] in the run (from the run's events). */
  readonly nodes: Record<string, readonly [number, number]>;
  /** Importing each ONNX backend package (on first use): [start, end]. */
  readonly backends: Record<string, readonly [number, number]>;
  readonly sessions: SessionTiming[];
}

export async function phaseRecorder(): Promise<{
  adapter: RuntimeAdapter;
  timings: CliTimings;
  mark(name: string): void;
  onEvent(e: PipelineEvent): void;
}> {
  const timings: CliTimings = { timeOrigin: performance.timeOrigin, marks: {}, nodes: {}, backends: {}, sessions: [] };
  const base = await loadRuntimeAdapter();
  const names = new WeakMap<Uint8Array, string>();
  const files = new Map<string, string>(); // a cached graph's file → the model file it was optimized from
  const lookups = new Map<string, readonly [number, number]>(); // model file → its last cache lookup
  const wrapSource = (s: ModelSource): ModelSource => ({
    ...s,
    async read(path) {
      const bytes = await s.read(path);
      names.set(bytes, `${s.root}/${path}`);
      return bytes;
    },
    exists: (path) => s.exists(path),
    sub: (path) => wrapSource(s.sub(path)),
    ...(s.localPath ? { localPath: s.localPath.bind(s) } : {}),
  });
  const wrapModule = (backend: string, ort: OrtModuleLike): OrtModuleLike => ({
    ...ort,
    InferenceSession: {
      async create(model, options) {
        const start = performance.now();
        const session: OrtSessionLike = await ort.InferenceSession.create(model, options);
        const file = typeof model === "string" ? (files.get(model) ?? model) : (names.get(model) ?? "?");
        // A lookup in the optimized-graph cache just before is part of loading this model, not of the node that asked.
        const lookup = lookups.get(file);
        lookups.delete(file);
        const from = lookup && lookup[1] <= start ? lookup[0] : start;
        const t: SessionTiming = { file, backend, created: [from, performance.now()], cacheLookupMs: start - from, runs: 0, runMs: 0 };
        timings.sessions.push(t);
        const run = session.run.bind(session);
        (session as { run: OrtSessionLike["run"] }).run = async (feeds) => {
          const t0 = performance.now();
          try {
            return await run(feeds);
          } finally {
            t.runs++;
            t.runMs += performance.now() - t0;
          }
        };
        return session;
      },
    },
  });
  const timedLoader = <A extends unknown[]>(name: string, load: (...a: A) => Promise<OrtModuleLike>) => {
    const done = new Map<string, OrtModuleLike>();
    return async (...a: A) => {
      const key = `${name}/${a.join(",")}`;
      const hit = done.get(key);
      if (hit) return hit;
      const start = performance.now();
      const ort = wrapModule(name, await load(...a));
      timings.backends[key] ??= [start, performance.now()];
      done.set(key, ort);
      return ort;
    };
  };
  const b = base.onnxBackends;
  // Everything else the adapter gives (its cores for the thread policy, the optimized-graph cache)
  // passes through unchanged: a timed run must load as the untimed CLI does.
  const graphCache = b.graphCache;
  const onnxBackends: OnnxBackends = {
    ...b,
    // A session created from the cache gets its model file's name too (the cached graph is another file).
    ...(graphCache
      ? {
          graphCache: (dir?: string) => {
            const cache = graphCache(dir);
            return cache && {
              ...cache,
              async entry(bytes, key) {
                const start = performance.now();
                const e = await cache.entry(bytes, key);
                const name = (bytes && names.get(bytes)) ?? key.file;
                if (name) lookups.set(name, [start, performance.now()]);
                if (e.cachedFile && name) files.set(e.cachedFile, name);
                return e;
              },
            };
          },
        }
      : {}),
    ...(b.native ? { native: timedLoader("onnxruntime-node", b.native) } : {}),
    ...(b.web ? { web: timedLoader("onnxruntime-web", b.web) } : {}),
  };
  return {
    adapter: { host: base.host, fileSource: (dir) => wrapSource(base.fileSource(dir)), onnxBackends },
    timings,
    mark(name) {
      timings.marks[name] = performance.now();
    },
    onEvent(e) {
      if (e.type === "node-start") timings.nodes[e.node] = [e.at, e.at];
      else if (e.type === "node-end" && timings.nodes[e.node]) timings.nodes[e.node] = [timings.nodes[e.node]![0], performance.now()];
    },
  };
}
