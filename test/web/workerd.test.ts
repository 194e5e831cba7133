/**
 * The edge worker bundle (`bun run build:worker`) in workerd, as Cloudflare Workers would run it:
 * module syntax, nodejs_compat, onnxruntime-web on one WASM thread fed its precompiled module, the
 * model bundled. Its image for a pipeline + seed + steps must be Bun/CPU's: the float32 image within
 * 1e-3 per pixel (TABLE.bound), the PNG within one 8-bit level. Skipped without the workerd binary outside CI
 * (npm's `workerd` package ships it); under CI its absence is a failure.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { decode } from "fast-png";
import { MemoryJobStore } from "../../api/adapters/memory.ts";
import { ApiService } from "../../api/service.ts";
import { toRgb8 } from "../../core/png.ts";
import type { Tensor } from "../../core/tensor.ts";
import { buildWorker } from "../../api/cli/build-worker.ts";
import { reportRow, TABLE } from "../runtimes/determinism.ts";
import { diffgraph, maxAbsDiff } from "../helpers.ts";

const workerd = [`node_modules/@cloudflare/workerd-${process.platform}-${process.arch === "x64" ? "64" : process.arch}/bin/workerd`].find(existsSync);
if (!workerd && !process.env.CI) console.warn("workerd binary missing (npm install workerd): the edge worker test is skipped");
const run = !!workerd || !!process.env.CI;

function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

const INPUT = TABLE.input;

describe.skipIf(!run)("edge worker in workerd", () => {
  let proc: ReturnType<typeof Bun.spawn>;
  let base = "";
  let build: Awaited<ReturnType<typeof buildWorker>>;
  let ref: Tensor;
  const rss: Record<string, number> = {};
  const vmHWM = () => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${proc.pid}/status`, "utf8"))?.[1] ?? NaN) * 1024;

  beforeAll(async () => {
    if (!workerd) throw new Error("workerd binary missing under CI: npm ci installs the workerd package (its @cloudflare/workerd-linux-64 binary)");
    build = await buildWorker();
    const port = freePort();
    base = `http://127.0.0.1:${port}`;
    proc = Bun.spawn([workerd, "serve", `${build.out}/config.capnp`, "--socket-addr", `http=127.0.0.1:${port}`], { stdout: "pipe", stderr: "pipe" });
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/pipelines`)).ok) break;
      } catch {}
      if (i > 100 || proc.exitCode !== null) throw new Error(`workerd did not start: ${await new Response(proc.stderr as ReadableStream).text()}`);
      await Bun.sleep(100);
    }
    rss.started = vmHWM();
    const dg = await diffgraph();
    ref = (await (await dg.openPipeline(TABLE.pipeline)).run(INPUT)).images;
    await dg.dispose();
  }, 120_000);
  afterAll(() => {
    proc?.kill();
  });

  test("host detection under nodejs_compat says browser (a web host), and the bundled pipelines are listed", async () => {
    const r = (await (await fetch(`${base}/pipelines`)).json()) as { pipelines: string[]; host: string };
    expect(r.host).toBe("browser");
    expect(r.pipelines).toContain("emoji-64");
  });

  test("GET /generate → the Bun/CPU image (float32 within 1e-3, PNG within one level)", async () => {
    const q = new URLSearchParams({ prompt: INPUT.prompt, seed: String(INPUT.seed), steps: String(INPUT.steps), pipeline: TABLE.pipelineName });
    const t0 = performance.now();
    const raw = await fetch(`${base}/generate?${q}&format=f32`);
    expect(raw.status, await raw.clone().text().catch(() => "")).toBe(200);
    const first = performance.now() - t0;
    const data = new Float32Array(await raw.arrayBuffer());
    expect(raw.headers.get("x-diffgraph-dims")).toBe("1,3,64,64");
    const f32Diff = maxAbsDiff(data, ref.data);
    expect(f32Diff).toBeLessThan(TABLE.bound);

    const res = await fetch(`${base}/generate?${q}`);
    expect(res.headers.get("content-type")).toBe("image/png");
    const png = decode(new Uint8Array(await res.arrayBuffer()));
    expect([png.width, png.height, png.channels, png.depth]).toEqual([64, 64, 3, 8]);
    const levels = maxAbsDiff(png.data as Uint8Array, toRgb8(ref).data);
    expect(levels).toBeLessThanOrEqual(1);
    const ms = Number(res.headers.get("x-diffgraph-ms"));
    rss.peak = vmHWM();
    reportRow("workerd", "wasm", f32Diff, ms / INPUT.steps);
    console.log(
      `workerd: max |Δ| vs Bun/CPU ${f32Diff.toExponential(2)} (float32), ${levels} level(s) (PNG); ${(ms / INPUT.steps).toFixed(1)} ms/step warm ` +
        `(${INPUT.steps} steps, first request incl. load ${first.toFixed(0)} ms); workerd VmHWM ${(rss.started! / 2 ** 20).toFixed(0)} MiB at start → ${(rss.peak / 2 ** 20).toFixed(0)} MiB after generating ` +
        `(+${((rss.peak - rss.started!) / 2 ** 20).toFixed(0)} MiB); worker.js ${(build.bundleBytes / 1e6).toFixed(2)} MB, ort wasm ${(build.wasmBytes / 1e6).toFixed(2)} MB, model files ${(build.filesBytes / 1e6).toFixed(2)} MB`,
    );
  }, 120_000);

  test("the default pipeline is emoji-64-fp16 (half the bytes), and it draws Bun/CPU's emoji-64-fp16 image", async () => {
    const list = (await (await fetch(`${base}/pipelines`)).json()) as { defaultPipeline: string };
    expect(list.defaultPipeline).toBe("emoji-64-fp16");
    const dg = await diffgraph();
    const want = (await (await dg.openPipeline("pipelines/emoji-64-fp16.json")).run(INPUT)).images;
    await dg.dispose();
    const q = new URLSearchParams({ prompt: INPUT.prompt, seed: String(INPUT.seed), steps: String(INPUT.steps), format: "f32" });
    const res = await fetch(`${base}/generate?${q}`);
    expect(res.status).toBe(200);
    const d = maxAbsDiff(new Float32Array(await res.arrayBuffer()), want.data);
    console.log(`workerd emoji-64-fp16: max |Δ| vs Bun/CPU ${d.toExponential(2)}; ${(Number(res.headers.get("x-diffgraph-ms")) / INPUT.steps).toFixed(1)} ms/step; workerd VmHWM ${(vmHWM() / 2 ** 20).toFixed(0)} MiB`);
    expect(d).toBeLessThan(TABLE.bound);
  }, 120_000);

  test("the API's read side over GraphQL: pipelines, plugins and the schedule Bun's API gives; mutations refused", async () => {
    const gql = async (query: string) => (await (await fetch(`${base}/graphql`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ query }) })).json()) as any;
    const r = await gql(`{ pipelines { name isDefault scheduler } plugins(kind: SCHEDULER) { name } schedule(steps: 5, pipeline: "emoji-64") { scheduler timesteps } }`);
    expect(r.errors).toBeUndefined();
    expect(r.data.pipelines.map((p: { name: string }) => p.name).sort()).toEqual(["emoji-64", "emoji-64-fp16"]);
    expect(r.data.pipelines.find((p: { isDefault: boolean }) => p.isDefault).name).toBe("emoji-64-fp16");
    expect(r.data.plugins.map((p: { name: string }) => p.name)).toContain("dpmpp-2m");
    const dg = await diffgraph();
    const service = await ApiService.create({ diffgraph: dg, store: new MemoryJobStore(), pipelineFiles: ["pipelines/emoji-64.json"], log: () => {} });
    try {
      const want = await service.schedule({ steps: 5, pipeline: "emoji-64" });
      expect(r.data.schedule).toEqual({ scheduler: want.scheduler, timesteps: [...want.timesteps] });
    } finally {
      await service.close();
    }
    const m = await gql(`mutation { cancelJob(id: "x") { id } }`);
    expect(m.errors[0].message).toContain("serves queries only");
  }, 120_000);

  test("bad requests are 400 with the reason", async () => {
    const noPrompt = await fetch(`${base}/generate`);
    expect(noPrompt.status).toBe(400);
    expect(((await noPrompt.json()) as { error: string }).error).toContain("prompt");
    const unknown = await fetch(`${base}/generate?prompt=x&pipeline=nope`);
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: string }).error).toContain('unknown pipeline "nope"');
    const badSeed = await fetch(`${base}/generate?prompt=x&seed=1.5`);
    expect(badSeed.status).toBe(400);
    const tooMany = await fetch(`${base}/generate?prompt=x&steps=100000&pipeline=emoji-64`);
    expect(tooMany.status).toBe(400);
    expect(((await tooMany.json()) as { error: string }).error).toContain("steps");
  }, 60_000);
});
