/**
 * The evaluation report folder written by `bun run eval`:
 *   results.json  — run settings and one record per grid cell (the resume state, rewritten atomically
 *                   after every cell)
 *   results.csv   — the same cells, one row each
 *   plots/*.png   — each metric vs steps, one line per scheduler (and guidance scale)
 *   grids/*.png   — a sample grid per cell (first image of each prompt)
 *   index.html    — table, plots and sample grids on one page
 */
import { mkdir, rename, writeFile } from "node:fs/promises";
import { existsSync, readFileSync } from "node:fs";
import { esc, linePlotPng, type Series } from "../plot.ts";

export interface CellResult {
  readonly scheduler: string;
  readonly steps: number;
  readonly guidance: number;
  /** Images generated for the cell (prompts × images per prompt). */
  readonly images: number;
  /** Mean CLIP score (100 × cosine, unclamped) over the cell's images, and its standard deviation. */
  readonly clipScore: number;
  readonly clipScoreStd: number;
  /** Top-1 R-precision among `candidates` captions, and the prompt's mean rank (1 = best). */
  readonly rPrecision: number;
  readonly meanRank: number;
  readonly candidates: number;
  /**
   * Hard retrieval: fraction of the measured images whose own caption is the top-1 among every caption
   * of the retrieval pool (plugins/metrics/retrieval.ts); null without a pool or when no prompt is in
   * it. `hardRetrievalImages` images were measured; the cell's other images (caption not in the
   * pool) are left out. Absent in results.json files written before the measure existed.
   */
  readonly hardRetrieval: number | null;
  readonly hardRetrievalImages: number;
  /**
   * Each image's hard-retrieval outcome in generation order ("1" hit, "0" miss, "-" left out): every
   * cell of a grid runs the same prompts and seeds, so two cells compare image by image (paired) in
   * api/cli/suggest-defaults.ts. Absent in results.json files written before it was kept.
   */
  readonly hardOutcomes?: string;
  /** Fréchet distance of the cell's image features to the reference features (raw and L2-normalised); null without a reference. */
  readonly fd: number | null;
  readonly fdL2: number | null;
  readonly secondsPerImage: number;
  readonly seconds: number;
  /** Sample grid, relative to the report folder. */
  readonly grid: string;
  readonly finishedAt: string;
}

/** The same metrics on real images with their captions (the ceiling), when a real set is given. */
export interface RealResult {
  readonly images: number;
  readonly clipScore: number;
  readonly clipScoreStd: number;
  readonly rPrecision: number;
  readonly meanRank: number;
  /** Hard retrieval of the real images (the ceiling), as in CellResult. */
  readonly hardRetrieval: number | null;
  readonly hardRetrievalImages: number;
  /** Real set vs the reference features (the floor when they are disjoint samples of the same data). */
  readonly fd: number | null;
  readonly fdL2: number | null;
}

export interface ReportSettings {
  readonly pipeline: string;
  readonly evalModels: string;
  readonly prompts: readonly string[];
  readonly imagesPerPrompt: number;
  readonly seed: number;
  readonly candidates: number;
  readonly captionPool: string;
  /** Hard retrieval's caption pool (file and size); null when there is none. */
  readonly retrievalPool: { readonly source: string; readonly captions: number } | null;
  readonly realSet: string | null;
  readonly reference: { readonly source: string; readonly n: number } | null;
  readonly size: { readonly height: number; readonly width: number };
}

export interface Results {
  readonly version: 1;
  readonly settings: ReportSettings;
  /** Grid axes as last requested (cells from earlier, larger grids are kept). */
  readonly grid: { readonly schedulers: readonly string[]; readonly steps: readonly number[]; readonly guidance: readonly number[] };
  readonly cells: CellResult[];
  readonly real?: RealResult | null;
  readonly environment?: Record<string, string | number>;
}

