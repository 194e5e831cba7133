/**
 * Seeded random numbers that every JavaScript runtime reproduces bit for bit.
 *
 * Algorithm (fixed; changing it changes every seeded image, so it is versioned as `RNG_ALGORITHM`):
 * - State: xoshiro128** (Blackman & Vigna, 2018), four 32-bit words, seeded by running SplitMix32
 *   over the seed. Uniforms in [0, 1) take the top 24 bits of a draw (exactly representable).
 * - Gaussians: Marsaglia's polar method, both values of each pair used, in float64, then rounded to
 *   float32. It needs only +, ×, ÷, √ and ln. The first four are correctly rounded by IEEE 754 in
 *   every engine; `Math.log` is not specified to the last bit (V8 and JavaScriptCore differ), so ln
 *   is computed here from basic operations (`ln` below). That makes Bun, Node, Deno and browsers
 *   draw identical noise for the same seed.
 *
 * Written by hand because no maintained library promises cross-engine bit-identical Gaussians.
 */
export const RNG_ALGORITHM = "xoshiro128**+splitmix32/polar-gaussian/v1";

export interface Rng {
  /** Uniform in [0, 1). */
  uniform(): number;
  /** Standard normal, float64 (already rounded to a float32 value). */
  normal(): number;
  /** Fill a buffer with standard normals. */
  fillNormal(out: Float32Array): Float32Array;
  /** A new independent stream derived from this one (for per-image seeds in a batch). */
  fork(): Rng;
}

export function createRng(seed: number): Rng {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`seed must be a safe integer, got ${seed}`);
  // Fold a 53-bit seed into 32 bits without losing the high half.
  let sm = (seed >>> 0) ^ Math.floor(seed / 0x100000000);
  const splitmix = (): number => {
    sm = (sm + 0x9e3779b9) | 0;
    let z = sm;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const s = new Uint32Array([splitmix(), splitmix(), splitmix(), splitmix()]);
  if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0) s[0] = 1;
  return fromState(s);
}

function fromState(s: Uint32Array): Rng {
  const next = (): number => {
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  };
  let spare: number | null = null;
  const uniform = (): number => (next() >>> 8) / 16777216;
  const normal = (): number => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    for (;;) {
      const u = 2 * uniform() - 1;
      const v = 2 * uniform() - 1;
      const r = u * u + v * v;
      if (r === 0 || r >= 1) continue;
      const f = Math.sqrt((-2 * ln(r)) / r);
      spare = Math.fround(v * f);
      return Math.fround(u * f);
    }
  };
  return {
    uniform,
    normal,
    fillNormal(out) {
      for (let i = 0; i < out.length; i++) out[i] = normal();
      return out;
    },
    fork() {
      return fromState(new Uint32Array([next(), next(), next(), next() | 1]));
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const LN2 = 0.6931471805599453;
const SQRT2 = 1.4142135623730951;
const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer);
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0; // little-endian: high word is [1]

/**
 * Natural log of a positive normal float64 from exact operations only: split x = m·2^e with m in
 * [√½, √2) by reading the exponent bits, then ln m = 2·atanh(s), s = (m−1)/(m+1), |s| < 0.1716,
 * summed to 1e-17 (15 odd terms). Accurate to ~1 ulp; identical in every IEEE-754 engine.
 */
export function ln(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) throw new RangeError(`ln is defined here for positive finite x, got ${x}`);
  f64[0] = x;
  let e = ((u32[HI]! >>> 20) & 0x7ff) - 1023;
  if (e === -1023) return ln(x * 2 ** 54) - 54 * LN2; // subnormal
  u32[HI] = (u32[HI]! & 0x800fffff) | 0x3ff00000; // exponent 0 → m in [1, 2)
  let m = f64[0]!;
  if (m > SQRT2) {
    m /= 2;
    e += 1;
  }
  const s = (m - 1) / (m + 1);
  const s2 = s * s;
  let term = s;
  let sum = 0;
  for (let k = 1; k <= 31; k += 2) {
    sum += term / k;
    term *= s2;
  }
  return e * LN2 + 2 * sum;
}
