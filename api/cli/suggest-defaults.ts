/**
 * Defaults from evidence (issue 13, item 6): which grid cell of `bun run eval` a pipeline's defaults
 * should be, by hard retrieval (plugins/metrics/retrieval.ts).
 *
 * The rule: take the best cell by hard retrieval; every other cell is compared with it image by image
 * (all cells of a grid generate the same prompts with the same seeds, so the outcomes pair up), as the
 * mean of the paired differences d = hit(cell) − hit(best) with a 95 % normal interval
 * d̄ ± 1.96·s/√n. A cell whose interval reaches 0 is not measurably worse than the best; of those, the
 * cheapest wins (fewest UNet rows per image: steps, ×2 with classifier-free guidance), then the higher
 * hard retrieval. A cell is only a candidate with the same images as the best (same outcome string
 * length and left-out positions); cells without outcomes (older results.json files) are not judged.
 */

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
  readonly notWorse: boolean;
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

/** Paired mean difference of two outcome strings ("1"/"0"/"-", same positions left out) and its 95 % interval. */
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
  const half = (1.96 * sd) / Math.sqrt(n);
  return { delta: mean, interval: [mean - half, mean + half], n };
}

const name = (c: JudgedCell) => `${c.scheduler} ${c.steps} steps, guidance ${c.guidance}`;
const signed = (v: number) => `${v >= 0 ? "+" : "−"}${Math.abs(v).toFixed(3)}`;

/** The suggested defaults among `cells`; null when fewer than two cells have comparable outcomes. */
export function suggestDefaults<C extends JudgedCell>(cells: readonly C[]): DefaultsChoice<C> | null {
  const judged = cells.filter((c) => c.hardRetrieval != null && c.hardOutcomes);
  if (judged.length < 2) return null;
  const best = judged.reduce((b, c) => (c.hardRetrieval! > b.hardRetrieval! || (c.hardRetrieval === b.hardRetrieval && costOf(c) < costOf(b)) ? c : b));
  let n = 0;
  const compared: Comparison<C>[] = [];
  for (const cell of judged) {
    const p = pairedDifference(cell.hardOutcomes!, best.hardOutcomes!);
    if (!p) continue;
    n = p.n;
    compared.push({ cell, delta: p.delta, interval: p.interval, notWorse: cell === best || p.interval[1] >= 0, cost: costOf(cell) });
  }
  const chosen = compared.filter((c) => c.notWorse).sort((a, b) => a.cost - b.cost || b.cell.hardRetrieval! - a.cell.hardRetrieval!)[0]!;
  const line =
    chosen.cell === best
      ? `defaults by hard retrieval: ${name(best)} (${best.hardRetrieval!.toFixed(3)}) is best, and no cheaper cell is within its 95 % paired interval (${n} images)`
      : `defaults by hard retrieval: ${name(chosen.cell)} (${chosen.cell.hardRetrieval!.toFixed(3)}, ${chosen.cost} UNet rows/image) is not measurably worse than the best, ${name(best)} (${best.hardRetrieval!.toFixed(3)}, ${costOf(best)} rows): paired Δ ${signed(chosen.delta)} [${signed(chosen.interval[0])}, ${signed(chosen.interval[1])}] over ${n} images`;
  return { best, chosen, compared, n, line };
}
