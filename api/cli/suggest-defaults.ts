/**
 * Defaults from evidence (issue 13, item 6): which grid cell of `bun run eval` a pipeline's defaults
 * should be, by hard retrieval (plugins/metrics/retrieval.ts).
 *
 * The rule: take the best cell by hard retrieval; every other cell is compared with it image by image
 * (all cells of a grid generate the same prompts with the same seeds, so the outcomes pair up), as the
 * mean of the paired differences d = hit(cell) − hit(best) with a 95 % t interval d̄ ± t·s/√n. A cell
 * is as good as the best when the interval's lower end is above −MARGIN (a non-inferiority test: with
 * few images the interval is wide and only the best cell passes); of those, the cheapest wins (fewest
 * UNet rows per image: steps, ×2 with classifier-free guidance — an LCM UNet that takes guidance as an
 * embedding runs one row per step, which `costOf` does not know), then the higher hard retrieval. A
 * cell is only compared when it has the same images as the best (same outcome string length and
 * left-out positions); cells without outcomes are not judged and are named in the line.
 */

/** How much lower hard retrieval (absolute) a cheaper cell may be, at the interval's lower end. */
export const MARGIN = 0.05;

export interface JudgedCell {
  readonly scheduler: string;
  readonly steps: number;
  readonly guidance: number;
  readonly hardRetrieval: number | null;
  readonly hardOutcomes?: string;
}

export interface Comparison<C extends JudgedCell> {
  readonly cell: C;
  /** Mean paired difference to the best cell, and its 95 % interval. */
  readonly delta: number;
  readonly interval: readonly [number, number];
  /** The interval's lower end is above −MARGIN (always true for the best cell itself). */
  readonly asGood: boolean;
  /** UNet rows per image (steps, ×2 with guidance > 1). */
  readonly cost: number;
}

export interface DefaultsChoice<C extends JudgedCell> {
  readonly best: C;
  readonly chosen: Comparison<C>;
  readonly compared: readonly Comparison<C>[];
  /** Images paired per comparison. */
  readonly n: number;
  /** One line for the eval summary. */
  readonly line: string;
}

export const costOf = (c: Pick<JudgedCell, "steps" | "guidance">): number => c.steps * (c.guidance > 1 ? 2 : 1);

/** The 97.5 % quantile of Student's t with ν degrees of freedom (Cornish–Fisher expansion; within 0.1 % of the tables for ν ≥ 9, 0.8 % at ν = 3). */
export function t975(nu: number): number {
  const z = 1.959963984540054;
  return z + (z ** 3 + z) / (4 * nu) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * nu ** 2) + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * nu ** 3);
}

/** Paired mean difference of two outcome strings ("1"/"0"/"-", same positions left out) and its 95 % t interval. */
export function pairedDifference(a: string, b: string): { delta: number; interval: [number, number]; n: number } | null {
  if (a.length !== b.length) return null;
  const d: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if ((x === "-") !== (y === "-")) return null;
    if (x !== "-") d.push((x === "1" ? 1 : 0) - (y === "1" ? 1 : 0));
  }
  const n = d.length;
  if (n < 2) return null;
  const mean = d.reduce((s, v) => s + v, 0) / n;
  const sd = Math.sqrt(d.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1));
  const half = (t975(n - 1) * sd) / Math.sqrt(n);
  return { delta: mean, interval: [mean - half, mean + half], n };
}

const name = (c: JudgedCell) => `${c.scheduler} ${c.steps} steps, guidance ${c.guidance}`;
const signed = (v: number) => `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(3)}`;

/** The suggested defaults among `cells`; null when no other cell pairs up with the best one (or fewer than 2 images do). */
export function suggestDefaults<C extends JudgedCell>(cells: readonly C[]): DefaultsChoice<C> | null {
  const judged = cells.filter((c) => c.hardRetrieval != null && c.hardOutcomes);
  const unjudged = cells.filter((c) => !judged.includes(c));
  if (judged.length < 2) return null;
  const best = judged.reduce((b, c) => (c.hardRetrieval! > b.hardRetrieval! || (c.hardRetrieval === b.hardRetrieval && costOf(c) < costOf(b)) ? c : b));
  let n = 0;
  const compared: Comparison<C>[] = [];
  for (const cell of judged) {
    const p = pairedDifference(cell.hardOutcomes!, best.hardOutcomes!);
    if (!p) continue;
    n = p.n;
    compared.push({ cell, delta: p.delta, interval: p.interval, asGood: cell === best || p.interval[0] > -MARGIN, cost: costOf(cell) });
  }
  if (compared.length < 2 || !compared.some((c) => c.cell === best)) return null;
  const chosen = compared.filter((c) => c.asGood).sort((a, b) => a.cost - b.cost || b.cell.hardRetrieval! - a.cell.hardRetrieval!)[0]!;
  const skipped = unjudged.length ? `; not judged (no per-image outcomes): ${unjudged.map(name).join("; ")}` : "";
  const line =
    chosen.cell === best
      ? `defaults by hard retrieval: ${name(best)} (${best.hardRetrieval!.toFixed(3)}) is best; no cheaper cell is within ${MARGIN} of it at its 95 % paired interval's lower end (${n} images)${skipped}`
      : `defaults by hard retrieval: ${name(chosen.cell)} (${chosen.cell.hardRetrieval!.toFixed(3)}, ${chosen.cost} UNet rows/image) is as good as the best, ${name(best)} (${best.hardRetrieval!.toFixed(3)}, ${costOf(best)} rows), within ${MARGIN}: paired Δ ${signed(chosen.delta)} [${signed(chosen.interval[0])}, ${signed(chosen.interval[1])}] over ${n} images${skipped}`;
  return { best, chosen, compared, n, line };
}
