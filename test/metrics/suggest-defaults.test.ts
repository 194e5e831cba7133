/**
 * api/cli/suggest-defaults.ts: pipeline defaults from an eval grid by hard retrieval. The paired
 * difference and its interval are checked against values worked out by hand; the choice against
 * grids built so that the answer is known.
 */
import { describe, expect, test } from "bun:test";
import { costOf, MARGIN, pairedDifference, suggestDefaults, t975, type JudgedCell } from "../../api/cli/suggest-defaults.ts";

const cell = (steps: number, guidance: number, outcomes: string, scheduler = "ddim"): JudgedCell => {
  const measured = [...outcomes].filter((c) => c !== "-");
  return { scheduler, steps, guidance, hardOutcomes: outcomes, hardRetrieval: measured.filter((c) => c === "1").length / measured.length };
};

describe("pairedDifference", () => {
  test("mean and 95 % t interval of the per-image differences (hand-computed)", () => {
    // d = (0,0,0,0,−1,0,0,0,0,0): mean −0.1, sample sd √(0.9/9) = √0.1, half-width t₉·√0.1/√10 = 0.1·t₉.
    const p = pairedDifference("1111000000", "1111100000")!;
    expect(p.n).toBe(10);
    expect(p.delta).toBeCloseTo(-0.1, 12);
    expect(p.interval[0]).toBeCloseTo(-0.1 - 0.1 * t975(9), 12);
    expect(p.interval[1]).toBeCloseTo(-0.1 + 0.1 * t975(9), 12);
  });

  test("t975 against tabulated quantiles of Student's t", () => {
    for (const [nu, q] of [[9, 2.262157], [30, 2.042272], [399, 1.965927], [1e9, 1.959964]] as const) {
      expect(Math.abs(t975(nu) / q - 1)).toBeLessThan(1e-3);
    }
    expect(Math.abs(t975(3) / 3.182446 - 1)).toBeLessThan(1e-2);
  });

  test("left-out images are skipped; strings that do not pair give null", () => {
    expect(pairedDifference("1-0", "0-0")!.n).toBe(2);
    expect(pairedDifference("10", "100")).toBeNull();
    expect(pairedDifference("1-", "11")).toBeNull();
  });
});

describe("suggestDefaults", () => {
  test("a cheaper cell within the margin of the best is chosen", () => {
    // 200 images; of every 100 the cheap cell loses 2 and gains 1: d̄ −0.01, sd √(5.98/199) ≈ 0.173,
    // half-width ≈ 1.97·0.173/√200 ≈ 0.024, so the lower end ≈ −0.034 > −MARGIN.
    const unit = "1".repeat(50) + "0".repeat(50);
    const cheapUnit = "1".repeat(48) + "00" + "1" + "0".repeat(49);
    const best = cell(20, 4, unit.repeat(2));
    const cheap = cell(10, 4, cheapUnit.repeat(2));
    const choice = suggestDefaults([best, cheap])!;
    expect(choice.best).toBe(best);
    expect(choice.chosen.cell).toBe(cheap);
    expect(choice.chosen.delta).toBeCloseTo(-0.01, 12);
    expect(choice.chosen.interval[0]).toBeGreaterThan(-MARGIN);
    expect(choice.chosen.interval[0]).toBeCloseTo(-0.0342, 3);
    expect(choice.line).toContain("ddim 10 steps, guidance 4");
  });

  test("with few images the interval is wide and the best cell stays", () => {
    const best = cell(20, 4, "1111");
    const cheap = cell(10, 4, "1100");
    const choice = suggestDefaults([best, cheap])!;
    expect(choice.chosen.cell).toBe(best);
    expect(choice.compared.find((c) => c.cell === cheap)!.asGood).toBe(false);
  });

  test("no comparison possible (one image per cell, or cells of other images) gives null, not a throw", () => {
    expect(suggestDefaults([cell(10, 4, "1"), cell(20, 4, "0")])).toBeNull();
    expect(suggestDefaults([cell(10, 4, "10"), cell(20, 4, "101")])).toBeNull();
  });

  test("a cheaper cell measurably worse is not chosen", () => {
    const best = cell(20, 4, "1".repeat(60) + "0".repeat(40));
    const cheap = cell(10, 4, "1".repeat(20) + "0".repeat(80)); // 40 of 100 images lost, none gained
    const choice = suggestDefaults([cheap, best])!;
    expect(choice.chosen.cell).toBe(best);
    expect(choice.compared.find((c) => c.cell === cheap)!.asGood).toBe(false);
  });

  test("equal hard retrieval goes to the cheaper cell; guidance 1 halves the cost", () => {
    expect(costOf({ steps: 10, guidance: 4 })).toBe(20);
    expect(costOf({ steps: 10, guidance: 1 })).toBe(10);
    const a = cell(20, 3, "1100");
    const b = cell(10, 3, "1100");
    expect(suggestDefaults([a, b])!.best).toBe(b);
  });

  test("cells without outcomes (older results.json) are not judged", () => {
    const old: JudgedCell = { scheduler: "ddim", steps: 10, guidance: 4, hardRetrieval: 0.9 };
    expect(suggestDefaults([old, cell(20, 4, "10")])).toBeNull();
    const withOld = suggestDefaults([old, cell(20, 4, "1010"), cell(10, 4, "1010")])!;
    expect(withOld.chosen.cell.steps).toBe(10);
    expect(withOld.line).toContain("not judged (no per-image outcomes): ddim 10 steps, guidance 4");
  });
});
