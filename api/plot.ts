/**
 * Small line plots as SVG, rendered to PNG with sharp: axes with "nice" ticks (linear or log10),
 * an optional right-hand axis for a second scale, several series (lines and/or markers), legend and
 * title. Pure string building; only `renderPng` touches sharp.
 *
 * @example
 * const png = await linePlotPng({
 *   title: "DDIM, 30 steps",
 *   x: { label: "timestep t" },
 *   y: { label: "ᾱ_t", min: 0, max: 1 },
 *   y2: { label: "σ_t", log: true },
 *   series: [{ name: "ᾱ_t", x: ts, y: abar }, { name: "σ_t", x: ts, y: sigma, axis: "right" }],
 * });
 * await Bun.write("schedule.png", png);
 */
import sharp from "sharp";

export interface AxisSpec {
  readonly label: string;
  readonly min?: number;
  readonly max?: number;
  /** log10 scale (positive values only; others are dropped from the plot). */
  readonly log?: boolean;
  /** Draw from high to low (e.g. timesteps in sampling order). */
  readonly reverse?: boolean;
}

export interface Series {
  readonly name: string;
  readonly x: readonly number[];
  readonly y: readonly number[];
  readonly color?: string;
  /** Which y axis the series uses (default left). */
  readonly axis?: "left" | "right";
  /** "line" (default), "markers", or both. */
  readonly style?: "line" | "markers" | "line+markers";
  readonly dashed?: boolean;
}

export interface LinePlot {
  readonly title: string;
  readonly subtitle?: string;
  readonly x: AxisSpec;
  readonly y: AxisSpec;
  readonly y2?: AxisSpec;
  readonly series: readonly Series[];
  readonly width?: number;
  readonly height?: number;
  /** Legend placement: a row above the plot (default, never covers data) or a corner inside it. */
  readonly legend?: "above" | "top-right" | "top-left" | "bottom-right" | "bottom-left";
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif";

/** Text for an HTML or SVG text node or attribute. */
export const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** Tick values at 1, 2 or 5 × 10^k covering [min, max] with about `count` ticks. */
export function niceTicks(min: number, max: number, count = 6): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / Math.max(count - 1, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let k = Math.ceil(min / step - 1e-9); k * step <= max + step * 1e-9; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0).replace("e+", "e");
  return String(Number(v.toPrecision(6)));
}

interface Scale {
  map(v: number): number;
  ticks: number[];
  valid(v: number): boolean;
}

function makeScale(spec: AxisSpec, values: number[], from: number, to: number): Scale {
  const valid = (v: number) => Number.isFinite(v) && (!spec.log || v > 0);
  const vs = values.filter(valid);
  let lo = spec.min ?? (vs.length ? Math.min(...vs) : 0);
  let hi = spec.max ?? (vs.length ? Math.max(...vs) : 1);
  if (spec.log) {
    lo = Math.log10(Math.max(lo, Number.MIN_VALUE));
    hi = Math.log10(Math.max(hi, Number.MIN_VALUE));
    lo = Math.floor(lo);
    hi = Math.ceil(hi);
  }
  if (hi === lo) hi = lo + 1;
  let ticks: number[];
  if (spec.log) {
    const span = hi - lo;
    const every = Math.max(1, Math.ceil(span / 8));
    ticks = [];
    for (let e = lo; e <= hi; e += every) ticks.push(10 ** e);
  } else {
    ticks = niceTicks(lo, hi);
    if (spec.min === undefined) lo = Math.min(lo, ticks[0]!);
    if (spec.max === undefined) hi = Math.max(hi, ticks[ticks.length - 1]!);
  }
  const [a, b] = spec.reverse ? [to, from] : [from, to];
  const map = (v: number) => {
    const u = spec.log ? Math.log10(v) : v;
    return a + ((u - lo) / (hi - lo)) * (b - a);
  };
  return { map, ticks: ticks.filter((t) => (spec.log ? Math.log10(t) : t) >= lo - 1e-9 && (spec.log ? Math.log10(t) : t) <= hi + 1e-9), valid };
}

