import { expect, test } from "bun:test";
import { f16ToF32, f32ToF16, fromHalf, toHalf } from "../../core/float16.ts";

test("float16 conversion matches known bit patterns (IEEE 754 binary16)", () => {
  const cases: [number, number][] = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [0.5, 0x3800],
    [6.103515625e-5, 0x0400], // smallest normal
    [5.960464477539063e-8, 0x0001], // smallest subnormal
    [Infinity, 0x7c00], [-Infinity, 0xfc00], [1e6, 0x7c00], [1e-9, 0x0000],
    [1.0009765625, 0x3c01], [0.333251953125, 0x3555],
  ];
  for (const [v, bits] of cases) {
    expect(toHalf(v)).toBe(bits);
    if (Number.isFinite(v) && Math.abs(v) <= 65504 && (v === 0 || Math.abs(v) >= 5.96e-8)) expect(fromHalf(bits)).toBe(v);
  }
  expect(Number.isNaN(fromHalf(toHalf(NaN)))).toBe(true);
});

test("float32 → float16 rounds to nearest, ties to even", () => {
  // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties to the even mantissa (1.0).
  expect(toHalf(1 + 2 ** -11)).toBe(0x3c00);
  // 1 + 3·2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9 (even): rounds up to even.
  expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
  expect(toHalf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
});

test("round trip of random values stays within half an ulp of float16", () => {
  const xs = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 12.9898) * 100);
  const back = f16ToF32(f32ToF16(xs));
  for (let i = 0; i < xs.length; i++) {
    const ulp = 2 ** (Math.floor(Math.log2(Math.abs(xs[i]!))) - 10);
    expect(Math.abs(back[i]! - xs[i]!)).toBeLessThanOrEqual(ulp / 2 + 1e-12);
  }
});
