/**
 * The transport contract suite (test/api/transport.case.ts) against the distributed mode: the client
 * talks to an API node (`--role api`) and the job runs on a worker process (`--role worker`), events
 * crossing Redis — over SSE through an API node on Deno, over WebSocket through one on Bun.
 */
import { afterAll, describe } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sseTransport, wsTransport } from "../api/helpers.ts";
import { runTransportSuite } from "../api/transport.case.ts";
import { pipelinesFolder, startServerProcess } from "../robustness/server-process.ts";
import { HAS_REDIS, startRedis } from "../redis-server.ts";

const pipelines = pipelinesFolder(["tiny-sd"]);
afterAll(() => rmSync(pipelines, { recursive: true, force: true }));

function cluster(runtime: "bun" | "deno") {
  return async ({ concurrency }: { concurrency: number }) => {
    const redis = await startRedis();
    const data = mkdtempSync(join(tmpdir(), "diffgraph-cluster-transport-"));
    const q = ["--queue", redis.url];
    const [api, worker] = await Promise.all([
      startServerProcess({ runtime, dataDir: data, pipelinesDir: pipelines, args: [...q, "--role", "api", ...(runtime === "deno" ? ["--provider", "wasm"] : [])] }),
      startServerProcess({ dataDir: data, pipelinesDir: pipelines, args: [...q, "--role", "worker", "--concurrency", String(concurrency), "--provider", "cpu"] }),
    ]);
    return {
      url: api.url,
      gql: api.gql,
      async close() {
        await Promise.all([api.stop(), worker.stop()]);
        await redis.stop();
        rmSync(data, { recursive: true, force: true });
      },
    };
  };
}

describe.skipIf(!HAS_REDIS)("distributed mode (API node on Deno, worker on Bun): subscriptions over Server-Sent Events", () => runTransportSuite(sseTransport, cluster("deno")));
describe.skipIf(!HAS_REDIS)("distributed mode (API node on Bun, worker on Bun): subscriptions over WebSocket", () => runTransportSuite(wsTransport, cluster("bun")));
