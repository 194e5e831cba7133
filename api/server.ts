/**
 * Hosts the fetch-handler app on Bun: HTTP (GraphQL over HTTP and SSE) plus WebSocket
 * (graphql-transport-ws via graphql-ws) on /graphql. Used by `api/serve.ts` and by the tests.
 */
import { handleProtocols, makeHandler } from "graphql-ws/use/bun";
import { GraphQLError, type ExecutionArgs } from "graphql";
import type { Server } from "bun";
import { createDiffgraph } from "../core/diffgraph.ts";
import type { PluginRegistry } from "../core/registry.ts";
import { builtinRegistry } from "../plugins/index.ts";
import { createApp, originAllowed, type AppOptions } from "./app.ts";
import { apiError, ErrorCode } from "./errors.ts";
import { API_LIMITS, ApiService, type ServiceOptions } from "./service.ts";
import { JobStore } from "./store.ts";

/** The service's options (pipelines, queue, auth) plus where to listen and what to load them with. */
export interface ServerOptions extends Partial<Omit<ServiceOptions, "diffgraph" | "store">> {
  /** 0 picks a free port. */
  readonly port?: number;
  readonly hostname?: string;
  /** Folder for jobs.sqlite and images/ (default `.diffgraph`). */
  readonly dataDir?: string;
  readonly corsOrigins?: AppOptions["corsOrigins"];
  readonly registry?: PluginRegistry;
  readonly threads?: number;
  readonly plugins?: AppOptions["plugins"];
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  readonly service: ApiService;
  readonly server: Server<{ request: Request }>;
  /** Stop accepting connections, cancel jobs, close the database. */
  stop(): Promise<void>;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const log = options.log ?? ((m: string) => console.error(m));
  const diffgraph = await createDiffgraph({ registry: options.registry ?? builtinRegistry(), log, threads: options.threads });
  // ServerOptions extends the service's options; the listening fields it adds are ignored there.
  const service = await ApiService.create({ ...options, diffgraph, store: new JobStore(options.dataDir ?? ".diffgraph"), log });
  const { app, yoga } = createApp({ service, corsOrigins: options.corsOrigins, plugins: options.plugins });

  const websocket = makeHandler<Record<string, unknown>, { socket: { data: { request: Request } } }>({
    execute: (args: ExecutionArgs) => (args.rootValue as { execute: (a: ExecutionArgs) => unknown }).execute(args) as never,
    subscribe: (args: ExecutionArgs) => (args.rootValue as { subscribe: (a: ExecutionArgs) => unknown }).subscribe(args) as never,
    // Everything a client sends is parsed and validated here; anything thrown becomes an error
    // message to that client. An uncaught throw would reach Bun's WebSocket handler and end the
    // process (one unparsable `subscribe` used to kill the server).
    onSubscribe: async (ctx, _id, params) => {
      try {
        const request = (ctx.extra.socket as unknown as { data: { request: Request } }).data.request;
        const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
          ...ctx,
          // Not `request`: yoga would treat the upgrade GET as the operation's HTTP request and refuse mutations.
          upgradeRequest: request,
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
  });

  const server = Bun.serve<{ request: Request }>({
    port: options.port ?? 4000,
    hostname: options.hostname ?? "127.0.0.1",
    idleTimeout: 0, // subscriptions stay open as long as a job runs
    maxRequestBodySize: API_LIMITS.requestBytes,
    fetch(request, srv) {
      if (request.headers.get("upgrade")?.toLowerCase() === "websocket" && new URL(request.url).pathname === "/graphql") {
        // Browsers apply no CORS to WebSocket: a page on any site could open one and run mutations.
        if (!originAllowed(request, options.corsOrigins)) {
          return new Response(`origin ${request.headers.get("origin")} is not allowed (start the server with --cors to allow it)`, { status: 403 });
        }
        if (!handleProtocols(request.headers.get("sec-websocket-protocol") ?? "")) {
          return new Response("unsupported WebSocket subprotocol (use graphql-transport-ws)", { status: 400 });
        }
        if (srv.upgrade(request, { data: { request } })) return undefined as unknown as Response;
        return new Response("WebSocket upgrade failed", { status: 500 });
      }
      return app.fetch(request);
    },
    websocket: { ...(websocket as object), maxPayloadLength: API_LIMITS.requestBytes } as never,
  });
  const url = `http://${server.hostname === "0.0.0.0" ? "127.0.0.1" : server.hostname}:${server.port}`;
  return {
    url,
    port: server.port!,
    service,
    server: server as never,
    async stop() {
      await service.jobs.close();
      await server.stop(true);
      await service.close();
    },
  };
}
