import { describe, expect, test } from "bun:test";
import { wsTransport } from "./helpers.ts";
import { runTransportSuite } from "./transport.case.ts";

describe("subscriptions over WebSocket (graphql-ws client)", () => runTransportSuite(wsTransport));

describe("API key over WebSocket", () => {
  test("mutations over graphql-ws need connectionParams.apiKey when the server has a key", async () => {
    const { createClient } = await import("graphql-ws");
    const { startTestServer, GENERATE } = await import("./helpers.ts");
    const server = await startTestServer({ apiKey: "s3cret" });
    const run = async (connectionParams: Record<string, unknown>) => {
      const client = createClient({ url: server.url.replace(/^http/, "ws") + "/graphql", connectionParams, retryAttempts: 0 });
      try {
        for await (const r of client.iterate({ query: GENERATE, variables: { input: { prompt: "ws", steps: 1, scheduler: "ddim" } } })) return r;
      } finally {
        await client.dispose();
      }
    };
    try {
      const denied = await run({});
      expect(denied?.errors?.[0]?.extensions?.code).toBe("UNAUTHENTICATED");
      const allowed = await run({ apiKey: "s3cret" });
      expect(allowed?.errors).toBeUndefined();
      expect((allowed?.data as any).generate.status).toBe("QUEUED");
      await server.service.jobs.idle();
    } finally {
      await server.close();
    }
  });
});

describe("WebSocket origin check", () => {
  test("with CORS origins configured, a WebSocket from another origin is refused", async () => {
    const { startTestServer } = await import("./helpers.ts");
    const server = await startTestServer({ corsOrigins: ["https://ok.test"] });
    const open = (origin: string) =>
      new Promise<boolean>((resolve) => {
        const ws = new WebSocket(server.url.replace(/^http/, "ws") + "/graphql", { protocols: ["graphql-transport-ws"], headers: { origin } } as never);
        ws.onopen = () => (ws.close(), resolve(true));
        ws.onerror = () => resolve(false);
      });
    try {
      expect(await open("https://evil.test")).toBe(false);
      expect(await open("https://ok.test")).toBe(true);
    } finally {
      await server.close();
    }
  });
});
