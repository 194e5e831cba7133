/**
 * The API hosted by Deno: `Deno.serve` for HTTP (GraphQL over HTTP and SSE) and
 * `Deno.upgradeWebSocket` for graphql-transport-ws (graphql-ws) on /graphql; records in node:sqlite.
 */
import { GRAPHQL_TRANSPORT_WS_PROTOCOL, makeHandler } from "graphql-ws/use/deno";
import { openSqliteStore } from "./adapters/sqlite-node.ts";
import { pipelineFiles } from "./adapters/pipeline-files-node.ts";
import { staticFiles } from "./adapters/static-files-node.ts";
import { originAllowed } from "./app.ts";
import { forbiddenOrigin, openService, wsServerOptions, type RunningServer, type ServerOptions } from "./host-common.ts";
import { API_LIMITS } from "./service.ts";

export type { RunningServer, ServerOptions } from "./host-common.ts";

declare const Deno: {
  serve(
    options: { port: number; hostname: string; onListen?: (addr: { port: number; hostname: string }) => void },
    handler: (request: Request) => Response | Promise<Response>,
  ): { finished: Promise<void>; shutdown(): Promise<void>; addr: { port: number; hostname: string } };
  upgradeWebSocket(request: Request, options: { protocol?: string; idleTimeout?: number }): { socket: WebSocket; response: Response };
};

function withProtocol(socket: WebSocket, protocol: string): WebSocket {
  return new Proxy(socket, {
    get: (target, key) => {
      if (key === "protocol") return protocol;
      const v = Reflect.get(target, key, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
    set: (target, key, value) => Reflect.set(target, key, value, target),
  });
}

/**
 * Deno.serve has no body-size option (Bun.serve's maxRequestBodySize): a declared length over the
 * bound is refused at once, and a chunked body is read up to the bound and refused past it.
 */
async function boundedBody(request: Request, limit: number): Promise<Request | Response> {
  const tooLarge = () => new Response(`request body over ${limit} bytes`, { status: 413 });
  if (!request.body) return request;
  const declared = request.headers.get("content-length");
  if (declared !== null) return Number(declared) > limit ? tooLarge() : request;
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      return tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) body.set(c, (at += c.byteLength) - c.byteLength);
  return new Request(request.url, { method: request.method, headers: request.headers, body });
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const { service, app, yoga } = await openService(options, { openStore: openSqliteStore, pipelineFiles, localFiles: staticFiles(options.webDir ?? "dist/web") });
  const requests = new WeakMap<WebSocket, Request>();
  const handle = makeHandler(wsServerOptions(yoga, (extra: { socket: WebSocket }) => requests.get(extra.socket)!) as never);
  const server = Deno.serve({ port: options.port ?? 4000, hostname: options.hostname ?? "127.0.0.1", onListen: () => {} }, async (request) => {
    if (request.headers.get("upgrade")?.toLowerCase() === "websocket" && new URL(request.url).pathname === "/graphql") {
      if (!originAllowed(request, options.corsOrigins)) return forbiddenOrigin(request);
      const protocols = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim());
      if (!protocols.includes(GRAPHQL_TRANSPORT_WS_PROTOCOL)) {
        return new Response("unsupported WebSocket subprotocol (use graphql-transport-ws)", { status: 400 });
      }
      // Deno closes the upgrade request once it is upgraded; keep a copy of what the context reads.
      const upgradeRequest = new Request(request.url, { headers: new Headers(request.headers) });
      const { socket, response } = Deno.upgradeWebSocket(request, { protocol: GRAPHQL_TRANSPORT_WS_PROTOCOL, idleTimeout: 0 });
      // Deno's server-side socket reports an empty `protocol` even after it accepted one, and
      // graphql-ws closes such sockets (4406); the subprotocol was checked above, so report it.
      const ws = withProtocol(socket, GRAPHQL_TRANSPORT_WS_PROTOCOL);
      requests.set(ws, upgradeRequest);
      // Deno has no per-message size option: a frame over the bound closes the connection.
      socket.addEventListener("message", (m) => {
        if (typeof m.data === "string" ? m.data.length > API_LIMITS.requestBytes : (m.data as ArrayBuffer).byteLength > API_LIMITS.requestBytes) socket.close(1009, "message too big");
      });
      handle(ws);
      return response;
    }
    const bounded = await boundedBody(request, API_LIMITS.requestBytes);
    return bounded instanceof Response ? bounded : app.fetch(bounded);
  });
  const { port, hostname } = server.addr;
  const url = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${port}`;
  return {
    url,
    port,
    service,
    async stop() {
      await service.jobs.close();
      await server.shutdown();
      await service.close();
    },
  };
}
