import { describe, expect, test } from "bun:test";
import { createRng, ln } from "../../core/random.ts";

describe("seeded RNG", () => {
  test("ln matches Math.log to ~1 ulp over many magnitudes", () => {
    for (const x of [1e-300, 1e-10, 0.001, 0.3, 0.5, 0.7071, 1, 1.5, 2, Math.E, 10, 12345.678, 1e200, 5e-324]) {
      expect(Math.abs(ln(x) - Math.log(x))).toBeLessThanOrEqual(4e-16 * Math.max(1, Math.abs(Math.log(x))));
    }
    expect(() => ln(0)).toThrow(/positive/);
  });

  test("same seed, same stream; different seeds differ", () => {
    const a = createRng(42).fillNormal(new Float32Array(1000));
    const b = createRng(42).fillNormal(new Float32Array(1000));
    const c = createRng(43).fillNormal(new Float32Array(1000));
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  test("seeds above 2^32 are not folded onto small seeds", () => {
    expect(createRng(2 ** 40 + 5).uniform()).not.toBe(createRng(5).uniform());
  });

  test("normals have mean 0, variance 1, and Gaussian tails (10^5 draws)", () => {
    const n = 100_000;
    const x = createRng(7).fillNormal(new Float32Array(n));
    let s = 0, s2 = 0, s4 = 0, beyond2 = 0;
    for (const v of x) {
      s += v; s2 += v * v; s4 += v ** 4;
      if (Math.abs(v) > 2) beyond2++;
    }
    const mean = s / n, variance = s2 / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(0.015); // 4.7 σ of the mean estimate
    expect(Math.abs(variance - 1)).toBeLessThan(0.02);
    expect(Math.abs(s4 / n - 3)).toBeLessThan(0.1); // kurtosis of a normal
    expect(Math.abs(beyond2 / n - 0.0455)).toBeLessThan(0.004); // P(|z| > 2)
  });

  test("uniforms are in [0, 1) and the stream is pinned (changing the algorithm changes every image)", () => {
    const r = createRng(0);
    const u = Array.from({ length: 5 }, () => r.uniform());
    for (const v of u) expect(v >= 0 && v < 1).toBe(true);
    // Pinned against this implementation's first release; a change here must bump RNG_ALGORITHM.
    const first = createRng(1234).fillNormal(new Float32Array(4));
    expect(Array.from(first).map((v) => v.toFixed(6))).toMatchSnapshot();
  });

  test("forks are independent of the parent and of each other", () => {
    const p = createRng(9);
    const f1 = p.fork().fillNormal(new Float32Array(100));
    const f2 = p.fork().fillNormal(new Float32Array(100));
    expect(f1).not.toEqual(f2);
    let dot = 0;
    for (let i = 0; i < 100; i++) dot += f1[i]! * f2[i]!;
    expect(Math.abs(dot / 100)).toBeLessThan(0.4);
  });
});
