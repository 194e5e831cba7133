/**
 * What loading costs (issue 13, items 1–3), measured in one run so the ratios share the machine's
 * state: arms are interleaved (A B B A …) and each ratio is a median of per-pair ratios.
 *
 *   bun bench/load.ts [--repeats 9] [--pipeline pipelines/emoji-64.json] [--skip unet,cli,spin]
 *
 * - unet: the UNet's session creation (`OnnxModel.ready()`), in a fresh runtime each time: no cache
 *   (graph optimization "all" from the model), a cache miss (the same, plus writing the optimized
 *   graph) and a cache hit (reading and hashing the cached graph, optimization off).
 * - cli: wall time of a cold `bun api/cli/generate.ts` process (20 steps): cache off vs on (warm), and
 *   with `--metrics` (the CLIP towers loaded and run) vs without.
 * - spin: ms per UNet call at the CFG batch over 20 calls, with the UNet pool's spinning off (the
 *   default) vs on, after a text-encoder call as in a run.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileSource, onnxBackends } from "../core/adapters/node.ts";
import { OnnxRuntime } from "../core/onnx.ts";
import type { ThreadPolicyOptions } from "../core/threads.ts";
import { median } from "./lib/stats.ts";

const { values } = parseArgs({ options: { repeats: { type: "string" }, pipeline: { type: "string" }, skip: { type: "string" }, model: { type: "string" } } });
const repeats = Number(values.repeats ?? 9);
const pipeline = values.pipeline ?? "pipelines/emoji-64.json";
const modelDir = values.model ?? "models/emoji-64";
const skip = new Set((values.skip ?? "").split(",").filter(Boolean));
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (xs: readonly number[]) => `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)})`;

const scratch = mkdtempSync(join(tmpdir(), "dg-bench-load-"));
const source = fileSource(modelDir);

/** ms to create the UNet session in a fresh runtime. */
async function unetLoad(graphCache: string | false, threads?: ThreadPolicyOptions): Promise<{ ms: number; from: string }> {
  const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", graphCache, ...(threads ? { threads } : {}) });
  const m = await rt.load(source, "unet/model.onnx", { role: "noise-predictor" });
  const t = performance.now();
  await m.ready();
  const ms = performance.now() - t;
  const from = rt.created[0]!.from;
  await rt.dispose();
  return { ms, from };
}

if (!skip.has("unet")) {
  // onnxruntime-node itself is loaded once, before any arm.
  await unetLoad(false);
  const warmDir = join(scratch, "warm");
  await unetLoad(warmDir);
  const off: number[] = [];
  const miss: number[] = [];
  const hit: number[] = [];
  const hitRatio: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const order = i % 2 === 0 ? ["off", "hit", "miss"] : ["miss", "hit", "off"];
    const got: Record<string, number> = {};
    for (const arm of order) {
      await pause(200);
      if (arm === "off") got.off = (await unetLoad(false)).ms;
      else if (arm === "hit") {
        const r = await unetLoad(warmDir);
        if (r.from !== "cache") throw new Error("the warm cache was not used");
        got.hit = r.ms;
      } else {
        const r = await unetLoad(join(scratch, `miss-${i}`));
        if (r.from !== "model") throw new Error("a fresh cache folder was a hit");
        got.miss = r.ms;
      }
    }
    off.push(got.off!);
    miss.push(got.miss!);
    hit.push(got.hit!);
    hitRatio.push(got.hit! / got.off!);
  }
  console.log(`\nUNet session creation (${modelDir}/unet/model.onnx), ms, median (min–max) of ${repeats}:`);
  console.log(`| cache | ms | vs no cache |`);
  console.log(`|---|---|---|`);
  console.log(`| off (optimize "all" from the model) | ${fmt(off)} | ×1.00 |`);
  console.log(`| miss (optimize and write) | ${fmt(miss)} | ×${median(miss.map((m, i) => m / off[i]!)).toFixed(2)} |`);
  console.log(`| hit (read, SHA-256, optimization off) | ${fmt(hit)} | ×${median(hitRatio).toFixed(2)} |`);
}

