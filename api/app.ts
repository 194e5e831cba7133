/**
 * The HTTP app as a plain fetch handler (`app.fetch(request)`): Hono routes for health, images and
 * the playground, and graphql-yoga at /graphql (GraphiQL in browsers, SSE for subscriptions).
 * It sees only Web `Request`/`Response`; the host files (`api/host-bun.ts`, `api/host-deno.ts`) serve it and add WebSocket.
 */
import { useCSRFPrevention } from "@graphql-yoga/plugin-csrf-prevention";
import { createYoga, type Plugin, type YogaServerInstance } from "graphql-yoga";
import { getOperationAST, parse } from "graphql";
import { Hono, type Context } from "hono";
import { cors } from "hono/cors";
import { apiError, ErrorCode } from "./errors.ts";
import { IMAGE_ID } from "./jobs.ts";
import { queryLimitsRule } from "./limits.ts";
import { playgroundHtml } from "./playground.ts";
import { schema, type ApiContext } from "./schema.ts";
import { API_LIMITS, type ApiService } from "./service.ts";

export interface AppOptions {
  readonly service: ApiService;
  /** Allowed CORS origins ("*" for any); none: no CORS headers. */
  readonly corsOrigins?: readonly string[] | "*";
  /** Prefix for image URLs in responses (default "": same-origin relative URLs). */
  readonly publicUrl?: string;
  /** Extra yoga plugins (benchmarks, tracing). */
  readonly plugins?: Plugin[];
  /** The web build's files (dist/web) for /local, the page that generates in the browser; the host hands in a reader. */
  readonly localFiles?: (path: string) => Promise<Uint8Array | undefined>;
}

const STATIC_TYPES: Record<string, string> = { html: "text/html; charset=utf-8", js: "text/javascript", mjs: "text/javascript", json: "application/json", wasm: "application/wasm", onnx: "application/octet-stream", png: "image/png" };

/** The key a request presents: `Authorization: Bearer <key>`, `x-api-key`, or WebSocket `connectionParams.apiKey`. */
function presentedKey(request: Request | undefined, connectionParams: Record<string, unknown> | undefined): string | undefined {
  const fromParams = connectionParams?.apiKey ?? connectionParams?.authorization;
  if (typeof fromParams === "string") return fromParams.replace(/^Bearer\s+/i, "");
  const auth = request?.headers.get("authorization");
  if (auth) return auth.replace(/^Bearer\s+/i, "");
  return request?.headers.get("x-api-key") ?? undefined;
}

function timingSafeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return d === 0;
}

/** Mutations need the API key when the server has one; queries and subscriptions stay open. */
function useApiKey(key: string | undefined): Plugin<{ apiKey?: string }> {
  return {
    onExecute({ args, setResultAndStopExecution }) {
      if (!key) return;
      const op = getOperationAST(args.document, args.operationName);
      if (op?.operation !== "mutation") return;
      const given = (args.contextValue as { apiKey?: string }).apiKey;
      if (!given || !timingSafeEqual(given, key)) {
        setResultAndStopExecution({
          errors: [apiError(ErrorCode.UNAUTHENTICATED, "mutations need the API key: send Authorization: Bearer <DIFFGRAPH_API_KEY>")],
        });
      }
    },
  };
}

function useQueryLimits(): Plugin {
  const rule = queryLimitsRule({
    maxDepth: API_LIMITS.queryDepth,
    maxCost: API_LIMITS.queryCost,
    defaultPage: API_LIMITS.jobsPageSize,
    maxRootFields: API_LIMITS.rootFields,
  });
  return {
    // graphql-js stops parsing past `maxTokens`, so a huge or deeply nested document is refused
    // before it is built (the parser recurses once per nesting level).
    onParse({ setParseFn }) {
      setParseFn((source, options) => parse(source, { ...options, maxTokens: API_LIMITS.queryTokens }));
    },
    onValidate({ addValidationRule }) {
      addValidationRule(rule);
    },
  };
}

/**
 * Cross-site request forgery: a page on another site can make a browser send a "simple" POST
 * (form-encoded, multipart or text/plain bodies need no CORS preflight) that would run a mutation.
 * yoga's plugin refuses such POSTs unless they carry a header only scripts allowed by CORS can set.
 * GET is left to yoga, which never runs mutations over GET, so EventSource subscriptions still work.
 */
function useCsrfOnPost(): Plugin {
  const csrf = useCSRFPrevention();
  return {
    onRequestParse(payload) {
      if (payload.request.method !== "GET") return csrf.onRequestParse!(payload);
    },
  };
}

/**
 * Whether a browser request from `Origin` may use the API: same-origin, or listed by the operator
 * (`corsOrigins`, "*" for any). Requests without an Origin header (curl, servers) are not from a
 * browser page and pass. Browsers apply no CORS to WebSocket, so the host checks upgrades with this.
 */
