/**
 * What every host shares: building the service and app from options, with the engines a host
 * hands in (its SQLite driver, its way to list a folder), and the graphql-ws server options. The
 * host files (`host-bun.ts`, `host-deno.ts`) only listen and upgrade WebSockets.
 */
import { GraphQLError, type ExecutionArgs } from "graphql";
import type { ServerOptions as WsServerOptions } from "graphql-ws";
import { createDiffgraph } from "../core/diffgraph.ts";
import type { ExecutionProvider } from "../core/onnx.ts";
import type { PluginRegistry } from "../core/registry.ts";
import type { ThreadPolicyOptions } from "../core/threads.ts";
import { builtinRegistry } from "../plugins/index.ts";
import { createApp, type ApiYoga, type AppOptions } from "./app.ts";
import { apiError, ErrorCode } from "./errors.ts";
import type { JobStore } from "./ports.ts";
import { ApiService, type ServiceOptions } from "./service.ts";

/** The service's options (pipelines, queue, auth) plus where to listen and what to load them with. */
export interface ServerOptions extends Partial<Omit<ServiceOptions, "diffgraph" | "store" | "pipelineFiles">> {
  /** 0 picks a free port. */
  readonly port?: number;
  readonly hostname?: string;
  /** Folder for jobs.sqlite and images/ (default `.diffgraph`). */
  readonly dataDir?: string;
  /** Folder whose `*.json` pipeline documents are registered (default `pipelines`). */
  readonly pipelinesDir?: string;
  /** The web build served at /local (default dist/web, written by `bun run build:web`). */
  readonly webDir?: string;
  readonly corsOrigins?: AppOptions["corsOrigins"];
  readonly registry?: PluginRegistry;
  /** ONNX threads (`core/threads.ts`): a number is the UNet's intra-op threads; default every core for it, one for each other model. */
  readonly threads?: number | ThreadPolicyOptions;
  /** Optimized-graph cache folder, or false for none (default: the adapter's, `DIFFGRAPH_CACHE_DIR`). */
  readonly graphCache?: string | false;
  /** ONNX execution provider (default "auto": the best this host has). */
  readonly executionProvider?: ExecutionProvider;
  readonly plugins?: AppOptions["plugins"];
  /**
   * `redis://HOST:PORT`: the distributed mode (records, queue and events in Redis, images in
   * `dataDir/images` on a folder every node mounts). Without it, the embedded mode.
   */
  readonly queueUrl?: string;
  /** Distributed mode: a job's lock; a dead worker's job is re-delivered within about twice this (ms, default 30 000). */
  readonly lockMs?: number;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly service: ApiService;
  /** Stop accepting connections, cancel jobs, close the store. */
  stop(): Promise<void>;
}

/** What a host provides: its SQLite store and folder listing. */
export interface HostEngines {
  openStore(dataDir: string): JobStore;
  pipelineFiles(dir: string): Promise<string[]>;
  /** Reads the web build's files for /local (absent: the route answers 404). */
  localFiles?: (path: string) => Promise<Uint8Array | undefined>;
}

export async function openService(options: ServerOptions, engines: HostEngines) {
  const log = options.log ?? ((m: string) => console.error(m));
  const diffgraph = await createDiffgraph({
    registry: options.registry ?? builtinRegistry(),
    log,
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.graphCache !== undefined ? { graphCache: options.graphCache } : {}),
    executionProvider: options.executionProvider,
  });
  const pipelineFiles = await engines.pipelineFiles(options.pipelinesDir ?? "pipelines");
  // ServerOptions extends the service's options; the listening fields it adds are ignored there.
  const dataDir = options.dataDir ?? ".diffgraph";
  const jobEngines = options.queueUrl
    ? (await import("./adapters/redis-node.ts")).openRedisEngines(options.queueUrl, { dataDir, maxQueue: options.maxQueue, concurrency: options.concurrency, lockMs: options.lockMs, subscriberBuffer: options.subscriberBuffer, log })
    : { store: engines.openStore(dataDir) };
  const service = await ApiService.create({ ...options, diffgraph, ...jobEngines, pipelineFiles, log });
  const { app, yoga } = createApp({ service, corsOrigins: options.corsOrigins, plugins: options.plugins, localFiles: engines.localFiles });
  return { service, app, yoga };
}

/**
 * graphql-ws options over yoga's envelope. Everything a client sends is parsed and validated in
 * `onSubscribe`; anything thrown becomes an error message to that client. An uncaught throw would
 * reach the host's WebSocket handler and end the process (one unparsable `subscribe` used to).
 */
export function wsServerOptions<E>(yoga: ApiYoga, upgradeRequestOf: (extra: E) => Request): WsServerOptions<Record<string, unknown>, E> {
  return {
    execute: (args: ExecutionArgs) => (args.rootValue as { execute: (a: ExecutionArgs) => unknown }).execute(args) as never,
    subscribe: (args: ExecutionArgs) => (args.rootValue as { subscribe: (a: ExecutionArgs) => unknown }).subscribe(args) as never,
    onSubscribe: async (ctx, _id, params) => {
      try {
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          // Not `request`: yoga would treat the upgrade GET as the operation's HTTP request and refuse mutations.
          upgradeRequest: upgradeRequestOf(ctx.extra),
          connectionParams: ctx.connectionParams,
          params,
        });
        const document = parse(params.query);
        const errors = validate(schema, document);
        if (errors.length) return [...errors];
        return {
          schema,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe },
        };
      } catch (err) {
        return [err instanceof GraphQLError ? err : apiError(ErrorCode.BAD_REQUEST, `the operation could not be read: ${(err as Error)?.name ?? "error"}`)];
      }
    },
  };
}

export function forbiddenOrigin(request: Request): Response {
  return new Response(`origin ${request.headers.get("origin")} is not allowed (start the server with --cors to allow it)`, { status: 403 });
}