/** Wall ms of one cold CLI process. */
async function cli(args: readonly string[], env: Record<string, string>): Promise<number> {
  const t = performance.now();
  const p = Bun.spawn([process.execPath, "api/cli/generate.ts", "--prompt", "red heart", "--steps", "20", "--seed", "7", "--provider", "cpu", "--pipeline", pipeline, "--out", join(scratch, "out.png"), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
  const code = await p.exited;
  const ms = performance.now() - t;
  if (code !== 0) throw new Error(`generate ${args.join(" ")} exited ${code}: ${await new Response(p.stderr).text()}`);
  return ms;
}

if (!skip.has("cli")) {
  const dir = join(scratch, "cli-cache");
  await cli([], { DIFFGRAPH_CACHE_DIR: dir }); // fills the cache
  const arms: Record<string, { args: string[]; env: Record<string, string> }> = {
    "cache off": { args: [], env: { DIFFGRAPH_CACHE_DIR: "off" } },
    "cache warm": { args: [], env: { DIFFGRAPH_CACHE_DIR: dir } },
    "cache warm, --metrics": { args: ["--metrics"], env: { DIFFGRAPH_CACHE_DIR: dir } },
  };
  const ms: Record<string, number[]> = Object.fromEntries(Object.keys(arms).map((k) => [k, []]));
  const names = Object.keys(arms);
  for (let i = 0; i < repeats; i++) {
    for (const name of i % 2 === 0 ? names : [...names].reverse()) {
      await pause(300);
      ms[name]!.push(await cli(arms[name]!.args, arms[name]!.env));
    }
  }
  const ratio = (a: string, b: string) => median(ms[a]!.map((x, i) => x / ms[b]![i]!)).toFixed(2);
  console.log(`\ncold \`bun api/cli/generate.ts\` (${pipeline}, 20 steps), wall ms, median (min–max) of ${repeats}:`);
  console.log(`| arm | ms | vs cache off |`);
  console.log(`|---|---|---|`);
  for (const name of names) console.log(`| ${name} | ${fmt(ms[name]!)} | ×${ratio(name, "cache off")} |`);
}

if (!skip.has("spin")) {
  const unetIn = (b: number) => ({
    sample: { dims: [b, 4, 8, 8], data: new Float32Array(b * 256).fill(0.1) },
    timestep: { dims: [b], data: new Float32Array(b).fill(500) },
  });
  async function perCall(spinning: boolean): Promise<number> {
    const rt = new OnnxRuntime({ backends: onnxBackends, executionProvider: "cpu", graphCache: false, threads: { spinning: { noisePredictor: spinning } } });
    const unet = await (await rt.load(source, "unet/model.onnx", { role: "noise-predictor" })).ready();
    const text = await (await rt.load(source, "text_encoder/model.onnx")).ready();
    const ids = text.inputs[0]!;
    // The tokenizer pads to the text encoder's positions (emoji-64: 16; SD: 77).
    const seq = typeof ids.shape[1] === "number" ? ids.shape[1] : ((JSON.parse(readFileSync(join(modelDir, "text_encoder/config.json"), "utf8")) as { max_position_embeddings?: number }).max_position_embeddings ?? 77);
    const states = (await text.run({ [ids.name]: { dims: [2, seq], ints: new Array(2 * seq).fill(1) } }))[text.outputs[0]!.name]!;
    const feeds = { ...unetIn(2), encoder_hidden_states: states };
    for (let i = 0; i < 3; i++) await unet.run(feeds);
    const t = performance.now();
    for (let i = 0; i < 20; i++) await unet.run(feeds);
    const ms = (performance.now() - t) / 20;
    await rt.dispose();
    return ms;
  }
  const off: number[] = [];
  const on: number[] = [];
  for (let i = 0; i < repeats; i++) {
    for (const s of i % 2 === 0 ? [false, true] : [true, false]) {
      await pause(200);
      (s ? on : off).push(await perCall(s));
    }
  }
  console.log(`\nUNet ms per call (batch 2, 20 calls after a text-encoder call), median (min–max) of ${repeats}:`);
  console.log(`| UNet pool | ms/call | vs spinning off |`);
  console.log(`|---|---|---|`);
  console.log(`| spinning off (default) | ${fmt(off)} | ×1.00 |`);
  console.log(`| spinning on | ${fmt(on)} | ×${median(on.map((x, i) => x / off[i]!)).toFixed(2)} |`);
}

rmSync(scratch, { recursive: true, force: true });
