/**
 * Hosts the fetch-handler app on Bun: HTTP (GraphQL over HTTP and SSE) plus WebSocket
 * (graphql-transport-ws via graphql-ws) on /graphql. Used by `api/serve.ts` and by the tests.
 */
import { handleProtocols, makeHandler } from "graphql-ws/use/bun";
import type { ExecutionArgs } from "graphql";
import type { Server } from "bun";
import { createDiffgraph } from "../core/diffgraph.ts";
import type { PluginRegistry } from "../core/registry.ts";
import { builtinRegistry } from "../plugins/index.ts";
import { createApp, type AppOptions } from "./app.ts";
import { ApiService, type ServiceOptions } from "./service.ts";
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
    onSubscribe: async (ctx, _id, params) => {
      const request = (ctx.extra.socket as unknown as { data: { request: Request } }).data.request;
      const { schema, execute, subscribe, contextFactory, parse, validate } = yoga.getEnveloped({
        ...ctx,
        // Not `request`: yoga would treat the upgrade GET as the operation's HTTP request and refuse mutations.
        upgradeRequest: request,
        connectionParams: ctx.connectionParams,
        params,
      });
      const args = {
        schema,
        operationName: params.operationName,
        document: parse(params.query),
        variableValues: params.variables,
        contextValue: await contextFactory(),
        rootValue: { execute, subscribe },
      };
      const errors = validate(args.schema, args.document);
      if (errors.length) return errors;
      return args;
    },
  });

  const server = Bun.serve<{ request: Request }>({
    port: options.port ?? 4000,
    hostname: options.hostname ?? "127.0.0.1",
    idleTimeout: 0, // subscriptions stay open as long as a job runs
    fetch(request, srv) {
      if (request.headers.get("upgrade")?.toLowerCase() === "websocket" && new URL(request.url).pathname === "/graphql") {
        // Browsers apply no CORS to WebSocket: check the origin here when origins are configured.
        const origin = request.headers.get("origin");
        const allowed = options.corsOrigins;
        if (origin && Array.isArray(allowed) && !allowed.includes(origin) && origin !== new URL(request.url).origin) {
          return new Response(`origin ${origin} is not allowed`, { status: 403 });
        }
        if (!handleProtocols(request.headers.get("sec-websocket-protocol") ?? "")) {
          return new Response("unsupported WebSocket subprotocol (use graphql-transport-ws)", { status: 400 });
        }
        if (srv.upgrade(request, { data: { request } })) return undefined as unknown as Response;
        return new Response("WebSocket upgrade failed", { status: 500 });
      }
      return app.fetch(request);
    },
    websocket: websocket as never,
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