export function originAllowed(request: Request, corsOrigins: AppOptions["corsOrigins"]): boolean {
  const origin = request.headers.get("origin");
  if (!origin || corsOrigins === "*") return true;
  if (corsOrigins?.includes(origin)) return true;
  const host = request.headers.get("host");
  try {
    const o = new URL(origin);
    return o.host === (host ?? new URL(request.url).host);
  } catch {
    return false;
  }
}

/** yoga answers 500 when GET's `variables` or `extensions` is not JSON; this is the client's fault. */
function badGetParams(request: Request): string | null {
  if (request.method !== "GET") return null;
  const params = new URL(request.url).searchParams;
  for (const key of ["variables", "extensions"]) {
    const raw = params.get(key);
    if (raw === null || raw === "") continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch {
      return `${key}: not valid JSON`;
    }
    if (v !== null && (typeof v !== "object" || Array.isArray(v))) return `${key}: must be a JSON object`;
  }
  return null;
}

export type ApiYoga = YogaServerInstance<Record<string, unknown>, ApiContext>;

export function createYogaServer(options: AppOptions): ApiYoga {
  const { service } = options;
  return createYoga<Record<string, unknown>, ApiContext>({
    schema,
    graphqlEndpoint: "/graphql",
    graphiql: { title: "diffgraph", defaultQuery: "{\n  pipelines { name isDefault scheduler defaults { steps height width } }\n}\n" },
    landingPage: false,
    cors: false, // Hono's middleware handles CORS for every route
    healthCheckEndpoint: "/graphql/health",
    context: (initial) => {
      const i = initial as { request?: Request; upgradeRequest?: Request; connectionParams?: Record<string, unknown> };
      return { service, baseUrl: options.publicUrl ?? "", apiKey: presentedKey(i.request ?? i.upgradeRequest, i.connectionParams) };
    },
    plugins: [useCsrfOnPost(), useQueryLimits(), useApiKey(service.apiKey), ...(options.plugins ?? [])],
    logging: "warn",
  }) as ApiYoga;
}

export function createApp(options: AppOptions): { app: Hono; yoga: ApiYoga } {
  const { service } = options;
  const yoga = createYogaServer(options);
  const app = new Hono();
  if (options.corsOrigins && (options.corsOrigins === "*" || options.corsOrigins.length > 0)) {
    const origins = options.corsOrigins;
    app.use("*", cors({ origin: origins === "*" ? "*" : [...origins], allowHeaders: ["content-type", "authorization", "x-api-key"], allowMethods: ["GET", "POST", "OPTIONS"] }));
  }
  app.get("/healthz", (c) =>
    c.json({
      ok: true,
      pipelines: [...service.pipelines.keys()],
      defaultPipeline: service.defaultPipeline,
      queued: service.jobs.queueLength,
      running: service.jobs.runningCount,
      uptimeMs: Date.now() - service.startedAt,
    }),
  );
  app.get("/images/:file", async (c) => {
    const file = c.req.param("file");
    const id = file.endsWith(".png") ? file.slice(0, -4) : "";
    if (!IMAGE_ID.test(id)) return c.json({ error: "not an image id (expected /images/<job>-<i>.png or /images/<job>-s<step>-<i>.png)" }, 404);
    const png = (await service.jobs.previewImage(id))?.png ?? (await service.jobs.store.readImage(id));
    if (!png) return c.json({ error: `no image ${id}` }, 404);
    // Final images never change; preview frames are immutable too once made.
    return c.body(png as Uint8Array<ArrayBuffer>, 200, { "content-type": "image/png", "cache-control": "public, max-age=31536000, immutable" });
  });
  app.get("/", (c) => c.html(playgroundHtml));
  // /local: the client-side page; the query (?prompt=…&seed=…) starts a drawing, so keep it across the slash.
  app.get("/local", (c) => c.redirect(`/local/${new URL(c.req.url).search}`, 302));
  app.get("/local/*", async (c) => {
    const path = decodeURIComponent(new URL(c.req.url).pathname.slice("/local/".length)) || "local.html";
    const bytes = await options.localFiles?.(path);
    if (!bytes) return c.json({ error: options.localFiles ? `no file ${path} in the web build (run: bun run build:web)` : "this server serves no web build" }, 404);
    const type = STATIC_TYPES[path.slice(path.lastIndexOf(".") + 1)] ?? "application/octet-stream";
    return c.body(bytes as Uint8Array<ArrayBuffer>, 200, { "content-type": type, "cache-control": "no-cache" });
  });
  const graphql = (c: Context) => {
    const request = c.req.raw;
    if (request.method === "POST" && !originAllowed(request, options.corsOrigins)) {
      return c.json({ errors: [apiError(ErrorCode.FORBIDDEN, `origin ${request.headers.get("origin")} is not allowed (start the server with --cors to allow it)`)] }, 403);
    }
    const bad = badGetParams(request);
    if (bad) return c.json({ errors: [apiError(ErrorCode.BAD_REQUEST, bad)] }, 400);
    return yoga.fetch(request);
  };
  app.on(["GET", "POST", "OPTIONS"], "/graphql/*", graphql);
  app.on(["GET", "POST", "OPTIONS"], "/graphql", graphql);
  return { app, yoga };
}