export const cellKey = (c: { scheduler: string; steps: number; guidance: number }) => `${c.scheduler}|${c.steps}|${c.guidance}`;
export const cellSlug = (c: { scheduler: string; steps: number; guidance: number }) => `${c.scheduler}-${c.steps}steps-g${c.guidance}`;

/** Settings that must match for a report folder's cells to be reused (everything but the grid axes). */
export function sameSettings(a: ReportSettings, b: ReportSettings): string | null {
  const keys = Object.keys(b) as (keyof ReportSettings)[];
  for (const k of keys) if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) return k;
  return null;
}

export function loadResults(dir: string): Results | null {
  const path = `${dir}/results.json`;
  if (!existsSync(path)) return null;
  const r = JSON.parse(readFileSync(path, "utf8")) as Results;
  if (r.version !== 1 || !Array.isArray(r.cells)) throw new Error(`${path}: not a diffgraph eval results file (version ${r.version})`);
  return r;
}

/** Write results.json atomically (temp file + rename), so a kill mid-write never loses finished cells. */
export async function saveResults(dir: string, results: Results): Promise<void> {
  await mkdir(dir, { recursive: true });
  const tmp = `${dir}/results.json.tmp`;
  await writeFile(tmp, `${JSON.stringify(results, null, 2)}\n`);
  await rename(tmp, `${dir}/results.json`);
}

const COLUMNS: readonly (keyof CellResult)[] = [
  "scheduler", "steps", "guidance", "images", "clipScore", "clipScoreStd", "rPrecision", "meanRank", "candidates", "hardRetrieval", "hardRetrievalImages", "fd", "fdL2", "secondsPerImage", "seconds", "grid",
];

export function toCsv(cells: readonly CellResult[]): string {
  const q = (v: unknown) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [COLUMNS.join(","), ...cells.map((c) => COLUMNS.map((k) => q(c[k])).join(","))].join("\n") + "\n";
}

interface MetricSpec {
  readonly key: "clipScore" | "rPrecision" | "meanRank" | "hardRetrieval" | "fd" | "fdL2" | "secondsPerImage";
  readonly title: string;
  readonly label: string;
  readonly better: string;
}

export const METRICS: readonly MetricSpec[] = [
  { key: "clipScore", title: "CLIP score", label: "CLIP score (100 × cos)", better: "higher is better" },
  { key: "rPrecision", title: "CLIP R-precision (top-1)", label: "R-precision", better: "higher is better" },
  { key: "hardRetrieval", title: "Hard retrieval (top-1 among the whole caption pool)", label: "hard retrieval", better: "higher is better" },
  { key: "fd", title: "Fréchet distance (eval-CLIP image features)", label: "Fréchet distance", better: "lower is better" },
  { key: "fdL2", title: "Fréchet distance (L2-normalised features)", label: "Fréchet distance (L2)", better: "lower is better" },
  { key: "secondsPerImage", title: "Time per image", label: "seconds / image", better: "lower is better" },
];

function sortCells(cells: readonly CellResult[]): CellResult[] {
  return [...cells].sort((a, b) => a.guidance - b.guidance || a.scheduler.localeCompare(b.scheduler) || a.steps - b.steps);
}

/** The real-image value as a dashed horizontal line across the steps range. */
function realSeries(real: RealResult | null | undefined, key: MetricSpec["key"], steps: readonly number[]): Series[] {
  if (!real || key === "secondsPerImage" || key === "meanRank") return [];
  const v = real[key];
  if (v === null || v === undefined) return [];
  const lo = Math.min(...steps);
  const hi = Math.max(...steps);
  // A one-step-count grid would give a zero-length line: draw it from 0 instead.
  return [{ name: key === "fd" || key === "fdL2" ? "real images vs reference" : "real images (ceiling)", x: [lo === hi ? 0 : lo, hi], y: [v, v], color: "#555555", dashed: true }];
}

