/**
 * `bun run serve [--port P] [--host H] [--pipeline NAME] [--data DIR] [--pipelines DIR]
 *                [--concurrency N] [--max-queue N] [--cors ORIGINS]
 *                [--threads N] [--threads-aux N] [--spin] [--pin] [--graph-cache DIR|off]
 *                [--queue redis://HOST:PORT [--role api|worker|all] [--lock-ms MS]]`
 * `deno run -A api/serve.ts …` (the same options): each runtime gets its own host file.
 *
 * Without `--queue` the process is the whole service (embedded mode); with it, it is one node of a
 * deployment sharing one Redis (README "Scale out").
 *
 * Environment: DIFFGRAPH_API_KEY (mutations need it when set), DIFFGRAPH_CORS_ORIGINS
 * (comma-separated, or "*"), DIFFGRAPH_DATA_DIR, DIFFGRAPH_QUEUE, DIFFGRAPH_CACHE_DIR (the optimized-graph
 * cache, "off" for none), PORT.
 */
import { parseArgs } from "node:util";
import { EXECUTION_PROVIDERS, type ExecutionProvider } from "../core/onnx.ts";
import { threadOptionsFromFlags } from "../core/threads.ts";
import type { RunningServer, ServerOptions } from "./host-common.ts";

/** The host for the runtime this runs on: Bun.serve + bun:sqlite, or Deno.serve + node:sqlite. */
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
const { startServer } = (await (isDeno ? import("./host-deno.ts") : import("./host-bun.ts"))) as { startServer(o: ServerOptions): Promise<RunningServer> };

const { values } = parseArgs({
  options: {
    port: { type: "string" },
    host: { type: "string" },
    pipeline: { type: "string" },
    pipelines: { type: "string" },
    data: { type: "string" },
    concurrency: { type: "string" },
    "max-queue": { type: "string" },
    cors: { type: "string" },
    provider: { type: "string" },
    queue: { type: "string" },
    role: { type: "string" },
    "lock-ms": { type: "string" },
    threads: { type: "string" },
    "threads-aux": { type: "string" },
    spin: { type: "boolean" },
    pin: { type: "boolean" },
    "graph-cache": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

if (values.help) {
  console.log(`usage: bun run serve [--port 4000] [--host 127.0.0.1] [--pipeline NAME] [--pipelines DIR]
                 [--data .diffgraph] [--concurrency 4] [--max-queue 64] [--cors ORIGIN,ORIGIN|*]
                 [--provider ${EXECUTION_PROVIDERS.join("|")}]
                 [--queue redis://HOST:PORT [--role api|worker|all] [--lock-ms 30000]]
                 [--threads N (UNet intra-op threads; default every core)] [--threads-aux N (other models; default 1)]
                 [--spin (the UNet's pool spins)] [--pin (pin its threads)] [--graph-cache DIR|off]
       deno run -A api/serve.ts (same options)
env: DIFFGRAPH_API_KEY, DIFFGRAPH_CORS_ORIGINS, DIFFGRAPH_DATA_DIR, DIFFGRAPH_QUEUE, DIFFGRAPH_CACHE_DIR, PORT`);
  process.exit(0);
}

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`--${name} must be a non-negative integer, got "${v}"`);
    process.exit(2);
  }
  return n;
}

function provider(v: string | undefined): ExecutionProvider | undefined {
  if (v === undefined) return undefined;
  if (!(EXECUTION_PROVIDERS as readonly string[]).includes(v)) {
    console.error(`--provider must be one of ${EXECUTION_PROVIDERS.join(", ")}, got "${v}"`);
    process.exit(2);
  }
  return v as ExecutionProvider;
}

const ROLES = ["api", "worker", "all"] as const;
const queueUrl = values.queue ?? process.env.DIFFGRAPH_QUEUE;
if (values.role !== undefined && !(ROLES as readonly string[]).includes(values.role)) {
  console.error(`--role must be one of ${ROLES.join(", ")}, got "${values.role}"`);
  process.exit(2);
}
if ((values.role !== undefined || values["lock-ms"] !== undefined) && !queueUrl) {
  console.error(`--${values.role !== undefined ? "role" : "lock-ms"} needs --queue redis://HOST:PORT (without it the process is the whole service)`);
  process.exit(2);
}
const role = (values.role ?? "all") as (typeof ROLES)[number];

const corsRaw = values.cors ?? process.env.DIFFGRAPH_CORS_ORIGINS;
const corsOrigins = corsRaw === "*" ? "*" : corsRaw ? corsRaw.split(",").map((s) => s.trim()).filter(Boolean) : undefined;

let threads: ReturnType<typeof threadOptionsFromFlags>;
try {
  threads = threadOptionsFromFlags({ threads: values.threads, threadsAux: values["threads-aux"], spin: values.spin, pin: values.pin });
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const graphCache = values["graph-cache"];

try {
  const s = await startServer({
    port: int("port", values.port ?? process.env.PORT) ?? 4000,
    hostname: values.host ?? "127.0.0.1",
    defaultPipeline: values.pipeline,
    pipelinesDir: values.pipelines,
    dataDir: values.data ?? process.env.DIFFGRAPH_DATA_DIR ?? ".diffgraph",
    // Four jobs at a time by default: jobs running together share UNet calls (core/batcher.ts).
    concurrency: int("concurrency", values.concurrency) ?? 4,
    maxQueue: int("max-queue", values["max-queue"]),
    apiKey: process.env.DIFFGRAPH_API_KEY,
    corsOrigins,
    executionProvider: provider(values.provider),
    ...(threads ? { threads } : {}),
    ...(graphCache !== undefined ? { graphCache: /^off$/i.test(graphCache) ? false : graphCache } : {}),
    ...(queueUrl ? { queueUrl, role, lockMs: int("lock-ms", values["lock-ms"]) } : {}),
  });
  const mode = queueUrl ? `; queue: ${queueUrl.replace(/\/\/[^@/]*@/, "//")}, role: ${role}` : "";
  console.error(`diffgraph API on ${s.url}  (GraphiQL: ${s.url}/graphql, playground: ${s.url}/; host: ${isDeno ? "Deno" : "Bun"}${mode})`);
  const shutdown = async () => {
    console.error("shutting down…");
    await s.stop();
    process.exit(0);
  };
  process.on("SIGINT", shutdown);
  process.on("SIGTERM", shutdown);
} catch (err) {
  console.error(`serve: ${(err as Error).message}`);
  process.exit(1);
}
