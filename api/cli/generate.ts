/**
 * `bun run generate --prompt "red heart" [--negative …] [--steps N] [--scheduler NAME]
 *   [--guidance G] [--seed S] [--batch N] [--image in.png --strength 0.6] [--mask mask.png] [--pipeline FILE|MODEL_DIR]
 *   [--provider auto|cpu|wasm|webgpu] [--out out.png] [--scale K]`
 */
import "./zod-jitless.ts"; // first: before any schema is built
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { createDiffgraph } from "../../core/diffgraph.ts";
import { PARAM_NAMES, PARAMS, type ResolvedParams } from "../../core/params.ts";
import type { ExecutionProvider } from "../../core/onnx.ts";
import { threadOptionsFromFlags } from "../../core/threads.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { gridPng } from "../image.ts";
import { readImage } from "./image-file.ts";
import { runMain } from "./run-main.ts";
import { phaseRecorder } from "./phase-timings.ts";

export const DEFAULT_PIPELINE = existsSync("pipelines/emoji-64.json") && existsSync("models/emoji-64/unet/model.onnx")
  ? "pipelines/emoji-64.json"
  : "pipelines/tiny-sd.json";

// The generation flags come from core/params.ts (PARAMS): a new parameter is a flag here with no edit.
const PARAM_FLAGS = PARAM_NAMES.map((k) => ({ key: k, flag: PARAMS[k].flag, spec: PARAMS[k] }));

const HELP = `diffgraph generate — text to image

${PARAM_FLAGS.map(({ flag, spec }) => `  --${`${flag} ${spec.graphql === "String" ? "TEXT" : "N"}`.padEnd(19)}${spec.description}${flag === "prompt" ? " (required)" : ""}`).join("\n")}
  --size PX            width and height at once
  --image FILE         img2img source (with --strength)
  --mask FILE          inpainting: white = repaint, black = keep (with --image; same size)
  --pipeline PATH      pipeline JSON or diffusers ONNX model folder (default ${DEFAULT_PIPELINE})
  --provider P         auto | cpu | wasm | webgpu (default auto)
  --metrics            run the pipeline's metric nodes (CLIP score) and print their values (default: skipped, not loaded)
  --threads N          ONNX intra-op threads of the UNet (default: every core)   --threads-aux N   of every other model (default 1)
  --spin               let the UNet's thread pool spin between work items (default: off)   --pin   pin its threads to cores
  --graph-cache DIR    optimized-graph cache folder, or "off" (default $DIFFGRAPH_CACHE_DIR, else ~/.cache/diffgraph/onnx)
  --out FILE           PNG to write (default out.png)   --scale K   upscale the PNG K× (nearest)
  --timings            print where the process spent its time as one JSON line (api/cli/phase-timings.ts)`;

function num(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got "${v}"`);
  return n;
}

function bar(done: number, total: number, started: number): string {
  const width = 24;
  const filled = Math.round((done / total) * width);
  const secs = (performance.now() - started) / 1000;
  const rate = done / Math.max(secs, 1e-9);
  const eta = done > 0 ? (total - done) / rate : NaN;
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${total} steps  ${rate.toFixed(1)} it/s  ETA ${Number.isFinite(eta) ? eta.toFixed(1) : "?"}s`;
}

