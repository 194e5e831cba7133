/**
 * Streaming mean and covariance of feature vectors in float64, so thousands of images' features
 * never sit in memory at once: each batch is reduced to (count, mean, centred co-moment matrix) and
 * merged with Chan, Golub & LeVeque's pairwise update (the batch form of Welford's method):
 *
 *   n = nₐ + n_b,  δ = μ_b − μₐ,  μ = μₐ + δ·n_b/n,  M₂ = M₂ₐ + M₂_b + δδᵀ·nₐn_b/n.
 *
 * Covariance = M₂ / (n − ddof), ddof = 1 by default (numpy.cov, as pytorch-fid uses). With fewer
 * than ddof + 1 samples the covariance is the zero matrix (not NaN).
 */
import type { Gaussian } from "./linalg.ts";

export interface GaussianStatsJson {
  /** Number of feature vectors the statistics summarise. */
  readonly n: number;
  readonly mu: readonly number[];
  /** Covariance, D×D nested rows (unbiased, ddof = 1 unless `ddof` says otherwise). */
  readonly sigma: readonly (readonly number[])[];
  readonly ddof?: number;
  /** Free-form provenance ("clip_eval/image_model.onnx on 1000 held-out real images"). */
  readonly source?: string;
}

export class FeatureStats {
  private count = 0;
  private readonly mean: Float64Array;
  private readonly m2: Float64Array;

  constructor(readonly dim: number) {
    if (!Number.isInteger(dim) || dim <= 0) throw new RangeError(`feature dimension must be a positive integer, got ${dim}`);
    this.mean = new Float64Array(dim);
    this.m2 = new Float64Array(dim * dim);
  }

  get n(): number {
    return this.count;
  }

  /** Add `rows` feature vectors stored row-major in `data` (length rows × dim). */
  add(data: ArrayLike<number>, rows = data.length / this.dim): this {
    const d = this.dim;
    if (!Number.isInteger(rows) || rows * d !== data.length) {
      throw new RangeError(`feature data of length ${data.length} is not a whole number of ${d}-dim rows`);
    }
    if (rows === 0) return this;
    // Batch mean and centred co-moment, then merge.
    const bm = new Float64Array(d);
    for (let r = 0; r < rows; r++) for (let j = 0; j < d; j++) bm[j] = bm[j]! + data[r * d + j]!;
    for (let j = 0; j < d; j++) bm[j] = bm[j]! / rows;
    const bm2 = new Float64Array(d * d);
    const c = new Float64Array(d);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < d; j++) c[j] = data[r * d + j]! - bm[j]!;
      for (let i = 0; i < d; i++) {
        const ci = c[i]!;
        if (ci === 0) continue;
        const row = i * d;
        for (let j = i; j < d; j++) bm2[row + j] = bm2[row + j]! + ci * c[j]!;
      }
    }
    for (let i = 0; i < d; i++) for (let j = 0; j < i; j++) bm2[i * d + j] = bm2[j * d + i]!;
    this.mergeRaw(rows, bm, bm2);
    return this;
  }

  /** Merge another accumulator into this one (parallel or resumed accumulation). */
  merge(other: FeatureStats): this {
    if (other.dim !== this.dim) throw new RangeError(`cannot merge ${other.dim}-dim statistics into ${this.dim}-dim`);
    this.mergeRaw(other.count, other.mean, other.m2);
    return this;
  }

  private mergeRaw(nb: number, mb: Float64Array, m2b: Float64Array): void {
    if (nb === 0) return;
    const na = this.count;
    const d = this.dim;
    if (na === 0) {
      this.count = nb;
      this.mean.set(mb);
      this.m2.set(m2b);
      return;
    }
    const n = na + nb;
    const delta = new Float64Array(d);
    for (let j = 0; j < d; j++) delta[j] = mb[j]! - this.mean[j]!;
    const f = (na * nb) / n;
    for (let i = 0; i < d; i++) {
      const di = delta[i]! * f;
      const row = i * d;
      for (let j = 0; j < d; j++) this.m2[row + j] = this.m2[row + j]! + m2b[row + j]! + di * delta[j]!;
    }
    for (let j = 0; j < d; j++) this.mean[j] = this.mean[j]! + (delta[j]! * nb) / n;
    this.count = n;
  }

  /** Mean and covariance (M₂ / (n − ddof); the zero matrix when n ≤ ddof). */
  gaussian(ddof = 1): Gaussian {
    const d = this.dim;
    const sigma = new Float64Array(d * d);
    const denom = this.count - ddof;
    if (denom > 0) for (let i = 0; i < d * d; i++) sigma[i] = this.m2[i]! / denom;
    return { mu: Float64Array.from(this.mean), sigma: { n: d, data: sigma } };
  }

  toJSON(source?: string): GaussianStatsJson {
    const { mu, sigma } = this.gaussian(1);
    const d = this.dim;
    return {
      n: this.count,
      mu: [...mu],
      sigma: Array.from({ length: d }, (_, i) => [...sigma.data.subarray(i * d, (i + 1) * d)]),
      ddof: 1,
      ...(source ? { source } : {}),
    };
  }

  /** Rebuild an accumulator from saved statistics (so accumulation can resume). */
  static fromJSON(json: GaussianStatsJson): FeatureStats {
    const d = json.mu.length;
    if (!Array.isArray(json.sigma) || json.sigma.length !== d || json.sigma.some((r) => !Array.isArray(r) || r.length !== d)) {
      throw new RangeError(`statistics: sigma must be ${d}×${d} to match mu`);
    }
    if (!Number.isInteger(json.n) || json.n < 0) throw new RangeError(`statistics: n must be a count, got ${json.n}`);
    const s = new FeatureStats(d);
    s.count = json.n;
    s.mean.set(json.mu);
    const ddof = json.ddof ?? 1;
    const scale = Math.max(json.n - ddof, 0);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) s.m2[i * d + j] = json.sigma[i]![j]! * scale;
    return s;
  }
}

/** A Gaussian straight from saved statistics (no accumulator needed). */
export function gaussianFromJSON(json: GaussianStatsJson): Gaussian {
  const d = json.mu.length;
  if (!Array.isArray(json.sigma) || json.sigma.length !== d || json.sigma.some((r) => !Array.isArray(r) || r.length !== d)) {
    throw new RangeError(`statistics: sigma must be ${d}×${d} to match mu`);
  }
  const sigma = new Float64Array(d * d);
  for (let i = 0; i < d; i++) sigma.set(json.sigma[i]!, i * d);
  return { mu: Float64Array.from(json.mu), sigma: { n: d, data: sigma } };
}
