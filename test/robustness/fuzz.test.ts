/**
 * Property-based fuzzing of a real server process (fast-check) over HTTP, SSE and WebSocket.
 * Every answer must come within a deadline, never be a 5xx, and never contain a server path; after
 * each property the process must still be up and answer /healthz. The seed is printed, and
 * FUZZ_SEED=<n> replays a run (FUZZ_RUNS scales the number of cases).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { rmSync } from "node:fs";
import { resolve } from "node:path";
import { pipelinesFolder, startServerProcess, type ServerProcess } from "./server-process.ts";

const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SCALE = Number(process.env.FUZZ_RUNS ?? 1);
const KEY = "fuzz-secret-key";
/** A hang detector, not a speed bound: far above any answer's normal time on a busy 2-core machine. */
const DEADLINE_MS = 15_000;
console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED} bun test test/robustness/fuzz.test.ts)`);

let server: ServerProcess;
let pipelines: string;
const counts = { http: 0, sse: 0, ws: 0, wsMessages: 0 };
/** HTTP answers by status, to see the fuzzer reach past the first checks (200s with data, 4xx of each kind). */
const statuses = new Map<number, number>();
/** Strings that must never reach a client: where the server and its data live, runtime internals. */
let forbidden: string[] = [];

function leaks(body: string): string | undefined {
  return forbidden.find((f) => body.includes(f));
}

async function withDeadline<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${DEADLINE_MS} ms`)), DEADLINE_MS)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer!);
  }
}

