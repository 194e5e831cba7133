/**
 * The DDPM step, term by term against Ho et al. 2020, Algorithm 2, with values worked out by hand on
 * a 4-step schedule β = 0.1, 0.2, 0.3, 0.4 (ᾱ = 0.9, 0.72, 0.504, 0.3024), x_t = 0.5, ε = 0.2, z = 1.5:
 *
 *   t = 2: α_t = 0.504/0.72 = 0.7, β_t = 0.3, 1 − ᾱ_t = 0.496
 *          1/√α_t = 1.1952286093…, β_t/√(1−ᾱ_t) = 0.4259713756…
 *          mean = 1.1952286093·(0.5 − 0.4259713756·0.2) = 0.4957876696…
 *          fixed_large: σ² = β_t = 0.3            → x_{t−1} = mean + √0.3·1.5 = 1.3173715059…
 *          fixed_small: σ² = (1−0.72)/(1−0.504)·0.3 = 0.1693548387… → mean + √σ²·1.5 = 1.1130788384…
 *   t = 0: α = 0.9, β = 0.1, no noise: 1/√0.9·(0.5 − 0.1/√0.1·0.2) = 0.4603796100…
 */
import { describe, expect, test } from "bun:test";
import type { Rng } from "../../core/random.ts";
import type { Tensor } from "../../core/tensor.ts";
import { DdpmScheduler } from "../../plugins/schedulers/ddpm.ts";
import { makeScheduler } from "./harness.ts";

const CFG = { num_train_timesteps: 4, beta_start: 0.1, beta_end: 0.4, beta_schedule: "linear", clip_sample: false };
const fixedZ = (z: number): Rng => ({ uniform: () => 0.5, normal: () => z, fillNormal: (o) => o.fill(z), fork: () => fixedZ(z) });
const one = (v: number): Tensor => ({ dims: [1, 1, 1, 1], data: Float32Array.of(v) });
const ddpm = (extra: Record<string, unknown> = {}) => makeScheduler("ddpm", { ...CFG, ...extra }) as DdpmScheduler;
// Inputs are float32; the expected values are computed from the float32 inputs' exact values.
const X = Math.fround(0.5);
const E = Math.fround(0.2);

describe("DDPM step (Ho et al. 2020, Algorithm 2)", () => {
  test("coefficients at t = 2", () => {
    const k = ddpm().coefficients(2);
    expect(k.prevT).toBe(1);
    expect(k.alphaCumprod).toBeCloseTo(0.504, 14);
    expect(k.alphaCumprodPrev).toBeCloseTo(0.72, 14);
    expect(k.alpha).toBeCloseTo(0.7, 14);
    expect(k.beta).toBeCloseTo(0.3, 14);
    expect(k.variance).toBeCloseTo(0.16935483870967744, 14); // fixed_small: β̃_t
    expect(ddpm({ variance_type: "fixed_large" }).coefficients(2).variance).toBeCloseTo(0.3, 14);
  });

  test("fixed_large: x_{t−1} = 1/√α_t·(x_t − β_t/√(1−ᾱ_t)·ε) + √β_t·z", () => {
    const s = ddpm({ variance_type: "fixed_large" });
    const out = s.step(one(E), 2, one(X), fixedZ(1.5)).prevSample.data[0]!;
    const mean = (1 / Math.sqrt(0.7)) * (X - (0.3 / Math.sqrt(0.496)) * E);
    expect(mean).toBeCloseTo(0.49578766967187715, 6);
    expect(out).toBeCloseTo(Math.fround(mean + Math.sqrt(0.3) * 1.5), 6);
    expect(out).toBeCloseTo(1.3173715059296263, 6);
  });

  test("fixed_small: σ_t² = β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t", () => {
    const out = ddpm().step(one(E), 2, one(X), fixedZ(1.5)).prevSample.data[0]!;
    expect(out).toBeCloseTo(1.1130788384867034, 6);
  });

  test("the last step (t = 0) adds no noise and needs no rng", () => {
    const out = ddpm().step(one(E), 0, one(X)).prevSample.data[0]!;
    expect(out).toBeCloseTo(0.4603796100280632, 6);
  });

  test("x̂₀ is (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t, and the eq. 7 posterior mean equals Algorithm 2's when nothing clips", () => {
    const plain = ddpm().step(one(E), 2, one(X), fixedZ(0));
    expect(plain.predOriginalSample.data[0]!).toBeCloseTo((X - Math.sqrt(0.496) * E) / Math.sqrt(0.504), 6);
    // clip_sample at a range x̂₀ stays inside takes the eq. 7 path: same mean.
    const viaPosterior = ddpm({ clip_sample: true, clip_sample_range: 10 }).step(one(E), 2, one(X), fixedZ(0));
    expect(viaPosterior.prevSample.data[0]!).toBeCloseTo(plain.prevSample.data[0]!, 6);
  });

  test("a noisy step without the rng is an error naming the fix", () => {
    expect(() => ddpm().step(one(E), 2, one(X))).toThrow(/rng/);
  });
});
