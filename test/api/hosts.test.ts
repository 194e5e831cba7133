/**
 * The same app on each host: the transport contract suite (SSE and WebSocket) against a server that
 * `deno run -A api/serve.ts` hosts (Deno.serve, Deno.upgradeWebSocket, node:sqlite, onnxruntime-web
 * on WASM) in a child process. sse.test.ts and ws.test.ts run it against the Bun host.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { pipelinesFolder, startServerProcess } from "../robustness/server-process.ts";
import { sseTransport, wsTransport } from "./helpers.ts";
import { runTransportSuite } from "./transport.case.ts";

const pipelines = pipelinesFolder(["tiny-sd"]);
afterAll(() => rmSync(pipelines, { recursive: true, force: true }));

const startDeno = (o: { concurrency: number }) =>
  startServerProcess({ runtime: "deno", pipelinesDir: pipelines, args: ["--concurrency", String(o.concurrency), "--provider", "wasm"] });

describe("Deno host", () => {
  test("serves GraphQL, reports its host and keeps records in node:sqlite across a restart", async () => {
    const s = await startDeno({ concurrency: 1 });
    expect(s.log()).toContain("host: Deno");
    const g = await s.gql('mutation { generate(input: {prompt: "deno", steps: 2, scheduler: "ddim"}) { id } }');
    const id = g.data.generate.id;
    for (let i = 0; i < 200 && (await s.gql(`{ job(id: "${id}") { status } }`)).data.job.status !== "SUCCEEDED"; i++) await Bun.sleep(50);
    await s.close(true);
    const again = await startServerProcess({ runtime: "deno", dataDir: s.dataDir, pipelinesDir: pipelines, args: ["--provider", "wasm"] });
    try {
      const j = (await again.gql(`{ job(id: "${id}") { status images { url } } }`)).data.job;
      expect(j.status).toBe("SUCCEEDED");
      const png = await fetch(again.url + j.images[0].url);
      expect(png.status).toBe(200);
      expect(png.headers.get("content-type")).toBe("image/png");
    } finally {
      await again.close();
    }
  }, 120_000);
});

test("Deno host: request bodies over the bound are refused, declared or chunked, and the server stays up", async () => {
  const s = await startDeno({ concurrency: 1 });
  try {
    const { API_LIMITS } = await import("../../api/service.ts");
    const big = new Uint8Array(API_LIMITS.requestBytes + 1024).fill(0x20);
    const declared = await fetch(`${s.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: big });
    expect(declared.status).toBe(413);
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 13; i++) c.enqueue(new Uint8Array(2 ** 20).fill(0x20));
        c.close();
      },
    });
    const streamed = await fetch(`${s.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: chunked });
    expect(streamed.status).toBe(413);
    const small = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode(JSON.stringify({ query: "{ __typename }" })));
        c.close();
      },
    });
    const ok = await fetch(`${s.url}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: small });
    expect(await ok.json()).toEqual({ data: { __typename: "Query" } });
  } finally {
    await s.close();
  }
}, 60_000);

describe("Deno host: subscriptions over Server-Sent Events", () => runTransportSuite(sseTransport, startDeno));
describe("Deno host: subscriptions over WebSocket", () => runTransportSuite(wsTransport, startDeno));
