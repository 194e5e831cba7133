/**
 * Fréchet distance: streaming statistics and the float64 matrix square root, checked against an
 * independent numpy/scipy reference (Debian's python3-scipy at /usr/bin/python3, spawned here).
 */
import { describe, expect, test } from "bun:test";
import { HAS_PYTHON_REFERENCE } from "../python-reference.ts";
import { createRng } from "../../core/random.ts";
import { frechetDistance, jacobiEigen, symmetricEigen } from "../../plugins/metrics/linalg.ts";
import { FeatureStats, gaussianFromJSON } from "../../plugins/metrics/stats.ts";

const PYTHON = "/usr/bin/python3";
const REFERENCE = new URL("./frechet_reference.py", import.meta.url).pathname;

interface Reference {
  mu_a: number[];
  sigma_a: number[][];
  sqrtm: number;
  eigh: number;
  self_sqrtm: number;
}

function reference(a: Float64Array, b: Float64Array, dim: number): Reference {
  const rows = (x: Float64Array) => Array.from({ length: x.length / dim }, (_, i) => [...x.subarray(i * dim, (i + 1) * dim)]);
  const proc = Bun.spawnSync([PYTHON, REFERENCE], { stdin: Buffer.from(JSON.stringify({ a: rows(a), b: rows(b) })) });
  if (proc.exitCode !== 0) throw new Error(`scipy reference failed: ${proc.stderr.toString()}`);
  return JSON.parse(proc.stdout.toString()) as Reference;
}

/**
 * n samples of x = μ + L·z with z ~ N(0, I): known mean μ and covariance LLᵀ. L is lower triangular
 * with a decaying diagonal so the covariance has a spread of eigenvalues (like real embeddings).
 */
function gaussianSamples(seed: number, n: number, dim: number, shift = 0): Float64Array {
  const rng = createRng(seed);
  const mu = Float64Array.from({ length: dim }, () => rng.normal() + shift);
  const l = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j < i; j++) l[i * dim + j] = 0.3 * rng.normal();
    l[i * dim + i] = 1 / (1 + 0.1 * i);
  }
  const out = new Float64Array(n * dim);
  const z = new Float64Array(dim);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < dim; j++) z[j] = rng.normal();
    for (let i = 0; i < dim; i++) {
      let s = mu[i]!;
      for (let j = 0; j <= i; j++) s += l[i * dim + j]! * z[j]!;
      out[r * dim + i] = s;
    }
  }
  return out;
}

/** Accumulate in uneven batches, as the eval command and the plugin do. */
function streamed(x: Float64Array, dim: number, batches = [1, 7, 64, 3, 100]): FeatureStats {
  const s = new FeatureStats(dim);
  const rows = x.length / dim;
  let r = 0;
  for (let k = 0; r < rows; k++) {
    const take = Math.min(batches[k % batches.length]!, rows - r);
    s.add(x.subarray(r * dim, (r + take) * dim), take);
    r += take;
  }
  return s;
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);

describe("streaming statistics", () => {
  test.skipIf(!HAS_PYTHON_REFERENCE)("uneven batches give numpy's mean and covariance (ddof = 1)", () => {
    const dim = 16;
    const a = gaussianSamples(1, 300, dim);
    const ref = reference(a, a, dim);
    const g = streamed(a, dim).gaussian();
    let maxMu = 0;
    let maxSigma = 0;
    for (let i = 0; i < dim; i++) {
      maxMu = Math.max(maxMu, Math.abs(g.mu[i]! - ref.mu_a[i]!));
      for (let j = 0; j < dim; j++) maxSigma = Math.max(maxSigma, Math.abs(g.sigma.data[i * dim + j]! - ref.sigma_a[i]![j]!));
    }
    expect(maxMu).toBeLessThan(1e-12);
    expect(maxSigma).toBeLessThan(1e-12);
  });

  test("merge of two halves equals one pass, and JSON round-trips", () => {
    const dim = 8;
    const a = gaussianSamples(2, 101, dim);
    const whole = streamed(a, dim).gaussian();
    const left = streamed(a.subarray(0, 40 * dim), dim);
    const right = streamed(a.subarray(40 * dim), dim);
    const merged = FeatureStats.fromJSON(JSON.parse(JSON.stringify(left.toJSON()))).merge(right).gaussian();
    for (let i = 0; i < dim * dim; i++) expect(Math.abs(merged.sigma.data[i]! - whole.sigma.data[i]!)).toBeLessThan(1e-12);
    for (let i = 0; i < dim; i++) expect(Math.abs(merged.mu[i]! - whole.mu[i]!)).toBeLessThan(1e-12);
  });

  test("one sample gives a zero covariance, not NaN", () => {
    const g = new FeatureStats(3).add([1, 2, 3]).gaussian();
    expect([...g.sigma.data]).toEqual(new Array(9).fill(0));
  });
});

