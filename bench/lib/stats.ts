/**
 * Medians and a percentile-bootstrap interval for the benchmarks.
 *
 * The bootstrap is written here (15 lines) because the small, well-kept npm statistics libraries
 * (simple-statistics, jstat) have no bootstrap, and those that do take no seed: a benchmark's
 * interval must come out the same for the same measurements. It resamples with core/random.ts,
 * the project's seeded RNG.
 */
import { createRng } from "../../core/random.ts";

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function quantile(sorted: readonly number[], q: number): number {
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

/**
 * Percentile bootstrap (Efron & Tibshirani 1993, §13.3) of `stat` over `xs`: `resamples` samples of
 * xs.length drawn with replacement, the (1 − level)/2 and (1 + level)/2 quantiles of their stat.
 */
export function bootstrapInterval(
  xs: readonly number[],
  stat: (sample: readonly number[]) => number = median,
  { resamples = 10_000, level = 0.95, seed = 1 }: { resamples?: number; level?: number; seed?: number } = {},
): [number, number] {
  const rng = createRng(seed);
  const stats = new Array<number>(resamples);
  const sample = new Array<number>(xs.length);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < xs.length; i++) sample[i] = xs[Math.floor(rng.uniform() * xs.length)]!;
    stats[r] = stat(sample);
  }
  stats.sort((a, b) => a - b);
  return [quantile(stats, (1 - level) / 2), quantile(stats, (1 + level) / 2)];
}
