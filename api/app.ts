/**
 * The HTTP app as a plain fetch handler (`app.fetch(request)`): Hono routes for health, images and
 * the playground, and graphql-yoga at /graphql (GraphiQL in browsers, SSE for subscriptions).
 * It sees only Web `Request`/`Response`; `api/server.ts` hosts it on Bun and adds WebSocket.
 */
import { createYoga, type Plugin, type YogaServerInstance } from "graphql-yoga";
import { getOperationAST } from "graphql";
import { Hono } from "hono";
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
}

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
  const rule = queryLimitsRule({ maxDepth: API_LIMITS.queryDepth, maxCost: API_LIMITS.queryCost, defaultPage: API_LIMITS.jobsPageSize });
  return {
    onValidate({ addValidationRule }) {
      addValidationRule(rule);
    },
  };
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
    plugins: [useQueryLimits(), useApiKey(service.apiKey), ...(options.plugins ?? [])],
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
    const png = service.jobs.previewImage(id)?.png ?? (await service.jobs.store.readImage(id));
    if (!png) return c.json({ error: `no image ${id}` }, 404);
    // Final images never change; preview frames are immutable too once made.
    return c.body(png as Uint8Array<ArrayBuffer>, 200, { "content-type": "image/png", "cache-control": "public, max-age=31536000, immutable" });
  });
  app.get("/", (c) => c.html(playgroundHtml));
  app.on(["GET", "POST", "OPTIONS"], "/graphql/*", (c) => yoga.fetch(c.req.raw));
  app.on(["GET", "POST", "OPTIONS"], "/graphql", (c) => yoga.fetch(c.req.raw));
  return { app, yoga };
}