describe("symmetric eigensolvers", () => {
  const reconstructionError = (m: Float64Array, n: number, values: Float64Array, vectors: Float64Array) => {
    let err = 0;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += vectors[i * n + k]! * values[k]! * vectors[j * n + k]!;
        err = Math.max(err, Math.abs(s - m[i * n + j]!));
      }
    }
    return err;
  };
  const cases = (): [string, Float64Array, number][] => {
    const n = 24;
    const rng = createRng(5);
    const sym = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) sym[i * n + j] = sym[j * n + i] = rng.normal();
    // Rank-5 PSD (a covariance of 6 samples), the identity (repeated eigenvalues) and zero.
    const x = Float64Array.from({ length: 5 * n }, () => rng.normal());
    const psd = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < 5; k++) psd[i * n + j] = psd[i * n + j]! + x[k * n + i]! * x[k * n + j]!;
    const eye = new Float64Array(n * n);
    for (let i = 0; i < n; i++) eye[i * n + i] = 1;
    return [["random symmetric", sym, n], ["rank-5 PSD", psd, n], ["identity", eye, n], ["zero", new Float64Array(n * n), n], ["1×1", Float64Array.from([3]), 1], ["2×2", Float64Array.from([2, 1, 1, 2]), 2]];
  };
  for (const [name, m, n] of cases()) {
    test(`Householder+QL and Jacobi reconstruct ${name} and agree on eigenvalues`, () => {
      const a = symmetricEigen({ n, data: m }, true);
      const b = jacobiEigen({ n, data: m }, true);
      expect(reconstructionError(m, n, a.values, a.vectors!)).toBeLessThan(1e-12);
      expect(reconstructionError(m, n, b.values, b.vectors!)).toBeLessThan(1e-12);
      const sa = [...a.values].sort((x, y) => x - y);
      const sb = [...b.values].sort((x, y) => x - y);
      for (let i = 0; i < n; i++) expect(Math.abs(sa[i]! - sb[i]!)).toBeLessThan(1e-12);
    });
  }
});

describe.skipIf(!HAS_PYTHON_REFERENCE)("Fréchet distance vs scipy", () => {
  test("random features with known covariance agree with sqrtm to 1e-6 relative", () => {
    const dim = 64;
    const a = gaussianSamples(10, 800, dim);
    const b = gaussianSamples(11, 700, dim, 0.2);
    const ref = reference(a, b, dim);
    const fd = frechetDistance(streamed(a, dim).gaussian(), streamed(b, dim).gaussian());
    console.log(`FD(d=${dim}, n=800/700): ours ${fd}, scipy sqrtm ${ref.sqrtm}, rel ${rel(fd, ref.sqrtm).toExponential(2)}; eigh ${ref.eigh}, rel ${rel(fd, ref.eigh).toExponential(2)}`);
    expect(rel(fd, ref.sqrtm)).toBeLessThan(1e-6);
    expect(rel(fd, ref.eigh)).toBeLessThan(1e-6);
  });

  test("nearby distributions (small distance, heavy cancellation) still agree to 1e-6", () => {
    const dim = 32;
    const a = gaussianSamples(20, 2000, dim);
    const b = gaussianSamples(21, 2000, dim); // different μ and L draws, but same recipe
    const ref = reference(a, b, dim);
    const fd = frechetDistance(streamed(a, dim).gaussian(), streamed(b, dim).gaussian());
    console.log(`FD(d=${dim}, n=2000/2000): ours ${fd}, scipy sqrtm ${ref.sqrtm}, rel ${rel(fd, ref.sqrtm).toExponential(2)}`);
    expect(rel(fd, ref.sqrtm)).toBeLessThan(1e-6);
  });

  test("identical sets give exactly 0 (scipy's sqrtm gives round-off)", () => {
    const dim = 32;
    const a = gaussianSamples(30, 200, dim);
    const ref = reference(a, a, dim);
    const g1 = streamed(a, dim).gaussian();
    const g2 = streamed(a, dim, [200]).gaussian(); // different batching: equal up to round-off only
    expect(frechetDistance(g1, g1)).toBe(0);
    const fd2 = frechetDistance(g1, g2);
    console.log(`FD(set, same set re-batched) = ${fd2}; scipy sqrtm self = ${ref.self_sqrtm}`);
    // Re-batched statistics differ in the last bits; the distance is round-off relative to the traces.
    let tr = 0;
    for (let i = 0; i < dim; i++) tr += 2 * g1.sigma.data[i * dim + i]!;
    expect(fd2 / tr).toBeLessThan(1e-8);
    expect(Math.abs(ref.self_sqrtm) / tr).toBeLessThan(1e-9); // scipy lands at the same round-off level
  });

  test("rank-deficient covariances (fewer samples than dimensions): finite, matches scipy eigh", () => {
    const dim = 64;
    for (const [na, nb] of [[10, 12], [1, 30], [2, 2]] as const) {
      const a = gaussianSamples(40 + na, na, dim);
      const b = gaussianSamples(50 + nb, nb, dim, 0.1);
      const ref = reference(a.length / dim > 1 ? a : Float64Array.from([...a, ...a]), b, dim); // numpy's cov needs 2 rows
      const fd = frechetDistance(streamed(a, dim).gaussian(), streamed(b, dim).gaussian());
      expect(Number.isFinite(fd)).toBe(true);
      expect(fd).toBeGreaterThan(0);
      if (na > 1) {
        console.log(`FD rank-deficient n=${na}/${nb}, d=${dim}: ours ${fd}, scipy eigh ${ref.eigh} (rel ${rel(fd, ref.eigh).toExponential(2)}), scipy sqrtm ${ref.sqrtm}`);
        expect(rel(fd, ref.eigh)).toBeLessThan(1e-6);
      }
    }
    // A self-comparison of a rank-deficient set is 0 too.
    const a = streamed(gaussianSamples(60, 5, dim), dim).gaussian();
    expect(frechetDistance(a, gaussianFromJSON({ n: 5, mu: [...a.mu], sigma: Array.from({ length: dim }, (_, i) => [...a.sigma.data.subarray(i * dim, (i + 1) * dim)]) }))).toBe(0);
  });
});