export async function main(argv: string[]): Promise<number> {
  const entered = performance.now();
  const { values } = parseArgs({
    args: argv,
    options: {
      ...Object.fromEntries(PARAM_FLAGS.map(({ flag }) => [flag, { type: "string" as const }])),
      size: { type: "string" }, image: { type: "string" }, pipeline: { type: "string" }, provider: { type: "string" },
      out: { type: "string" }, scale: { type: "string" }, help: { type: "boolean", short: "h" },
      mask: { type: "string" }, timings: { type: "boolean" },
      metrics: { type: "boolean" }, threads: { type: "string" }, "threads-aux": { type: "string" }, spin: { type: "boolean" }, pin: { type: "boolean" },
      "graph-cache": { type: "string" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const prompt = (values as Record<string, string | undefined>).prompt;
  if (!prompt) throw new Error("--prompt is required (try --help)");
  const out = values.out ?? "out.png";
  const phases = values.timings ? await phaseRecorder() : undefined;
  if (phases) phases.timings.marks.main = entered;
  const threads = threadOptionsFromFlags({ threads: values.threads, threadsAux: values["threads-aux"], spin: values.spin, pin: values.pin });
  const graphCache = values["graph-cache"];
  const dg = await createDiffgraph({
    registry: builtinRegistry(),
    executionProvider: (values.provider ?? "auto") as ExecutionProvider,
    ...(threads ? { threads } : {}),
    ...(graphCache !== undefined ? { graphCache: /^off$/i.test(graphCache) ? false : graphCache } : {}),
    ...(phases ? { adapter: phases.adapter } : {}),
    // One run, one shape: each session is made for it (`OnnxRuntimeOptions.pinShapes`).
    pinShapes: true,
  });
  phases?.mark("created");
  try {
    const pipeline = await dg.openPipeline(values.pipeline ?? DEFAULT_PIPELINE);
    phases?.mark("opened");
    const size = num("size", values.size);
    const given = Object.fromEntries(
      PARAM_FLAGS.flatMap(({ key, flag, spec }) => {
        const v = (values as Record<string, string | undefined>)[flag];
        return v === undefined ? [] : [[key, spec.graphql === "String" ? v : num(flag, v)]];
      }),
    ) as Partial<ResolvedParams>;
    const height = given.height ?? size ?? pipeline.defaults.height ?? 64;
    const width = given.width ?? size ?? pipeline.defaults.width ?? 64;
    const image = values.image ? await readImage(values.image, width, height) : undefined;
    if (values.mask && !values.image) throw new Error("--mask needs --image (the picture whose unmasked part it keeps)");
    const mask = values.mask ? await readImage(values.mask, width, height) : undefined;
    const isTty = process.stderr.isTTY;
    let started = performance.now();
    let lastLen = 0;
    phases?.mark("runStart");
    const result = await pipeline.run(
      { ...given, prompt, height, width, image, mask },
      {
        metrics: values.metrics ?? false,
        onEvent(e) {
          phases?.onEvent(e);
          if (e.type === "node-start" && e.use === "denoise") started = performance.now();
          if (e.type !== "step") return;
          const line = bar(e.step, e.totalSteps, started);
          if (isTty) process.stderr.write(`\r${line.padEnd(lastLen)}`);
          else if (e.step === e.totalSteps || e.step % Math.max(1, Math.round(e.totalSteps / 4)) === 0) process.stderr.write(`${line}\n`);
          lastLen = line.length;
        },
      },
    );
    phases?.mark("ran");
    if (isTty) process.stderr.write("\n");
    // The output may be bigger than the generation size (a cascade's super-resolution stage).
    const [, , outHeight, outWidth] = result.images.dims as [number, number, number, number];
    const scale = num("scale", values.scale) ?? (outWidth < 256 ? 4 : 1);
    await writeFile(out, await gridPng(result.images, undefined, scale));
    phases?.mark("png");
    const p = result.params;
    const defaultScheduler = (pipeline.doc.nodes.denoise?.config as { scheduler?: { use?: string } } | undefined)?.scheduler?.use ?? "?";
    console.log(
      `wrote ${out}: ${p.batchSize}× ${outWidth}×${outHeight}${outWidth !== width || outHeight !== height ? ` (from ${width}×${height})` : ""} (×${scale}) "${p.prompt}" — ${pipeline.name}, ${p.scheduler ?? defaultScheduler}, ${p.steps} steps, guidance ${p.guidanceScale}, seed ${p.seed}, ${(result.timings.denoise ?? 0).toFixed(0)} ms denoising`,
    );
    if (values.metrics) {
      const names = Object.keys(result.metrics);
      console.log(names.length ? `metrics: ${names.map((k) => `${k} ${result.metrics[k]!.toFixed(4)}`).join(", ")}` : `metrics: none (${pipeline.name} has no metric nodes)`);
    }
    return 0;
  } finally {
    // This is a one-shot process, which exits as soon as main returns (runMain): CPU sessions of
    // onnxruntime-node are left to the exit, which is quicker than releasing them one by one first (a
    // cold generate 9.1 ms sooner, 14 interleaved pairs; measured only there). Any other backend's
    // (a GPU device, onnxruntime-web's WASM heap) are released as before.
    if (dg.onnx.created.some((c) => c.backend !== "onnxruntime-node" || c.provider !== "cpu")) await dg.dispose();
    if (phases) {
      phases.mark("done");
      console.log(JSON.stringify({ timings: phases.timings }));
    }
  }
}

if (import.meta.main) runMain("generate", main);