/** One series per (scheduler, guidance) present in the cells. */
function seriesFor(cells: readonly CellResult[], key: MetricSpec["key"]): Series[] {
  const groups = new Map<string, CellResult[]>();
  const guidances = new Set(cells.map((c) => c.guidance));
  for (const c of sortCells(cells)) {
    const name = guidances.size > 1 ? `${c.scheduler}, guidance ${c.guidance}` : c.scheduler;
    groups.set(name, [...(groups.get(name) ?? []), c]);
  }
  return [...groups].map(([name, cs]) => ({
    name,
    x: cs.map((c) => c.steps),
    y: cs.map((c) => (c[key] == null ? NaN : (c[key] as number))),
    style: "line+markers" as const,
  }));
}

/** Write results.csv, plots/*.png and index.html from the results (cells as they are). */
export async function writeReport(dir: string, results: Results, title = "diffgraph evaluation"): Promise<{ plots: string[] }> {
  await mkdir(`${dir}/plots`, { recursive: true });
  const cells = sortCells(results.cells);
  await writeFile(`${dir}/results.csv`, toCsv(cells));
  const s = results.settings;
  const plots: string[] = [];
  const stepsSeen = [...new Set(cells.map((c) => c.steps))];
  for (const m of METRICS) {
    if (cells.every((c) => c[m.key] == null)) continue;
    const file = `plots/${m.key}.png`;
    const png = await linePlotPng({
      title: `${m.title} vs steps`,
      subtitle: `${s.pipeline} · ${s.prompts.length} prompts × ${s.imagesPerPrompt} image(s) per cell · ${m.better}`,
      x: { label: "denoising steps", min: 0, max: niceMax(Math.max(...stepsSeen)) },
      y: { label: m.label, ...(m.key === "rPrecision" || m.key === "hardRetrieval" ? { min: 0, max: 1.02 } : padded([...cells.map((c) => c[m.key]), ...(m.key !== "secondsPerImage" && m.key !== "meanRank" && results.real ? [results.real[m.key]] : [])])) },
      series: [...seriesFor(cells, m.key), ...realSeries(results.real, m.key, stepsSeen)],
    });
    await writeFile(`${dir}/${file}`, png);
    plots.push(file);
  }
  await writeFile(`${dir}/index.html`, html(results, cells, plots, title));
  return { plots };
}

/** y range with a margin so markers at the extremes are not cut by the frame. */
function padded(values: readonly (number | null)[]): { min?: number; max?: number } {
  const v = values.filter((x): x is number => x !== null && Number.isFinite(x));
  if (v.length === 0) return {};
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  const pad = (hi - lo || Math.abs(hi) || 1) * 0.08;
  return { min: lo >= 0 && lo - pad < 0 ? 0 : lo - pad, max: hi + pad };
}

/** Axis end just past the largest step count (10 → 10, 50 → 50, 37 → 40). */
function niceMax(v: number): number {
  const step = v <= 10 ? 1 : v <= 50 ? 5 : v <= 200 ? 10 : 50;
  return Math.ceil(v / step) * step;
}

const fmt = (v: number | null | undefined, digits = 4) => (v == null || !Number.isFinite(v) ? "–" : Number(v.toPrecision(digits)).toString());

/** Hard retrieval, the images it measured and, given the real images' figure, the ratio to it. */
const hard = (r: { hardRetrieval?: number | null; hardRetrievalImages?: number }, real?: number | null) =>
  r.hardRetrieval == null ? "–" : `${fmt(r.hardRetrieval, 3)} (${r.hardRetrievalImages})${real ? `; ${fmt(r.hardRetrieval / real, 2)} of real` : ""}`;

