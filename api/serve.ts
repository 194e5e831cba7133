/**
 * `bun run serve [--port P] [--host H] [--pipeline NAME] [--data DIR] [--pipelines DIR]
 *                [--concurrency N] [--max-queue N] [--cors ORIGINS]`
 *
 * Environment: DIFFGRAPH_API_KEY (mutations need it when set), DIFFGRAPH_CORS_ORIGINS
 * (comma-separated, or "*"), DIFFGRAPH_DATA_DIR, PORT.
 */
import { parseArgs } from "node:util";
import { startServer } from "./server.ts";

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
    help: { type: "boolean", short: "h" },
  },
});

if (values.help) {
  console.log(`usage: bun run serve [--port 4000] [--host 127.0.0.1] [--pipeline NAME] [--pipelines DIR]
                 [--data .diffgraph] [--concurrency 4] [--max-queue 64] [--cors ORIGIN,ORIGIN|*]
env: DIFFGRAPH_API_KEY, DIFFGRAPH_CORS_ORIGINS, DIFFGRAPH_DATA_DIR, PORT`);
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

const corsRaw = values.cors ?? process.env.DIFFGRAPH_CORS_ORIGINS;
const corsOrigins = corsRaw === "*" ? "*" : corsRaw ? corsRaw.split(",").map((s) => s.trim()).filter(Boolean) : undefined;

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
  });
  console.error(`diffgraph API on ${s.url}  (GraphiQL: ${s.url}/graphql, playground: ${s.url}/)`);
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
