/**
 * `bun run eval` — evaluate a pipeline over a grid of schedulers × step counts × guidance scales on a
 * prompt set, and write a report folder (results.json, results.csv, plots/*.png, grids/*.png,
 * index.html; see api/cli/report.ts). Metrics come from the evaluation CLIP (`clip_eval/` in the model
 * folder, or --eval-models): CLIP score, R-precision, hard retrieval (top-1 among a whole caption pool,
 * plugins/metrics/retrieval.ts) and, with reference features, the Fréchet distance accumulated over the
 * whole cell with streaming statistics.
 *
 * Resumable: results.json is rewritten after every finished cell; run the same command again and
 * finished cells are skipped (a cell cut off half way is redone). Cells of a results.json written before
 * hard retrieval existed are recomputed when there is a retrieval pool.
 */
import { parseArgs } from "node:util";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createDiffgraph, modelFolderOf } from "../../core/diffgraph.ts";
import type { ModelSource } from "../../core/model-source.ts";
import type { ExecutionProvider } from "../../core/onnx.ts";
import { concat0, type Tensor } from "../../core/tensor.ts";
import { builtinRegistry } from "../../plugins/index.ts";
import { ClipImageTower, ClipTextTower, l2normalize } from "../../plugins/metrics/clip-eval.ts";
import { clipScores } from "../../plugins/metrics/clip-score.ts";
import { frechetDistance, type Gaussian } from "../../plugins/metrics/linalg.ts";
import { candidateCaptions, promptRank } from "../../plugins/metrics/r-precision.ts";
import { retrievalPool, RetrievalTally, type RetrievalPool } from "../../plugins/metrics/retrieval.ts";
import { suggestDefaults } from "./suggest-defaults.ts";
import { FeatureStats, gaussianFromJSON, type GaussianStatsJson } from "../../plugins/metrics/stats.ts";
import { gridPng } from "../image.ts";
import { readImage } from "./image-file.ts";
import { cellKey, cellSlug, loadResults, sameSettings, saveResults, writeReport, type CellResult, type RealResult, type ReportSettings, type Results } from "./report.ts";
import { DEFAULT_PIPELINE } from "./generate.ts";
import { runMain } from "./run-main.ts";

const DEFAULT_PROMPTS = ["red heart", "grinning face", "thumbs up", "pizza", "cat face", "rocket", "sun", "crying face"];

const HELP = `diffgraph eval — metrics over a grid of schedulers × steps × guidance, as a report folder

  --pipeline PATH        pipeline JSON or model folder (default ${DEFAULT_PIPELINE})
  --schedulers LIST      comma-separated scheduler plugins (default ddim,euler,dpmpp-2m)
  --steps LIST           step counts (default 10,20,50)
  --guidance LIST        guidance scales (default: the pipeline's)
  --prompts FILE         prompt set: .txt (one per line) or .json (array of strings, or of {caption})
                         (default: ${DEFAULT_PROMPTS.length} fixed prompts)
  --limit N              use the first N prompts
  --per-prompt N         images per prompt per cell (default 1; prompt i uses seed S+i, batch N)
  --seed S               base seed (default 0)
  --eval-models DIR      folder holding clip_eval/ (default: the pipeline's model folder)
  --caption-pool FILE    R-precision captions (default clip_eval/captions.json if present, else the prompts)
  --candidates N         R-precision candidates per image, prompt included (default 100, capped by the pool)
  --retrieval-pool FILE  hard retrieval: is an image's own caption the top-1 among ALL captions of FILE
                         (.json array of strings, or .txt one per line)? (default clip_eval/captions.json
                         if present, else not measured); images whose caption is not in FILE are left out
                         and counted. Independent of --caption-pool/--candidates.
  --real-set FILE        real images with captions (JSON [{file, caption}]): the real-image ceiling for
                         CLIP score / R-precision; its captions are the prompt set unless --prompts
  --reference-images DIR real images for the Fréchet distance (PNG/JPEG/WebP, resized to the output size)
  --reference-stats FILE saved reference statistics (JSON n/mu/sigma; raw features)
  --save-reference FILE  write the reference statistics computed from --reference-images
                         (default: clip_eval/reference_stats.json in the eval models folder is used if present)
  --out DIR              report folder (default reports/<pipeline name>)
  --fresh                ignore an existing results.json in --out instead of resuming
  --provider P           auto | cpu | wasm | webgpu (default auto)   --threads N  ONNX CPU threads`;

