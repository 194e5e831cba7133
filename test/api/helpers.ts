/** Shared by the API suites: a real server on a loopback port, and GraphQL clients for both transports. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createClient as createSseClient } from "graphql-sse";
import { createClient as createWsClient } from "graphql-ws";
import { setDefaultTimeout } from "bun:test";
import { startServer, type RunningServer, type ServerOptions } from "../../api/host-bun.ts";

// These suites start servers and load ONNX sessions; on a busy 2-core machine 5 s is too tight.
setDefaultTimeout(30_000);

export interface TestServer extends RunningServer {
  readonly dataDir: string;
  /** POST a GraphQL operation; returns the parsed response body. */
  gql<T = any>(query: string, variables?: Record<string, unknown>, headers?: Record<string, string>): Promise<{ data?: T; errors?: GqlError[] }>;
  /** Stop and delete the data folder (unless `keepData`). */
  close(keepData?: boolean): Promise<void>;
}

export interface GqlError {
  message: string;
  extensions?: { code?: string; field?: string; [k: string]: unknown };
}

export async function startTestServer(options: ServerOptions & { dataDir?: string } = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "diffgraph-api-"));
  const s = await startServer({ port: 0, threads: 1, log: () => {}, defaultPipeline: "tiny-sd", ...options, dataDir });
  return {
    ...s,
    dataDir,
    async gql(query, variables, headers = {}) {
      const res = await fetch(`${s.url}/graphql`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...headers },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    async close(keepData = false) {
      await s.stop();
      if (!keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** What the transport contract suite needs of a server, whichever host runs it. */
export type SuiteServer = Pick<TestServer, "url" | "gql" | "close">;

/** A transport under test: run one subscription to completion, calling `onEvent` for each result. */
export interface Transport {
  readonly name: string;
  subscribe(server: { readonly url: string }, query: string, variables: Record<string, unknown>, onEvent?: (data: any) => void | Promise<void>): Promise<any[]>;
  dispose(): void;
}

export function sseTransport(): Transport {
  const clients: ReturnType<typeof createSseClient>[] = [];
  return {
    name: "SSE (graphql-sse)",
    async subscribe(server, query, variables, onEvent) {
      const client = createSseClient({ url: `${server.url}/graphql`, retryAttempts: 0 });
      clients.push(client);
      const out: any[] = [];
      for await (const r of client.iterate({ query, variables })) {
        if (r.errors) throw new Error(JSON.stringify(r.errors));
        out.push(r.data);
        await onEvent?.(r.data);
      }
      return out;
    },
    dispose: () => clients.forEach((c) => c.dispose()),
  };
}

export function wsTransport(): Transport {
  const clients: ReturnType<typeof createWsClient>[] = [];
  return {
    name: "WebSocket (graphql-ws)",
    async subscribe(server, query, variables, onEvent) {
      const client = createWsClient({ url: `${server.url.replace(/^http/, "ws")}/graphql`, retryAttempts: 0, lazy: true });
      clients.push(client);
      const out: any[] = [];
      try {
        for await (const r of client.iterate({ query, variables })) {
          if (r.errors) throw new Error(JSON.stringify(r.errors));
          out.push(r.data);
          await onEvent?.(r.data);
        }
      } finally {
        await client.dispose();
      }
      return out;
    },
    dispose: () => clients.forEach((c) => c.dispose()),
  };
}

export const PROGRESS = /* GraphQL */ `
  subscription Progress($id: ID!) {
    jobProgress(id: $id) {
      __typename
      ... on JobSnapshot { job { id status step } lastStep { step } }
      ... on JobStep { jobId step totalSteps timestep elapsedMs dropped previews { id url dataUrl width height } }
      ... on JobFinished { job { id status error step totalSteps images { id url width height } metrics { name value } } }
    }
  }
`;

export const GENERATE = /* GraphQL */ `
  mutation Generate($input: GenerateInput!) { generate(input: $input) { id status params { steps seed scheduler } } }
`;

export async function fetchPng(url: string): Promise<{ status: number; bytes: Uint8Array }> {
  const res = await fetch(url);
  return { status: res.status, bytes: new Uint8Array(await res.arrayBuffer()) };
}

/** Width and height from a PNG's IHDR. */
export function pngSize(png: Uint8Array): { width: number; height: number } {
  const sig = [0x89, 0x50, 0x4e, 0x47];
  if (!sig.every((b, i) => png[i] === b)) throw new Error("not a PNG");
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}

/**
 * A temporary pipelines folder holding one shipped pipeline (`pipelines/NAME.json`, its model folder
 * made absolute) with its denoise node's `batching` config set; remove it with rmSync when done.
 */
export function pipelineFolderWithBatching(name: string, batching: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), "diffgraph-pipelines-"));
  const doc = JSON.parse(readFileSync(`pipelines/${name}.json`, "utf8"));
  doc.model = resolve("pipelines", doc.model);
  for (const n of Object.values(doc.nodes) as { use: string; config?: Record<string, unknown> }[]) {
    if (n.use === "denoise") n.config!.batching = batching;
  }
  writeFileSync(join(dir, `${name}.json`), JSON.stringify(doc));
  return dir;
}

/** The app without a socket (`app.request(path)`), for HTTP-only checks. */
export async function createTestApp(options: { apiKey?: string; corsOrigins?: "*" | string[]; maxQueue?: number; concurrency?: number; pipelinesDir?: string } = {}) {
  const { createDiffgraph } = await import("../../core/diffgraph.ts");
  const { builtinRegistry } = await import("../../plugins/index.ts");
  const { ApiService } = await import("../../api/service.ts");
  const { openSqliteStore } = await import("../../api/adapters/sqlite-bun.ts");
  const { pipelineFiles } = await import("../../api/adapters/pipeline-files-node.ts");
  const { createApp } = await import("../../api/app.ts");
  const dataDir = mkdtempSync(join(tmpdir(), "diffgraph-app-"));
  const log = () => {};
  const diffgraph = await createDiffgraph({ registry: builtinRegistry(), log, threads: 1 });
  const { pipelinesDir, ...rest } = options;
  const service = await ApiService.create({ diffgraph, store: openSqliteStore(dataDir), pipelineFiles: await pipelineFiles(pipelinesDir ?? "pipelines"), log, defaultPipeline: "tiny-sd", ...rest });
  const { app } = createApp({ service, corsOrigins: options.corsOrigins });
  return {
    app,
    service,
    async gql<T = any>(query: string, variables?: Record<string, unknown>, headers: Record<string, string> = {}): Promise<{ data?: T; errors?: GqlError[] }> {
      const res = await app.request("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json", ...headers },
        body: JSON.stringify({ query, variables }),
      });
      return (await res.json()) as never;
    },
    async close() {
      await service.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
