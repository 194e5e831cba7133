/**
 * Float64 linear algebra for the Fréchet distance: a symmetric eigensolver and the trace of the
 * matrix square root of a product of two covariance matrices.
 *
 * Why a hand-written cyclic Jacobi method instead of a library: the covariances here are symmetric
 * positive semi-definite, and Jacobi on a symmetric matrix is the textbook method with the best
 * relative accuracy for small eigenvalues (Demmel & Veselić, "Jacobi's method is more accurate than
 * QR", 1992), needs no pivoting or complex arithmetic, is ~60 lines of plain JS that runs the same in
 * browsers, Deno and Bun, and keeps the dependency set unchanged. Its cost is O(n³) per sweep with
 * ~6–10 sweeps; for the feature widths used here (64–512) that is milliseconds to a few seconds,
 * paid once per distance. (Golub & Van Loan, Matrix Computations, 4th ed., §8.5.)
 *
 * Why not sqrtm(Σ₁Σ₂) as pytorch-fid does: Σ₁Σ₂ is not symmetric, and when either covariance is rank
 * deficient (fewer samples than dimensions) its Schur-based square root can return complex values or
 * NaN. Instead we use the identity Tr((Σ₁Σ₂)^½) = Tr((Σ₁^½ Σ₂ Σ₁^½)^½): Σ₁^½ comes from the
 * eigendecomposition of Σ₁ (negative round-off eigenvalues clipped to 0), the middle matrix is
 * symmetric PSD, and the trace of its square root is the sum of the square roots of its (clipped)
 * eigenvalues. Everything stays real and finite for any PSD inputs.
 */

/** Dense square matrix, row-major, float64. */
export interface SymMatrix {
  readonly n: number;
  readonly data: Float64Array;
}

export interface EigenResult {
  /** Eigenvalues (unsorted, in the order of the columns of `vectors`). */
  readonly values: Float64Array;
  /** Eigenvectors as the columns of a row-major n×n matrix (only when requested). */
  readonly vectors?: Float64Array;
}

/**
 * Eigenvalues (and optionally eigenvectors) of a symmetric matrix by the cyclic Jacobi method.
 * Each rotation zeroes one off-diagonal pair; sweeps repeat until the off-diagonal mass is below
 * `tol` relative to the Frobenius norm (or `maxSweeps`). Only the upper triangle's symmetry is assumed.
 */
export function symmetricEigen(m: SymMatrix, withVectors = false, tol = 1e-15, maxSweeps = 60): EigenResult {
  const n = m.n;
  const a = Float64Array.from(m.data);
  // Symmetrise (round-off in an accumulated covariance may leave tiny asymmetries).
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a[i * n + j]! + a[j * n + i]!);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  const v = withVectors ? new Float64Array(n * n) : undefined;
  if (v) for (let i = 0; i < n; i++) v[i * n + i] = 1;

  let frob = 0;
  for (let i = 0; i < n * n; i++) frob += a[i]! * a[i]!;
  if (frob === 0) return { values: new Float64Array(n), vectors: v };
  const threshold = tol * tol * frob;

  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += 2 * a[p * n + q]! * a[p * n + q]!;
    if (off <= threshold) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const app = a[p * n + p]!;
        const aqq = a[q * n + q]!;
        // Rotation angle that annihilates a[p][q] (the smaller root of t² + 2θt − 1 = 0, for stability).
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        const tau = s / (1 + c);
        a[p * n + p] = app - t * apq;
        a[q * n + q] = aqq + t * apq;
        a[p * n + q] = 0;
        a[q * n + p] = 0;
        for (let k = 0; k < n; k++) {
          if (k === p || k === q) continue;
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          const nkp = akp - s * (akq + tau * akp);
          const nkq = akq + s * (akp - tau * akq);
          a[k * n + p] = nkp;
          a[p * n + k] = nkp;
          a[k * n + q] = nkq;
          a[q * n + k] = nkq;
        }
        if (v) {
          for (let k = 0; k < n; k++) {
            const vkp = v[k * n + p]!;
            const vkq = v[k * n + q]!;
            v[k * n + p] = vkp - s * (vkq + tau * vkp);
            v[k * n + q] = vkq + s * (vkp - tau * vkq);
          }
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i]!;
  return { values, vectors: v };
}

/** Square root of a symmetric PSD matrix, V·diag(√max(λ,0))·Vᵀ. */
export function psdSqrt(m: SymMatrix): SymMatrix {
  const n = m.n;
  const { values, vectors } = symmetricEigen(m, true);
  const v = vectors!;
  const out = new Float64Array(n * n);
  const w = new Float64Array(n);
  for (let k = 0; k < n; k++) w[k] = Math.sqrt(Math.max(values[k]!, 0));
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += v[i * n + k]! * w[k]! * v[j * n + k]!;
      out[i * n + j] = s;
      out[j * n + i] = s;
    }
  }
  return { n, data: out };
}

/** C = A·B for n×n row-major matrices. */
export function matmul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      const aik = a[i * n + k]!;
      if (aik === 0) continue;
      const row = k * n;
      const out = i * n;
      for (let j = 0; j < n; j++) c[out + j] = c[out + j]! + aik * b[row + j]!;
    }
  }
  return c;
}

/** Tr((Σ₁Σ₂)^½) for symmetric PSD Σ₁, Σ₂, computed as Tr((Σ₁^½ Σ₂ Σ₁^½)^½). */
export function traceSqrtProduct(s1: SymMatrix, s2: SymMatrix): number {
  if (s1.n !== s2.n) throw new RangeError(`covariances differ in size: ${s1.n} vs ${s2.n}`);
  const n = s1.n;
  const r = psdSqrt(s1);
  const middle = matmul(matmul(r.data, s2.data, n), r.data, n);
  const { values } = symmetricEigen({ n, data: middle });
  let tr = 0;
  for (let i = 0; i < n; i++) tr += Math.sqrt(Math.max(values[i]!, 0));
  return tr;
}

export interface Gaussian {
  readonly mu: Float64Array;
  readonly sigma: SymMatrix;
}

/**
 * Fréchet distance between two Gaussians (FID's formula):
 * ‖μ₁−μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁Σ₂)^½). Clipped at 0 (round-off may make identical sets −1e−13).
 */
export function frechetDistance(a: Gaussian, b: Gaussian): number {
  const n = a.mu.length;
  if (b.mu.length !== n || a.sigma.n !== n || b.sigma.n !== n) {
    throw new RangeError(`feature sizes differ: mu ${a.mu.length}/${b.mu.length}, sigma ${a.sigma.n}/${b.sigma.n}`);
  }
  // The same statistics (a set against itself) are exactly 0, not round-off.
  if (sameArray(a.mu, b.mu) && sameArray(a.sigma.data, b.sigma.data)) return 0;
  let diff = 0;
  for (let i = 0; i < n; i++) diff += (a.mu[i]! - b.mu[i]!) ** 2;
  let tr = 0;
  for (let i = 0; i < n; i++) tr += a.sigma.data[i * n + i]! + b.sigma.data[i * n + i]!;
  const d = diff + tr - 2 * traceSqrtProduct(a.sigma, b.sigma);
  return Math.max(d, 0);
}

function sameArray(x: Float64Array, y: Float64Array): boolean {
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
