/**
 * The API hosted by Bun: `Bun.serve` for HTTP (GraphQL over HTTP and SSE) and WebSocket
 * (graphql-transport-ws via graphql-ws) on /graphql; records in bun:sqlite.
 */
import { handleProtocols, makeHandler } from "graphql-ws/use/bun";
import type { Server } from "bun";
import { openSqliteStore } from "./adapters/sqlite-bun.ts";
import { pipelineFiles } from "./adapters/pipeline-files-node.ts";
import { staticFiles } from "./adapters/static-files-node.ts";
import { originAllowed } from "./app.ts";
import { forbiddenOrigin, openService, wsServerOptions, type RunningServer, type ServerOptions } from "./host-common.ts";
import { API_LIMITS } from "./service.ts";

export type { RunningServer, ServerOptions } from "./host-common.ts";

export async function startServer(options: ServerOptions = {}): Promise<RunningServer & { readonly server: Server<{ request: Request }> }> {
  const { service, app, yoga } = await openService(options, { openStore: openSqliteStore, pipelineFiles, localFiles: staticFiles(options.webDir ?? "dist/web") });
  type Data = { request: Request };
  const websocket = makeHandler<Record<string, unknown>, { socket: { data: Data } }>(
    wsServerOptions(yoga, (extra: { socket: unknown }) => (extra.socket as { data: Data }).data.request) as never,
  );
  const server = Bun.serve<Data>({
    port: options.port ?? 4000,
    hostname: options.hostname ?? "127.0.0.1",
    idleTimeout: 0, // subscriptions stay open as long as a job runs
    maxRequestBodySize: API_LIMITS.requestBytes,
    fetch(request, srv) {
      if (request.headers.get("upgrade")?.toLowerCase() === "websocket" && new URL(request.url).pathname === "/graphql") {
        // Browsers apply no CORS to WebSocket: a page on any site could open one and run mutations.
        if (!originAllowed(request, options.corsOrigins)) return forbiddenOrigin(request);
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
    server,
    async stop() {
      await service.jobs.close();
      await server.stop(true);
      await service.close();
    },
  };
}