/** Clear what fuzzed mutations queued, so a flood of valid jobs cannot starve the next property. */
async function drain(): Promise<void> {
  const post = (query: string) =>
    fetch(`${server.url}/graphql`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` }, body: JSON.stringify({ query }) }).then((r) => r.json() as Promise<any>);
  await post("mutation { clearQueue { id } }");
  const running = await post("{ jobs(status: [RUNNING], first: 10) { edges { node { id } } } }");
  for (const e of running.data?.jobs.edges ?? []) await post(`mutation { cancelJob(id: "${e.node.id}") { id } }`);
}

async function expectHealthy(): Promise<void> {
  expect(server.alive()).toBe(true);
  const res = await withDeadline("/healthz", fetch(`${server.url}/healthz`));
  expect(res.status).toBe(200);
}

// ---- arbitraries -------------------------------------------------------------------------------
const weirdNumber = fc.oneof(
  fc.integer({ min: -5, max: 70 }),
  fc.constantFrom(0, -1, 1, 7, 8, 9, 64, 1000, 1001, 2048, 2 ** 31, -(2 ** 31), 2 ** 53, 1e308, 0.5, -0.0),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const weirdString = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom("", "../pipelines/tiny-sd.json", "/etc/passwd", "file:///etc/passwd", "tiny-sd", "ddim", "euler", "\u0000", "😀".repeat(300), "x".repeat(1200), "${process.env}", "<script>alert(1)</script>"),
);
const graphqlString = weirdString.map((s) => JSON.stringify(s));
const jsonLiteral: fc.Arbitrary<string> = fc.letrec<{ v: string }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    weirdNumber.map(String),
    graphqlString,
    fc.constantFrom("true", "null", "false"),
    fc.array(tie("v"), { maxLength: 3 }).map((a) => `[${a.join(", ")}]`),
    fc.dictionary(fc.constantFrom("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset", "prediction_type", "timestep_spacing", "x"), tie("v"), { maxKeys: 3 }).map(
      (o) => `{${Object.entries(o).map(([k, v]) => `${k}: ${v}`).join(", ")}}`,
    ),
  ),
})).v;

const inputFields = fc.dictionary(
  fc.constantFrom("prompt", "negativePrompt", "steps", "guidanceScale", "seed", "batchSize", "height", "width", "scheduler", "pipeline", "image", "strength", "previewEvery", "priority", "bogus"),
  fc.oneof(weirdNumber.map(String), graphqlString, fc.constantFrom("null", "true", "[1]", "{a: 1}")),
  { maxKeys: 6 },
);
const generateField = inputFields.map((f) => {
  // Small, valid-looking jobs mostly: steps and sizes of valid ones stay cheap.
  const body = Object.entries({ prompt: '"x"', steps: "2", ...f }).map(([k, v]) => `${k}: ${v}`).join(", ");
  return `generate(input: {${body}}) { id status error params { steps height } }`;
});
const idArg = fc.oneof(fc.string({ unit: fc.constantFrom(..."0123456789abcdef"), minLength: 24, maxLength: 24 }), weirdString).map((s) => JSON.stringify(s));
const queryField = fc.oneof(
  fc.constant("pipelines { name isDefault scheduler schedulerConfig defaults { steps height } nodes { name use } batching { calls } }"),
  fc.constant("plugins { name kind configSchema }"),
  fc.constant("models { name pipelines }"),
  fc.tuple(fc.option(weirdString), weirdNumber, fc.option(jsonLiteral), fc.option(weirdString)).map(
    ([s, steps, config, p]) =>
      `schedule(steps: ${Number.isInteger(steps) && Math.abs(steps) < 2 ** 31 ? steps : 10}${s !== null ? `, scheduler: ${JSON.stringify(s)}` : ""}${config !== null ? `, config: ${config}` : ""}${p !== null ? `, pipeline: ${JSON.stringify(p)}` : ""}) { scheduler timesteps sigmas }`,
  ),
  idArg.map((id) => `job(id: ${id}) { id status error errorCode images { url dataUrl } }`),
  fc.tuple(weirdNumber, fc.option(weirdString)).map(([n, after]) => `jobs(first: ${Number.isInteger(n) && Math.abs(n) < 2 ** 31 ? n : 5}${after !== null ? `, after: ${JSON.stringify(after)}` : ""}) { totalCount edges { cursor node { id } } pageInfo { endCursor hasNextPage } }`),
);
const mutationField = fc.oneof(generateField, idArg.map((id) => `cancelJob(id: ${id}) { id status }`), fc.constant("clearQueue { id }"));
const document = fc.oneof(
  fc.array(queryField, { minLength: 1, maxLength: 3 }).map((fs) => `{ ${fs.map((f, i) => `a${i}: ${f}`).join(" ")} }`),
  fc.array(mutationField, { minLength: 1, maxLength: 3 }).map((fs) => `mutation { ${fs.map((f, i) => `m${i}: ${f}`).join(" ")} }`),
  fc.string({ maxLength: 200 }),
  // Structural abuse: deep nesting, fragment chains, many aliases.
  fc.integer({ min: 1, max: 3000 }).map((n) => "{" + " jobs { edges { node {".repeat(n % 300) + " id" + " } } }".repeat(n % 300) + " }"),
  fc.integer({ min: 2, max: 40 }).map((n) => {
    let f = "fragment F0 on Query { pipelines { name } }\n";
    for (let i = 1; i <= n; i++) f += `fragment F${i} on Query { ...F${i - 1} ...F${i - 1} }\n`;
    return `{ ...F${n} }\n${f}`;
  }),
  fc.integer({ min: 1, max: 200 }).map((n) => `mutation { ${Array.from({ length: n }, (_, i) => `g${i}: clearQueue { id }`).join(" ")} }`),
  fc.constant("subscription { jobProgress(id: \"x\") { __typename } }"),
);
const variables = fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 4 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 3 })));

// ---- properties --------------------------------------------------------------------------------
// The same properties against each host.
for (const runtime of ["bun", "deno"] as const)
  describe(`fuzzing a live server on ${runtime}`, () => {
  const runs = (n: number) => Math.max(10, Math.round(n * SCALE));
  beforeAll(async () => {
    pipelines = pipelinesFolder(["tiny-sd"]);
    server = await startServerProcess({
      runtime,
      pipelinesDir: pipelines,
      args: ["--concurrency", "1", "--max-queue", "4"],
      env: { DIFFGRAPH_API_KEY: KEY },
    });
    forbidden = [resolve("."), server.dataDir, pipelines, "node_modules", "onnxruntime_src", "/tmp/"];
  }, 90_000);

  afterAll(async () => {
    console.log(`fuzzed (${runtime} host): ${counts.http} HTTP requests, ${counts.sse} SSE subscriptions, ${counts.ws} WebSocket connections (${counts.wsMessages} messages); HTTP statuses ${JSON.stringify(Object.fromEntries(statuses))}; seed ${SEED}`);
    await server?.stop();
    rmSync(server?.dataDir ?? "/nonexistent", { recursive: true, force: true });
    rmSync(pipelines, { recursive: true, force: true });
    for (const k of Object.keys(counts) as (keyof typeof counts)[]) counts[k] = 0;
    statuses.clear();
  });

  test("HTTP: GraphQL documents, variables, methods, content types and raw bodies", async () => {
    const weighted = <T,>(common: T, ...rare: T[]) => fc.oneof({ weight: 6, arbitrary: fc.constant(common) }, { weight: 1, arbitrary: fc.constantFrom(...rare) });
    const request = fc.record({
      method: weighted("POST", "GET", "GET", "PUT", "OPTIONS", "DELETE"),
      path: weighted("/graphql", "/graphql/stream", "/healthz", "/images/../../etc/passwd", "/images/aaaaaaaaaaaaaaaaaaaaaaaa-0.png", "/images/%2e%2e%2fjobs.sqlite", "/", "/nope"),
      contentType: weighted("application/json", "application/graphql-response+json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/json; charset=utf-16"),
      auth: fc.boolean(),
      origin: fc.constantFrom(undefined, undefined, "https://evil.example", "null"),
      doc: document,
      vars: variables,
      raw: fc.option(fc.oneof(fc.string({ maxLength: 100 }), fc.constantFrom("{", "[]", "null", '{"query": 5}', '{"query": "{__typename}", "variables": "x"}', '{"query": "{__typename}", "extensions": [1]}')), { freq: 4 }),
    });
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        counts.http++;
        const headers: Record<string, string> = { accept: "application/json" };
        if (r.contentType) headers["content-type"] = r.contentType;
        if (r.auth) headers.authorization = `Bearer ${KEY}`;
        if (r.origin) headers.origin = r.origin;
        let url = `${server.url}${r.path}`;
        let body: string | undefined;
        if (r.method === "GET") {
          const qs = new URLSearchParams({ query: r.doc });
          if (r.vars !== undefined) qs.set("variables", r.raw ?? JSON.stringify(r.vars));
          url += `?${qs}`;
        } else if (r.method !== "OPTIONS") body = r.raw ?? JSON.stringify({ query: r.doc, variables: r.vars });
        const res = await withDeadline(`${r.method} ${r.path}`, fetch(url, { method: r.method, headers, body }));
        const text = await withDeadline("body", res.text());
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        expect(res.status).toBeLessThan(500);
        expect(leaks(text)).toBeUndefined();
      }),
      { seed: SEED, numRuns: runs(600), endOnFailure: true },
    );
    await drain();
    await expectHealthy();
  }, 300_000);

  test("SSE: subscriptions with fuzzed documents and ids", async () => {
    const sub = fc.record({ id: idArg, doc: fc.option(document, { freq: 3 }), distinct: fc.boolean() });
    await fc.assert(
      fc.asyncProperty(sub, async (s) => {
        counts.sse++;
        const query = s.doc ?? `subscription { jobProgress(id: ${s.id}) { __typename ... on JobFinished { job { id status } } } }`;
        const ac = new AbortController();
        const res = await withDeadline("SSE", fetch(`${server.url}/graphql${s.distinct ? "/stream" : ""}`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify({ query }),
          signal: ac.signal,
        }));
        expect(res.status).toBeLessThan(500);
        // Read what comes within a short window, then hang up (a live subscription may never end).
        const reader = res.body!.getReader();
        let text = "";
        const until = Date.now() + 300;
        try {
          while (Date.now() < until) {
            const chunk = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), 100))]);
            if (!chunk || chunk.done) {
              if (chunk?.done) break;
              continue;
            }
            text += new TextDecoder().decode(chunk.value);
          }
        } finally {
          ac.abort();
        }
        expect(leaks(text)).toBeUndefined();
      }),
      { seed: SEED + 1, numRuns: runs(60), endOnFailure: true },
    );
    await expectHealthy();
  }, 300_000);

  test("WebSocket: malformed frames, out-of-order protocol messages, fuzzed operations", async () => {
    const frame = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.constantFrom('{"type":"ping"}', '{"type":"pong"}', '{"type":"connection_init"}', '{"type":"complete","id":"1"}', '{"type":"subscribe"}', '{"type":"subscribe","id":"1","payload":{"query":5}}', "[".repeat(5000)),
      fc.tuple(fc.string({ maxLength: 4 }), document, variables).map(([id, query, vars]) => JSON.stringify({ type: "subscribe", id: id || "1", payload: { query, variables: vars } })),
    );
    const session = fc.record({ init: fc.boolean(), params: fc.option(fc.jsonValue({ maxDepth: 2 })), frames: fc.array(frame, { minLength: 1, maxLength: 6 }) });
    await fc.assert(
      fc.asyncProperty(session, async (s) => {
        counts.ws++;
        const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}/graphql`, "graphql-transport-ws");
        let text = "";
        const closed = new Promise<void>((r) => (ws.onclose = () => r()));
        ws.onmessage = (m) => (text += String(m.data));
        await withDeadline("ws open", new Promise<void>((r, j) => ((ws.onopen = () => r()), (ws.onerror = () => j(new Error("ws error"))))));
        if (s.init) ws.send(JSON.stringify({ type: "connection_init", ...(s.params !== null ? { payload: s.params } : {}) }));
        for (const f of s.frames) {
          if (ws.readyState !== WebSocket.OPEN) break;
          ws.send(f);
          counts.wsMessages++;
        }
        await Promise.race([closed, new Promise((r) => setTimeout(r, 150))]);
        ws.close();
        await withDeadline("ws close", closed);
        expect(leaks(text)).toBeUndefined();
      }),
      { seed: SEED + 2, numRuns: runs(200), endOnFailure: true },
    );
    await drain();
    await expectHealthy();
  }, 300_000);
});
