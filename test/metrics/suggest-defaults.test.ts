/**
 * api/cli/suggest-defaults.ts: pipeline defaults from an eval grid by hard retrieval. The paired
 * difference and its interval are checked against values worked out by hand; the choice against
 * grids built so that the answer is known.
 */
import { describe, expect, test } from "bun:test";
import { costOf, pairedDifference, suggestDefaults, type JudgedCell } from "../../api/cli/suggest-defaults.ts";

const cell = (steps: number, guidance: number, outcomes: string, scheduler = "ddim"): JudgedCell => {
  const measured = [...outcomes].filter((c) => c !== "-");
  return { scheduler, steps, guidance, hardOutcomes: outcomes, hardRetrieval: measured.filter((c) => c === "1").length / measured.length };
};

describe("pairedDifference", () => {
  test("mean and 95 % interval of the per-image differences (hand-computed)", () => {
    // d = (0,0,0,0,−1,0,0,0,0,0): mean −0.1, sample sd √(0.9/9) = √0.1, half-width 1.96·√0.1/√10 = 0.196.
    const p = pairedDifference("1111000000", "1111100000")!;
    expect(p.n).toBe(10);
    expect(p.delta).toBeCloseTo(-0.1, 12);
    expect(p.interval[0]).toBeCloseTo(-0.1 - 0.196, 12);
    expect(p.interval[1]).toBeCloseTo(-0.1 + 0.196, 12);
  });

  test("left-out images are skipped; strings that do not pair give null", () => {
    expect(pairedDifference("1-0", "0-0")!.n).toBe(2);
    expect(pairedDifference("10", "100")).toBeNull();
    expect(pairedDifference("1-", "11")).toBeNull();
  });
});

describe("suggestDefaults", () => {
  test("a cheaper cell within the noise of the best is chosen", () => {
    const best = cell(20, 4, "1111100000".repeat(4)); // 0.5
    // 0.4: of every ten images two lost, one gained; d̄ −0.1, interval [−0.269, +0.069] reaches 0.
    const cheap = cell(10, 4, "1110010000".repeat(4));
    const choice = suggestDefaults([best, cheap])!;
    expect(choice.best).toBe(best);
    expect(choice.chosen.cell).toBe(cheap);
    expect(choice.chosen.interval[1]).toBeGreaterThan(0);
    expect(choice.line).toContain("ddim 10 steps, guidance 4");
  });

  test("a cheaper cell measurably worse is not chosen", () => {
    const best = cell(20, 4, "1".repeat(60) + "0".repeat(40));
    const cheap = cell(10, 4, "1".repeat(20) + "0".repeat(80)); // 40 of 100 images lost, none gained
    const choice = suggestDefaults([cheap, best])!;
    expect(choice.chosen.cell).toBe(best);
    expect(choice.compared.find((c) => c.cell === cheap)!.notWorse).toBe(false);
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
  });
});