/** The plot as an SVG document. */
export function linePlotSvg(plot: LinePlot): string {
  const W = plot.width ?? 900;
  const H = plot.height ?? 540;
  const above = (plot.legend ?? "above") === "above";
  const m = { top: (plot.subtitle ? 70 : 52) + (above ? 30 : 0), right: plot.y2 ? 86 : 28, bottom: 64, left: 86 };
  const px0 = m.left;
  const px1 = W - m.right;
  const py0 = H - m.bottom;
  const py1 = m.top;
  const left = plot.series.filter((s) => s.axis !== "right");
  const right = plot.series.filter((s) => s.axis === "right");
  const xs = makeScale(plot.x, plot.series.flatMap((s) => [...s.x]), px0, px1);
  const ys = makeScale(plot.y, left.flatMap((s) => [...s.y]), py0, py1);
  const y2s = plot.y2 ? makeScale(plot.y2, right.flatMap((s) => [...s.y]), py0, py1) : null;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="30" text-anchor="middle" font-size="20" font-weight="bold" fill="#222">${esc(plot.title)}</text>`);
  if (plot.subtitle) out.push(`<text x="${W / 2}" y="52" text-anchor="middle" font-size="13" fill="#555">${esc(plot.subtitle)}</text>`);
  // Grid and ticks.
  for (const t of xs.ticks) {
    const x = xs.map(t).toFixed(1);
    out.push(`<line x1="${x}" y1="${py1}" x2="${x}" y2="${py0}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${x}" y="${py0 + 20}" text-anchor="middle" font-size="13" fill="#333">${formatTick(t)}</text>`);
  }
  for (const t of ys.ticks) {
    const y = ys.map(t).toFixed(1);
    out.push(`<line x1="${px0}" y1="${y}" x2="${px1}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<text x="${px0 - 8}" y="${y}" dy="4" text-anchor="end" font-size="13" fill="#333">${formatTick(t)}</text>`);
  }
  if (y2s) {
    for (const t of y2s.ticks) {
      const y = y2s.map(t).toFixed(1);
      out.push(`<line x1="${px1}" y1="${y}" x2="${px1 + 5}" y2="${y}" stroke="#555"/>`);
      out.push(`<text x="${px1 + 8}" y="${y}" dy="4" font-size="13" fill="#333">${formatTick(t)}</text>`);
    }
  }
  out.push(`<rect x="${px0}" y="${py1}" width="${px1 - px0}" height="${py0 - py1}" fill="none" stroke="#555"/>`);
  // Axis labels.
  out.push(`<text x="${(px0 + px1) / 2}" y="${H - 18}" text-anchor="middle" font-size="15" fill="#222">${esc(plot.x.label)}</text>`);
  out.push(`<text transform="translate(24 ${(py0 + py1) / 2}) rotate(-90)" text-anchor="middle" font-size="15" fill="#222">${esc(plot.y.label)}</text>`);
  if (plot.y2) {
    out.push(`<text transform="translate(${W - 16} ${(py0 + py1) / 2}) rotate(90)" text-anchor="middle" font-size="15" fill="#222">${esc(plot.y2.label)}</text>`);
  }
  // Series, clipped to the plot area.
  out.push(`<clipPath id="area"><rect x="${px0}" y="${py1}" width="${px1 - px0}" height="${py0 - py1}"/></clipPath>`);
  out.push(`<g clip-path="url(#area)">`);
  plot.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const scale = s.axis === "right" && y2s ? y2s : ys;
    const pts: string[] = [];
    for (let k = 0; k < Math.min(s.x.length, s.y.length); k++) {
      if (!xs.valid(s.x[k]!) || !scale.valid(s.y[k]!)) continue;
      pts.push(`${xs.map(s.x[k]!).toFixed(1)},${scale.map(s.y[k]!).toFixed(1)}`);
    }
    const style = s.style ?? "line";
    if (style !== "markers" && pts.length > 1) {
      out.push(`<polyline points="${pts.join(" ")}" fill="none" stroke="${color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="7 5"' : ""}/>`);
    }
    if (style !== "line") {
      for (const p of pts) {
        const [x, y] = p.split(",");
        out.push(`<circle cx="${x}" cy="${y}" r="3.6" fill="${color}" stroke="#fff" stroke-width="1"/>`);
      }
    }
  });
  out.push(`</g>`);
  // Legend: one row above the plot, or a box in a corner of it.
  const legendText = (s: Series) => `${s.name}${s.axis === "right" && plot.y2 ? " (right axis)" : ""}`;
  const itemWidth = (s: Series) => 44 + legendText(s).length * 7.4;
  const swatch = (s: Series, i: number, x: number, y: number) => {
    const color = s.color ?? PALETTE[i % PALETTE.length]!;
    const style = s.style ?? "line";
    if (style !== "markers") out.push(`<line x1="${x}" y1="${y - 4}" x2="${x + 26}" y2="${y - 4}" stroke="${color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="7 5"' : ""}/>`);
    if (style !== "line") out.push(`<circle cx="${x + 13}" cy="${y - 4}" r="3.6" fill="${color}"/>`);
    out.push(`<text x="${x + 34}" y="${y}" font-size="13" fill="#222">${esc(legendText(s))}</text>`);
  };
  if (above) {
    const total = plot.series.reduce((w, s) => w + itemWidth(s) + 14, -14);
    let x = (px0 + px1) / 2 - total / 2;
    plot.series.forEach((s, i) => {
      swatch(s, i, x, py1 - 14);
      x += itemWidth(s) + 14;
    });
  } else {
    const lw = 20 + Math.max(...plot.series.map(itemWidth));
    const lh = plot.series.length * 22 + 10;
    const corner = plot.legend!;
    const lx = corner.endsWith("right") ? px1 - lw - 10 : px0 + 10;
    const ly = corner.startsWith("top") ? py1 + 10 : py0 - lh - 28;
    out.push(`<rect x="${lx}" y="${ly}" width="${lw}" height="${lh}" fill="#ffffff" fill-opacity="0.9" stroke="#bbb"/>`);
    plot.series.forEach((s, i) => swatch(s, i, lx + 10, ly + 20 + i * 22));
  }
  out.push(`</svg>`);
  return out.join("\n");
}

/** Rasterise an SVG document to PNG bytes. */
export async function renderPng(svg: string): Promise<Buffer> {
  return sharp(new TextEncoder().encode(svg)).png().toBuffer();
}

export async function linePlotPng(plot: LinePlot): Promise<Buffer> {
  return renderPng(linePlotSvg(plot));
}