function list<T>(name: string, v: string | undefined, parse: (s: string) => T, fallback: T[]): T[] {
  if (v === undefined) return fallback;
  const out = v.split(",").map((s) => s.trim()).filter(Boolean).map(parse);
  if (out.length === 0) throw new Error(`--${name} is empty`);
  return out;
}

function number(name: string) {
  return (s: string) => {
    const n = Number(s);
    if (!Number.isFinite(n)) throw new Error(`--${name}: "${s}" is not a number`);
    return n;
  };
}

function readPrompts(file: string, flag = "--prompts"): string[] {
  if (!existsSync(file)) throw new Error(`${flag} ${file}: file not found`);
  const text = readFileSync(file, "utf8");
  if (file.endsWith(".json")) {
    let j: unknown;
    try {
      j = JSON.parse(text);
    } catch (e) {
      throw new Error(`${flag} ${file}: not valid JSON (${(e as Error).message})`);
    }
    const arr = Array.isArray(j) ? j : (j as { prompts?: unknown; items?: unknown } | null)?.prompts ?? (j as { items?: unknown } | null)?.items;
    if (!Array.isArray(arr)) throw new Error(`${flag} ${file}: expected an array of prompts`);
    return arr.map((x, i) => {
      const v = typeof x === "string" ? x : (x as { caption?: unknown; prompt?: unknown } | null)?.caption ?? (x as { prompt?: unknown } | null)?.prompt;
      if (typeof v !== "string") throw new Error(`${flag} ${file}: item ${i} is not a string (nor an object with a string "caption" or "prompt")`);
      return v;
    });
  }
  return text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

/** Real images with captions: a JSON array of {file, caption} (or {items: [...]}, as the metrics fixture), paths relative to the file. */
function readRealSet(path: string): { file: string; caption: string }[] {
  const j = JSON.parse(readFileSync(path, "utf8")) as unknown;
  const arr = Array.isArray(j) ? j : (j as { items?: unknown }).items;
  if (!Array.isArray(arr)) throw new Error(`--real-set ${path}: expected an array of {file, caption}`);
  const dir = path.replace(/[^/]*$/, "") || "./";
  return arr.map((x, i) => {
    const { file, caption } = x as { file?: string; caption?: string };
    if (typeof file !== "string" || typeof caption !== "string") throw new Error(`--real-set ${path}: item ${i} needs "file" and "caption"`);
    const candidates = [file.startsWith("/") ? file : `${dir}${file}`, `${dir}real/${file}`];
    const found = candidates.find((c) => existsSync(c));
    if (!found) throw new Error(`--real-set ${path}: item ${i}: ${candidates[0]} not found`);
    return { file: found, caption };
  });
}

/** clip_eval/captions.json: a JSON array of strings, checked. */
function captionsJson(name: string, bytes: Uint8Array): string[] {
  let j: unknown;
  try {
    j = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new Error(`${name}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(j) || j.some((c) => typeof c !== "string")) throw new Error(`${name}: expected a JSON array of strings`);
  return j as string[];
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 90) return `${s.toFixed(0)}s`;
  if (s < 5400) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Progress on stderr: one rewritten line on a terminal, a line every few seconds otherwise. */
class Progress {
  private started = performance.now();
  private doneAtStart = 0;
  private lastPrint = 0;
  constructor(private readonly total: number, private done: number) {
    this.doneAtStart = done;
  }
  advance(n: number, what: string): void {
    this.done += n;
    this.print(what);
  }
  print(what: string, force = false): void {
    const now = performance.now();
    const tty = process.stderr.isTTY;
    if (!tty && !force && now - this.lastPrint < 5000 && this.done < this.total) return;
    this.lastPrint = now;
    const secs = (now - this.started) / 1000;
    const rate = (this.done - this.doneAtStart) / Math.max(secs, 1e-9);
    const eta = rate > 0 ? (this.total - this.done) / rate : NaN;
    const pct = ((100 * this.done) / this.total).toFixed(0).padStart(3);
    const line = `${pct}% ${this.done}/${this.total} images  ${what}  elapsed ${duration(secs)}  ETA ${duration(eta)}`;
    if (tty) process.stderr.write(`\r\x1b[K${line}`);
    else process.stderr.write(`${line}\n`);
  }
  end(): void {
    if (process.stderr.isTTY) process.stderr.write("\n");
  }
}

function imageFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = `${dir}/${name}`;
    if (statSync(p).isDirectory()) out.push(...imageFiles(p));
    else if (/\.(png|jpe?g|webp)$/i.test(name)) out.push(p);
  }
  return out;
}

async function referenceStats(
  values: { "reference-images"?: string; "reference-stats"?: string; "save-reference"?: string },
  evalModels: ModelSource,
  tower: ClipImageTower,
  size: { height: number; width: number },
): Promise<{ raw: Gaussian; l2: Gaussian | null; source: string; n: number } | null> {
  if (values["reference-images"]) {
    const files = imageFiles(values["reference-images"]);
    if (files.length < 2) throw new Error(`--reference-images ${values["reference-images"]}: found ${files.length} images; need at least 2`);
    let rawStats: FeatureStats | null = null;
    let l2Stats: FeatureStats | null = null;
    for (let i = 0; i < files.length; i += 64) {
      const batch = concat0(await Promise.all(files.slice(i, i + 64).map((f) => readImage(f, size.width, size.height))));
      const f = await tower.embed(batch);
      rawStats ??= new FeatureStats(f.dims[1]!);
      l2Stats ??= new FeatureStats(f.dims[1]!);
      rawStats.add(f.data, f.dims[0]!);
      l2Stats.add(l2normalize(f).data, f.dims[0]!);
      process.stderr.write(`\rreference features: ${Math.min(i + 64, files.length)}/${files.length}`);
    }
    process.stderr.write("\n");
    const source = `${values["reference-images"]} (${files.length} images)`;
    if (values["save-reference"]) {
      await writeFile(values["save-reference"], JSON.stringify(rawStats!.toJSON(source)));
      await writeFile(values["save-reference"].replace(/\.json$/, "") + ".l2.json", JSON.stringify(l2Stats!.toJSON(`${source}, L2-normalised`)));
    }
    return { raw: rawStats!.gaussian(), l2: l2Stats!.gaussian(), source, n: files.length };
  }
  const fromFile = async (path: string, read: () => Promise<GaussianStatsJson>, l2Path: string, l2Read: () => Promise<GaussianStatsJson | null>) => {
    const json = await read();
    const l2 = await l2Read();
    return { raw: gaussianFromJSON(json), l2: l2 ? gaussianFromJSON(l2) : null, source: json.source ? `${path}: ${json.source}` : path, n: json.n };
  };
  if (values["reference-stats"]) {
    const p = values["reference-stats"];
    const l2p = p.replace(/\.json$/, "") + ".l2.json";
    return fromFile(p, async () => JSON.parse(readFileSync(p, "utf8")), l2p, async () => (existsSync(l2p) ? JSON.parse(readFileSync(l2p, "utf8")) : null));
  }
  const p = "clip_eval/reference_stats.json";
  if (await evalModels.exists(p)) {
    const l2p = "clip_eval/reference_stats.l2.json";
    const dec = async (q: string) => JSON.parse(new TextDecoder().decode(await evalModels.read(q))) as GaussianStatsJson;
    return fromFile(`${evalModels.root}/${p}`, () => dec(p), l2p, async () => ((await evalModels.exists(l2p)) ? dec(l2p) : null));
  }
  return null;
}

export async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      pipeline: { type: "string" }, schedulers: { type: "string" }, steps: { type: "string" }, guidance: { type: "string" },
      prompts: { type: "string" }, limit: { type: "string" }, "per-prompt": { type: "string" }, seed: { type: "string" },
      "eval-models": { type: "string" }, "caption-pool": { type: "string" }, candidates: { type: "string" }, "retrieval-pool": { type: "string" },
      "reference-images": { type: "string" }, "real-set": { type: "string" }, "reference-stats": { type: "string" }, "save-reference": { type: "string" },
      out: { type: "string" }, fresh: { type: "boolean" }, provider: { type: "string" }, threads: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const pipelinePath = values.pipeline ?? DEFAULT_PIPELINE;
  const dg = await createDiffgraph({
    registry: builtinRegistry(),
    executionProvider: (values.provider ?? "auto") as ExecutionProvider,
    threads: values.threads ? Number(values.threads) : undefined,
    log: (m) => process.stderr.write(`${m}\n`),
  });
  try {
    const pipeline = await dg.openPipeline(pipelinePath);
    const schedulers = list("schedulers", values.schedulers, String, ["ddim", "euler", "dpmpp-2m"]);
    for (const s of schedulers) {
      const def = dg.registry.get(s);
      if (!def || def.kind !== "scheduler") throw new Error(`--schedulers: "${s}" is not a scheduler plugin (have: ${dg.registry.names().filter((n) => dg.registry.get(n)?.kind === "scheduler").join(", ")})`);
    }
    const steps = list("steps", values.steps, number("steps"), [10, 20, 50]);
    const guidance = list("guidance", values.guidance, number("guidance"), [pipeline.defaults.guidanceScale ?? 7.5]);
    const realSet = values["real-set"] ? readRealSet(values["real-set"]) : null;
    let prompts = values.prompts ? readPrompts(values.prompts) : realSet ? realSet.map((r) => r.caption) : DEFAULT_PROMPTS;
    if (values.limit) prompts = prompts.slice(0, Number(values.limit));
    const real = realSet?.filter((r) => prompts.includes(r.caption)) ?? null;
    if (prompts.length === 0) throw new Error("the prompt set is empty");
    const perPrompt = values["per-prompt"] ? Number(values["per-prompt"]) : 1;
    const seed = values.seed ? Number(values.seed) : 0;
    const size = { height: pipeline.defaults.height ?? 64, width: pipeline.defaults.width ?? 64 };

    // The evaluation CLIP: the pipeline's model folder unless told otherwise.
    let modelDir = values["eval-models"];
    if (!modelDir) {
      if (pipelinePath.endsWith(".json")) {
        const doc = JSON.parse(readFileSync(pipelinePath, "utf8")) as { model?: string };
        modelDir = modelFolderOf(pipelinePath, doc.model ?? ".");
      } else modelDir = pipelinePath;
    }
    const evalModels = dg.adapter.fileSource(modelDir);
    if (!(await evalModels.exists("clip_eval/image_model.onnx"))) {
      throw new Error(`${modelDir}/clip_eval/image_model.onnx not found: the model has no evaluation CLIP; pass --eval-models DIR`);
    }
    const files = { imageModel: "clip_eval/image_model.onnx", textModel: "clip_eval/text_model.onnx", tokenizer: "clip_eval/tokenizer", preprocessor: "clip_eval/preprocessor_config.json", maxBatch: 32 };
    const [tower, text] = await Promise.all([ClipImageTower.load(evalModels, dg.onnx, files), ClipTextTower.load(evalModels, dg.onnx, files)]);

    // clip_eval/captions.json: the default pool of both R-precision's distractors and hard retrieval.
    const modelCaptions = (await evalModels.exists("clip_eval/captions.json")) ? captionsJson(`${modelDir}/clip_eval/captions.json`, await evalModels.read("clip_eval/captions.json")) : null;
    let pool: string[];
    let poolName: string;
    if (values["caption-pool"]) {
      pool = readPrompts(values["caption-pool"], "--caption-pool");
      if (pool.length === 0) throw new Error(`--caption-pool ${values["caption-pool"]}: no captions`);
      poolName = values["caption-pool"];
    } else if (modelCaptions) {
      pool = modelCaptions;
      poolName = `${modelDir}/clip_eval/captions.json`;
    } else {
      pool = prompts;
      poolName = "the prompt set";
    }
    const candidates = Math.min(values.candidates ? Number(values.candidates) : 100, new Set([...pool, ...prompts]).size);

    // Hard retrieval's pool, embedded once (the text tower batches and caches it).
    let hardPool: RetrievalPool | null = null;
    let hardPoolName: string | null = null;
    if (values["retrieval-pool"]) {
      const captions = readPrompts(values["retrieval-pool"], "--retrieval-pool");
      if (captions.length === 0) throw new Error(`--retrieval-pool ${values["retrieval-pool"]}: no captions`);
      hardPool = await retrievalPool(captions, (t) => text.embed(t));
      hardPoolName = values["retrieval-pool"];
    } else if (modelCaptions && modelCaptions.length > 0) {
      hardPool = await retrievalPool(modelCaptions, (t) => text.embed(t));
      hardPoolName = `${modelDir}/clip_eval/captions.json`;
    }
    if (hardPool) {
      const inPool = prompts.filter((p) => hardPool!.index.has(p)).length;
      process.stderr.write(`hard retrieval (top-1 among ${hardPool.captions.length} captions of ${hardPoolName}): ${inPool} of ${prompts.length} prompts are in it${inPool < prompts.length ? " (the others are left out of it)" : ""}\n`);
    } else process.stderr.write("hard retrieval not measured (no clip_eval/captions.json; pass --retrieval-pool FILE)\n");

    const reference = await referenceStats(values, evalModels, tower, size);

    // Real images with their captions: the ceiling for CLIP score and R-precision on the same candidates.
    const realResult = async (): Promise<RealResult | null> => {
      if (!real || real.length === 0) return null;
      const scores: number[] = [];
      let hits = 0;
      let ranks = 0;
      let stats: FeatureStats | null = null;
      let statsL2: FeatureStats | null = null;
      const tally = hardPool ? new RetrievalTally(hardPool) : null;
      for (let i = 0; i < real.length; i += 32) {
        const chunk = real.slice(i, i + 32);
        const f = await tower.embed(concat0(await Promise.all(chunk.map((r) => readImage(r.file, size.width, size.height)))));
        stats ??= new FeatureStats(f.dims[1]!);
        statsL2 ??= new FeatureStats(f.dims[1]!);
        stats.add(f.data, f.dims[0]!);
        statsL2.add(l2normalize(f).data, f.dims[0]!);
        scores.push(...clipScores(f, await text.embed(chunk.map((r) => r.caption))));
        tally?.add(f, chunk.map((r) => r.caption));
        for (const [k, r] of chunk.entries()) {
          const rank = promptRank(f, k, await text.embed(candidateCaptions(r.caption, pool, candidates, 0)));
          ranks += rank;
          if (rank === 1) hits++;
        }
      }
      const n = scores.length;
      const mean = scores.reduce((a, x) => a + x, 0) / n;
      return {
        images: n,
        clipScore: mean,
        clipScoreStd: Math.sqrt(scores.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(n - 1, 1)),
        rPrecision: hits / n,
        meanRank: ranks / n,
        hardRetrieval: tally?.rate ?? null,
        hardRetrievalImages: tally?.measured ?? 0,
        fd: reference ? frechetDistance(stats!.gaussian(), reference.raw) : null,
        fdL2: reference?.l2 ? frechetDistance(statsL2!.gaussian(), reference.l2) : null,
      };
    };
    const out = values.out ?? `reports/${pipeline.name}`;
    await mkdir(`${out}/grids`, { recursive: true });
    const settings: ReportSettings = {
      pipeline: pipelinePath,
      evalModels: modelDir,
      prompts,
      imagesPerPrompt: perPrompt,
      seed,
      candidates,
      captionPool: poolName,
      retrievalPool: hardPool ? { source: hardPoolName!, captions: hardPool.captions.length } : null,
      realSet: values["real-set"] ?? null,
      reference: reference ? { source: reference.source, n: reference.n } : null,
      size,
    };
    const previous = values.fresh ? null : loadResults(out);
    // A results.json from before hard retrieval has no retrievalPool setting: its cells are kept, and
    // those of this grid are recomputed when there is a pool now (they lack the measure).
    const predates = previous !== null && previous.settings.retrievalPool === undefined;
    const staleReal = (c: { hardRetrieval?: number | null }) => hardPool !== null && c.hardRetrieval === undefined;
    // Cells without per-image outcomes (older files) are recomputed too: the defaults line pairs cells image by image.
    const stale = (c: { hardRetrieval?: number | null; hardOutcomes?: string }) => staleReal(c) || (hardPool !== null && c.hardRetrieval !== null && c.hardOutcomes === undefined);
    if (previous) {
      const differs = sameSettings(predates ? { ...previous.settings, retrievalPool: settings.retrievalPool } : previous.settings, settings);
      if (differs) throw new Error(`${out}/results.json was made with a different "${differs}"; use another --out, or --fresh to start over`);
    }
    const cells: CellResult[] = [...(previous?.cells ?? [])];
    const realRes = previous?.real && !staleReal(previous.real) ? previous.real : await realResult();
    const results = (): Results => ({
      version: 1,
      settings,
      grid: { schedulers, steps, guidance },
      cells,
      real: realRes,
      environment: { host: dg.adapter.host, provider: dg.onnx.executionProvider, platform: `${process.platform}-${process.arch}` },
    });
    const done = new Set(cells.filter((c) => !stale(c)).map(cellKey));
    const grid = guidance.flatMap((g) => schedulers.flatMap((s) => steps.map((n) => ({ scheduler: s, steps: n, guidance: g }))));
    const todo = grid.filter((c) => !done.has(cellKey(c)));
    const perCell = prompts.length * perPrompt;
    const redo = grid.filter((g) => cells.some((c) => cellKey(c) === cellKey(g) && stale(c))).length;
    if (redo > 0) process.stderr.write(`${out}/results.json predates hard retrieval or its per-image outcomes: recomputing its ${redo} cell(s) of this grid\n`);
    if (grid.length > todo.length) process.stderr.write(`resuming ${out}: ${grid.length - todo.length} of ${grid.length} cells already done\n`);
    const progress = new Progress(grid.length * perCell, (grid.length - todo.length) * perCell);

    // Text features for every prompt's candidate list, computed once.
    const candidateFeatures = new Map<string, Tensor>();
    for (const p of prompts) candidateFeatures.set(p, await text.embed(candidateCaptions(p, pool, candidates, 0)));
    const promptFeatures = await text.embed(prompts);

    let interrupted = false;
    const onSigint = () => {
      interrupted = true;
      process.stderr.write("\ninterrupt: finishing the current image, then stopping (finished cells are saved)\n");
    };
    process.on("SIGINT", onSigint);
    try {
      for (const [ci, cell] of todo.entries()) {
        const t0 = performance.now();
            let rawStats: FeatureStats | null = null;
        let l2Stats: FeatureStats | null = null;
        const scores: number[] = [];
        let hits = 0;
        let ranks = 0;
        const tally = hardPool ? new RetrievalTally(hardPool) : null;
        const firsts: Tensor[] = [];
            for (const [pi, prompt] of prompts.entries()) {
          if (interrupted) return 130;
          const r = await pipeline.run({ prompt, steps: cell.steps, guidanceScale: cell.guidance, scheduler: cell.scheduler, seed: seed + pi, batchSize: perPrompt });
          const f = await tower.embed(r.images);
          const b = f.dims[0]!;
          rawStats ??= new FeatureStats(f.dims[1]!);
          l2Stats ??= new FeatureStats(f.dims[1]!);
          rawStats.add(f.data, b);
          l2Stats.add(l2normalize(f).data, b);
          const pf = promptFeatures.data.subarray(pi * promptFeatures.dims[1]!, (pi + 1) * promptFeatures.dims[1]!);
          const tf: Tensor = { dims: [b, pf.length], data: new Float32Array(b * pf.length).map((_, k) => pf[k % pf.length]!) };
          scores.push(...clipScores(f, tf));
          tally?.add(f, new Array<string>(b).fill(prompt));
          const cf = candidateFeatures.get(prompt)!;
          for (let i = 0; i < b; i++) {
            const rank = promptRank(f, i, cf);
            ranks += rank;
            if (rank === 1) hits++;
          }
          firsts.push({ dims: [1, ...r.images.dims.slice(1)], data: r.images.data.slice(0, r.images.data.length / b) });
          progress.advance(b, `cell ${grid.length - todo.length + ci + 1}/${grid.length} ${cell.scheduler} ${cell.steps} steps g=${cell.guidance}`);
        }
        const n = scores.length;
        const mean = scores.reduce((a, x) => a + x, 0) / n;
        const std = Math.sqrt(scores.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(n - 1, 1));
        const seconds = (performance.now() - t0) / 1000;
        const gridFile = `grids/${cellSlug(cell)}.png`;
        const sample = concat0(firsts.slice(0, 16));
        await writeFile(`${out}/${gridFile}`, await gridPng(sample, Math.min(4, sample.dims[0]!), 2));
        const old = cells.findIndex((c) => cellKey(c) === cellKey(cell));
        if (old >= 0) cells.splice(old, 1); // a stale cell from an older results.json
        cells.push({
          ...cell,
          images: n,
          clipScore: mean,
          clipScoreStd: std,
          rPrecision: hits / n,
          meanRank: ranks / n,
          candidates,
          hardRetrieval: tally?.rate ?? null,
          hardRetrievalImages: tally?.measured ?? 0,
          ...(tally ? { hardOutcomes: tally.outcomes } : {}),
          fd: reference ? frechetDistance(rawStats!.gaussian(), reference.raw) : null,
          fdL2: reference?.l2 ? frechetDistance(l2Stats!.gaussian(), reference.l2) : null,
          secondsPerImage: seconds / n,
          seconds,
          grid: gridFile,
          finishedAt: new Date().toISOString(),
        });
        await saveResults(out, results());
        await writeReport(out, results(), `diffgraph evaluation: ${pipeline.name}`);
      }
    } finally {
      process.off("SIGINT", onSigint);
      progress.end();
    }
    await saveResults(out, results());
    const { plots } = await writeReport(out, results(), `diffgraph evaluation: ${pipeline.name}`);
    const mine = cells.filter((c) => grid.some((g) => cellKey(g) === cellKey(c)));
    const hard = (v: number | null | undefined) => (v == null ? "–" : v.toFixed(3)).padStart(6);
    console.log(`scheduler   steps  guidance   CLIP    R-prec  hard    FD        FD(L2)    s/img`);
    for (const c of mine) {
      console.log(`${c.scheduler.padEnd(10)} ${String(c.steps).padStart(6)} ${String(c.guidance).padStart(9)}  ${c.clipScore.toFixed(2).padStart(6)}  ${c.rPrecision.toFixed(3).padStart(6)}  ${hard(c.hardRetrieval)}  ${(c.fd?.toFixed(4) ?? "–").padStart(8)}  ${(c.fdL2?.toFixed(4) ?? "–").padStart(8)}  ${c.secondsPerImage.toFixed(3)}`);
    }
    if (realRes) {
      console.log(`${"real".padEnd(10)} ${"–".padStart(6)} ${"–".padStart(9)}  ${realRes.clipScore.toFixed(2).padStart(6)}  ${realRes.rPrecision.toFixed(3).padStart(6)}  ${hard(realRes.hardRetrieval)}  ${(realRes.fd?.toFixed(4) ?? "–").padStart(8)}  ${(realRes.fdL2?.toFixed(4) ?? "–").padStart(8)}`);
    }
    if (hardPool) {
      const measured = mine[0]?.hardRetrievalImages ?? 0;
      const left = (mine[0]?.images ?? 0) - measured;
      const realNote = realRes ? `; real: ${realRes.hardRetrievalImages} of ${realRes.images}` : "";
      const ratios = realRes?.hardRetrieval ? mine.map((c) => (c.hardRetrieval == null ? "–" : (c.hardRetrieval / realRes.hardRetrieval!).toFixed(2))) : [];
      const ratio = ratios.length ? `; generated / real ${ratios.join(" / ")}${mine.length > 1 ? " (cells in table order)" : ""}` : "";
      console.log(`hard: top-1 among all ${hardPool.captions.length} captions of ${hardPoolName}; ${measured} of ${mine[0]?.images ?? 0} images per cell measured${left > 0 ? ` (${left} left out: caption not in the pool)` : ""}${realNote}${ratio}`);
    }
    const choice = suggestDefaults(mine);
    if (choice) console.log(choice.line);
    console.log(`report: ${out}/index.html (${plots.length} plots, results.json, results.csv)`);
    return 0;
  } finally {
    await dg.dispose();
  }
}

if (import.meta.main) runMain("eval", main);