function html(results: Results, cells: readonly CellResult[], plots: readonly string[], title: string): string {
  const s = results.settings;
  const rows = cells
    .map((c) => `<tr><td>${esc(c.scheduler)}</td><td>${c.steps}</td><td>${c.guidance}</td><td>${c.images}</td><td>${fmt(c.clipScore)} ± ${fmt(c.clipScoreStd, 3)}</td><td>${fmt(c.rPrecision, 3)}</td><td>${fmt(c.meanRank, 3)}</td><td>${hard(c, results.real?.hardRetrieval)}</td><td>${fmt(c.fd)}</td><td>${fmt(c.fdL2)}</td><td>${fmt(c.secondsPerImage, 3)}</td></tr>`)
    .join("\n");
  const guidances = [...new Set(cells.map((c) => c.guidance))];
  const steps = [...new Set(cells.map((c) => c.steps))].sort((a, b) => a - b);
  const schedulers = [...new Set(cells.map((c) => c.scheduler))];
  const byKey = new Map(cells.map((c) => [cellKey(c), c]));
  const grids = guidances
    .map((g) => {
      const head = `<tr><th></th>${steps.map((n) => `<th>${n} steps</th>`).join("")}</tr>`;
      const body = schedulers
        .map((sch) => `<tr><th>${esc(sch)}</th>${steps.map((n) => {
          const c = byKey.get(cellKey({ scheduler: sch, steps: n, guidance: g }));
          return c ? `<td><a href="${esc(c.grid)}"><img src="${esc(c.grid)}" alt="${esc(`${sch} ${n} steps guidance ${g}`)}"></a></td>` : "<td>–</td>";
        }).join("")}</tr>`)
        .join("\n");
      return `<h3>Guidance ${g}</h3><table class="grids">${head}${body}</table>`;
    })
    .join("\n");
  const ref = s.reference ? `${esc(s.reference.source)} (${s.reference.n} images)` : "none (Fréchet distance not computed)";
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}.plots img{width:640px;margin:.3rem;border:1px solid #ddd}
.grids img{image-rendering:pixelated;width:256px}.grids td{padding:.2rem}code{background:#f3f3f3;padding:0 .2rem}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Pipeline <code>${esc(s.pipeline)}</code>; evaluation CLIP from <code>${esc(s.evalModels)}</code>.
${s.prompts.length} prompts × ${s.imagesPerPrompt} image(s) per cell at ${s.size.width}×${s.size.height}, seeds from ${s.seed}.
R-precision: top-1 among ${s.candidates} captions (pool: ${esc(s.captionPool)}).
Hard retrieval: top-1 among ${s.retrievalPool ? `all ${s.retrievalPool.captions} captions of ${esc(s.retrievalPool.source)}; images whose caption is not in the pool are left out (measured images in brackets; the ratio to the real images' figure after them)` : "– (no retrieval pool)"}. Fréchet distance reference: ${ref}.
CLIP score is 100 × cosine (unclamped).</p>
<h2>Results</h2>
<table><tr><th>scheduler</th><th>steps</th><th>guidance</th><th>images</th><th>CLIP score</th><th>R-precision</th><th>mean rank</th><th>hard retrieval (images)</th><th>FD</th><th>FD (L2)</th><th>s / image</th></tr>
${rows}
${results.real ? `<tr><td><b>real images</b></td><td>–</td><td>–</td><td>${results.real.images}</td><td>${fmt(results.real.clipScore)} ± ${fmt(results.real.clipScoreStd, 3)}</td><td>${fmt(results.real.rPrecision, 3)}</td><td>${fmt(results.real.meanRank, 3)}</td><td>${hard(results.real)}</td><td>${fmt(results.real.fd)}</td><td>${fmt(results.real.fdL2)}</td><td>–</td></tr>` : ""}</table>
<p><a href="results.csv">results.csv</a> · <a href="results.json">results.json</a></p>
<h2>Plots</h2><div class="plots">${plots.map((p) => `<a href="${esc(p)}"><img src="${esc(p)}" alt="${esc(p)}"></a>`).join("\n")}</div>
<h2>Sample grids</h2><p>First image of each prompt: ${s.prompts.slice(0, 16).map((p) => esc(p)).join(" · ")}</p>
${grids}
</body></html>
`;
}
