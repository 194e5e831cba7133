/**
 * Float64 linear algebra for the Fréchet distance: symmetric eigensolvers and the trace of the
 * matrix square root of a product of two covariance matrices. Plain JS (runs the same in browsers,
 * Deno and Bun) with no dependency.
 *
 * Two documented symmetric methods (Golub & Van Loan, Matrix Computations, 4th ed.):
 *  - `symmetricEigen`: Householder reduction to tridiagonal form (§8.3.1) followed by the implicit
 *    QL iteration with Wilkinson-style shifts (§8.3.5; Numerical Recipes' tqli). About 10·n³ flops with
 *    eigenvectors: 512-dim CLIP features take well under a second. Used by the distance.
 *  - `jacobiEigen`: the cyclic Jacobi method (§8.5), slower (O(n³) per sweep, ~10 sweeps) but the
 *    most accurate for small eigenvalues (Demmel & Veselić 1992); kept as an independent check.
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

/** A copy of m with (a + aᵀ)/2: round-off in an accumulated covariance may leave tiny asymmetries. */
function symmetrisedCopy(m: SymMatrix): Float64Array {
  const n = m.n;
  const a = Float64Array.from(m.data);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a[i * n + j]! + a[j * n + i]!);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return a;
}

/**
 * Eigenvalues (and optionally eigenvectors) of a symmetric matrix by the cyclic Jacobi method.
 * Each rotation zeroes one off-diagonal pair; sweeps repeat until the off-diagonal mass is below
 * `tol` relative to the Frobenius norm (or `maxSweeps`). Only the upper triangle's symmetry is assumed.
 */
export function jacobiEigen(m: SymMatrix, withVectors = false, tol = 1e-15, maxSweeps = 60): EigenResult {
  const n = m.n;
  const a = symmetrisedCopy(m);
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

/**
 * Eigenvalues (and optionally eigenvectors) of a symmetric matrix: Householder tridiagonalisation,
 * then implicit QL with shifts on the tridiagonal matrix, accumulating the transformations when
 * eigenvectors are wanted. The matrix is symmetrised first (accumulated covariances may carry
 * round-off asymmetry).
 */
export function symmetricEigen(m: SymMatrix, withVectors = false): EigenResult {
  const n = m.n;
  const a = symmetrisedCopy(m);
  // Q accumulates the orthogonal transformations (columns are eigenvectors at the end).
  const q = withVectors ? new Float64Array(n * n) : undefined;
  if (q) for (let i = 0; i < n; i++) q[i * n + i] = 1;

  // 1. Householder: for column k, reflect x = A[k+1.., k] onto ±‖x‖e₁ with H = I − 2vvᵀ, and
  //    update the trailing block as HAH = A − vwᵀ − wvᵀ, where p = Av, K = vᵀp, w = 2p − 2Kv.
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const s = k + 1;
    let norm = 0;
    for (let i = s; i < n; i++) norm += a[i * n + k]! ** 2;
    norm = Math.sqrt(norm);
    let tail = 0;
    for (let i = s + 1; i < n; i++) tail += Math.abs(a[i * n + k]!);
    if (tail === 0) continue; // already tridiagonal in this column
    const x0 = a[s * n + k]!;
    const alpha = x0 > 0 ? -norm : norm;
    for (let i = s; i < n; i++) v[i] = a[i * n + k]!;
    v[s] = x0 - alpha;
    let vn = 0;
    for (let i = s; i < n; i++) vn += v[i]! * v[i]!;
    vn = Math.sqrt(vn);
    for (let i = s; i < n; i++) v[i] = v[i]! / vn;
    let kk = 0;
    for (let i = s; i < n; i++) {
      let acc = 0;
      const row = i * n;
      for (let j = s; j < n; j++) acc += a[row + j]! * v[j]!;
      p[i] = acc;
      kk += v[i]! * acc;
    }
    for (let i = s; i < n; i++) p[i] = 2 * p[i]! - 2 * kk * v[i]!; // p now holds w
    for (let i = s; i < n; i++) {
      const vi = v[i]!;
      const wi = p[i]!;
      const row = i * n;
      for (let j = s; j < n; j++) a[row + j] = a[row + j]! - vi * p[j]! - wi * v[j]!;
    }
    a[s * n + k] = alpha;
    a[k * n + s] = alpha;
    for (let i = s + 1; i < n; i++) {
      a[i * n + k] = 0;
      a[k * n + i] = 0;
    }
    if (q) {
      // Q ← Q·H: each row r of Q loses 2(Q[r,:]·v)vᵀ.
      for (let r = 0; r < n; r++) {
        const row = r * n;
        let dot = 0;
        for (let j = s; j < n; j++) dot += q[row + j]! * v[j]!;
        if (dot === 0) continue;
        dot *= 2;
        for (let j = s; j < n; j++) q[row + j] = q[row + j]! - dot * v[j]!;
      }
    }
  }
  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] couples d[i] and d[i+1]; e[n-1] = 0
  for (let i = 0; i < n; i++) d[i] = a[i * n + i]!;
  for (let i = 0; i < n - 1; i++) e[i] = a[(i + 1) * n + i]!;

  // 2. Implicit QL with shifts: deflate when an off-diagonal is negligible next to its neighbours.
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let mm = l;
      for (; mm < n - 1; mm++) {
        const dd = Math.abs(d[mm]!) + Math.abs(d[mm + 1]!);
        if (Math.abs(e[mm]!) <= Number.EPSILON * dd) break;
      }
      if (mm === l) break;
      if (++iter > 100) throw new Error("symmetricEigen: QL iteration did not converge");
      // Shift from the leading 2×2 block's eigenvalue closest to d[l].
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[mm]! - d[l]! + e[l]! / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let pp = 0;
      let i = mm - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i]!;
        const b = c * e[i]!;
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] = d[i + 1]! - pp;
          e[mm] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - pp;
        r = (d[i]! - g) * s + 2 * c * b;
        pp = s * r;
        d[i + 1] = g + pp;
        g = c * r - b;
        if (q) {
          for (let k = 0; k < n; k++) {
            const row = k * n;
            const fz = q[row + i + 1]!;
            const zi = q[row + i]!;
            q[row + i + 1] = s * zi + c * fz;
            q[row + i] = c * zi - s * fz;
          }
        }
      }
      if (underflow) continue;
      d[l] = d[l]! - pp;
      e[l] = g;
      e[mm] = 0;
    }
  }
  return { values: d, vectors: q };
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
