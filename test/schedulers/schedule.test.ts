/** Schedule arithmetic against values computed with numpy (the library diffusers builds schedules with). */
import { describe, expect, test } from "bun:test";
import { cosineBetas, dynamicThreshold, rescaleZeroTerminalSnr, linspace } from "../../plugins/schedulers/schedule.ts";
import { makeScheduler } from "./harness.ts";

describe("schedule arithmetic", () => {
  test("timestep spacings (np.linspace/arange + round-half-even)", () => {
    const ts = (name: string, spacing: string, n: number) => {
      const s = makeScheduler(name, { timestep_spacing: spacing });
      s.setTimesteps(n);
      return s.timesteps;
    };
    expect(ts("ddim", "leading", 7)).toEqual([852, 710, 568, 426, 284, 142, 0]);
    expect(ts("ddim", "trailing", 7)).toEqual([999, 856, 713, 570, 428, 285, 142]);
    expect(ts("ddim", "linspace", 7)).toEqual([999, 832, 666, 500, 333, 166, 0]);
    expect(ts("ddim", "trailing", 3)).toEqual([999, 666, 332]);
    expect(ts("dpmpp-2m", "linspace", 10)).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    expect(ts("dpmpp-2m", "linspace", 7)).toEqual([999, 856, 714, 571, 428, 285, 143]);
    expect(ts("euler", "linspace", 10)).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
  });

  test("squaredcos_cap_v2 betas (Nichol & Dhariwal 2021)", () => {
    const b = cosineBetas(1000);
    expect(b[0]).toBeCloseTo(4.128422482196914e-5, 15);
    expect(b[500]).toBeCloseTo(0.003155691441585007, 15);
    expect(b[999]).toBe(0.999);
  });

  test("zero terminal SNR keeps ᾱ_0 and sets ᾱ_T = 0 (Lin et al. 2023, Algorithm 1)", () => {
    const betas = linspace(Math.sqrt(0.00085), Math.sqrt(0.012), 1000).map((x) => x * x);
    const r = rescaleZeroTerminalSnr(betas);
    let a = 1;
    const abar = Array.from(r, (beta) => (a *= 1 - beta));
    expect(abar[0]).toBeCloseTo(0.99915, 12);
    expect(abar[500]).toBeCloseTo(0.24101878275731575, 12);
    expect(abar[999]).toBe(0);
  });

  test("dynamic thresholding uses torch.quantile's linear interpolation, then clamps s to [1, sample_max_value]", () => {
    // |x| sorted = 0, 1, 2, 3, 4: the 0.87 quantile is 3 + 0.48 = 3.48, clamped to max 2 → x/2 within ±1.
    const x = Float32Array.of(0, -1, 2, -3, 4);
    dynamicThreshold(x, 1, 0.87, 2, new Float32Array(5));
    expect([...x]).toEqual([0, -0.5, 1, -1, 1]);
    const y = Float32Array.of(0, -1, 2, -3, 4);
    dynamicThreshold(y, 1, 0.87, 10, new Float32Array(5));
    expect(y[4]).toBeCloseTo(1, 6);
    expect(y[2]).toBeCloseTo(2 / 3.48, 6);
    // Rows are thresholded independently.
    const z = Float32Array.of(0.5, 0.2, 8, 8);
    dynamicThreshold(z, 2, 0.5, 4, new Float32Array(2));
    expect([...z]).toEqual([0.5, Math.fround(0.2), 1, 1]);
  });

  test("trained_betas replace the named schedule", () => {
    const s = makeScheduler("ddim", { num_train_timesteps: 4, trained_betas: [0.1, 0.2, 0.3, 0.4] });
    expect(s.schedule().alphasCumprod.map((v) => Number(v.toFixed(12)))).toEqual([0.9, 0.72, 0.504, 0.3024]);
  });
});

describe("torchRng (test helper)", () => {
  test("replays torch.manual_seed(0); torch.randn(16)", async () => {
    const { torchRng } = await import("./torch-rng.ts");
    const r = torchRng(0, 16);
    const first = Array.from({ length: 4 }, () => r.normal());
    // The widely quoted first values of torch.randn after torch.manual_seed(0).
    [-1.1258, -1.1524, -0.2506, -0.4339].forEach((v, i) => expect(first[i]).toBeCloseTo(v, 4));
  });
});
