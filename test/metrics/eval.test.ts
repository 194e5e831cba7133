/**
 * `bun run eval` end to end on tiny-sd with the test evaluation CLIP: report files, and resuming a
 * grid that was cut off (only missing cells are recomputed).
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import type { Results } from "../../api/cli/report.ts";
import { tensorToPng } from "../../api/image.ts";
import { createRng } from "../../core/random.ts";

// These tests spawn `bun run eval` several times; bun takes no test timeout from bunfig.toml, and on the
// loaded 2-core machine its 5 s default cuts them off.
setDefaultTimeout(120_000);

const ARGS = ["--pipeline", "pipelines/tiny-sd.json", "--eval-models", "test/metrics/fixtures/clip-eval", "--schedulers", "ddim,euler",
  "--steps", "2,3", "--limit", "2", "--per-prompt", "2", "--provider", "cpu", "--threads", "1"];

function evalCli(out: string, extra: string[] = []) {
  const p = Bun.spawnSync(["./node_modules/.bin/bun", "api/cli/eval.ts", ...ARGS, "--out", out, ...extra]);
  return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("bun run eval", () => {
  test("writes results.json, CSV, PNG plots, grids and HTML; resumes a cut-off grid", () => {
    const out = `${mkdtempSync(`${tmpdir()}/diffgraph-eval-`)}/report`;
    const first = evalCli(out);
    expect(first.stderr).not.toContain("eval:");
    expect(first.code).toBe(0);
    const results = JSON.parse(readFileSync(`${out}/results.json`, "utf8")) as Results;
    expect(results.cells).toHaveLength(4);
    for (const c of results.cells) {
      expect(c.images).toBe(4);
      expect(Number.isFinite(c.clipScore) && Number.isFinite(c.rPrecision) && Number.isFinite(c.fd!)).toBe(true);
      expect(existsSync(`${out}/${c.grid}`)).toBe(true);
    }
    const csv = readFileSync(`${out}/results.csv`, "utf8").trim().split("\n");
    expect(csv).toHaveLength(5);
    expect(csv[0]).toStartWith("scheduler,steps,guidance");
    for (const p of ["clipScore", "rPrecision", "fd", "secondsPerImage"]) {
      const png = readFileSync(`${out}/plots/${p}.png`);
      expect([...png.subarray(1, 4)]).toEqual([0x50, 0x4e, 0x47]); // "PNG"
    }
    const html = readFileSync(`${out}/index.html`, "utf8");
    expect(html).toContain("plots/clipScore.png");
    expect(html).toContain("grids/ddim-3steps-g7.5.png");
    expect(first.stderr).toContain("16/16 images");

    // Cut the grid: drop the last cell as if the run had been killed during it.
    const cut = { ...results, cells: results.cells.slice(0, 3) };
    writeFileSync(`${out}/results.json`, JSON.stringify(cut));
    const second = evalCli(out);
    expect(second.code).toBe(0);
    expect(second.stderr).toContain("3 of 4 cells already done");
    const resumed = JSON.parse(readFileSync(`${out}/results.json`, "utf8")) as Results;
    expect(resumed.cells).toHaveLength(4);
    expect(resumed.cells.slice(0, 3)).toEqual(results.cells.slice(0, 3)); // untouched, not recomputed
    // Same seeds, same numbers for the recomputed cell.
    expect(resumed.cells[3]!.clipScore).toBeCloseTo(results.cells[3]!.clipScore, 10);
    expect(resumed.cells[3]!.fd!).toBeCloseTo(results.cells[3]!.fd!, 8);

    // Different settings into the same folder are refused, not mixed.
    const clash = evalCli(out, ["--seed", "5"]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain('different "seed"');
  });

  test("a real set gives the real-image ceiling row and its prompts", async () => {
    const dir = mkdtempSync(`${tmpdir()}/diffgraph-real-`);
    const rng = createRng(9);
    const items = [];
    for (const [i, caption] of ["red heart", "pizza", "rocket"].entries()) {
      const img = { dims: [1, 3, 64, 64], data: Float32Array.from({ length: 3 * 64 * 64 }, () => rng.uniform()) };
      writeFileSync(`${dir}/${i}.png`, await tensorToPng(img));
      items.push({ file: `${i}.png`, caption });
    }
    writeFileSync(`${dir}/set.json`, JSON.stringify(items));
    const r = Bun.spawnSync(["./node_modules/.bin/bun", "api/cli/eval.ts", ...ARGS.filter((a, i) => a !== "--limit" && ARGS[i - 1] !== "--limit"),
      "--steps", "2", "--schedulers", "ddim", "--real-set", `${dir}/set.json`, "--out", `${dir}/report`]);
    expect(r.stderr.toString()).not.toContain("eval:");
    const results = JSON.parse(readFileSync(`${dir}/report/results.json`, "utf8")) as Results;
    expect(results.settings.prompts).toEqual(["red heart", "pizza", "rocket"]);
    expect(results.real!.images).toBe(3);
    expect(Number.isFinite(results.real!.clipScore) && Number.isFinite(results.real!.fd!)).toBe(true);
    expect(readFileSync(`${dir}/report/index.html`, "utf8")).toContain("real images");
  });
});

test("a pipeline file naming its model folder by absolute path finds the evaluation CLIP there", () => {
  const dir = mkdtempSync(`${tmpdir()}/diffgraph-abs-`);
  const doc = JSON.parse(readFileSync("pipelines/emoji-64.json", "utf8"));
  doc.model = resolve("models/emoji-64");
  writeFileSync(`${dir}/p.json`, JSON.stringify(doc));
  const r = Bun.spawnSync(["./node_modules/.bin/bun", "api/cli/eval.ts", "--pipeline", `${dir}/p.json`, "--schedulers", "ddim", "--steps", "2",
    "--limit", "2", "--provider", "cpu", "--threads", "1", "--out", `${dir}/report`]);
  expect(r.stderr.toString()).not.toContain("eval:");
  expect(r.exitCode).toBe(0);
  expect((JSON.parse(readFileSync(`${dir}/report/results.json`, "utf8")) as Results).cells).toHaveLength(1);
});

describe("report helpers", () => {
  test("CSV quotes fields with commas/quotes and leaves nulls empty", async () => {
    const { toCsv } = await import("../../api/cli/report.ts");
    const csv = toCsv([{ scheduler: 'a,"b"', steps: 10, guidance: 4, images: 2, clipScore: 1.5, clipScoreStd: 0.1, rPrecision: 0.5, meanRank: 1.5, candidates: 100, hardRetrieval: 0.25, hardRetrievalImages: 2, fd: null, fdL2: null, secondsPerImage: 0.2, seconds: 0.4, grid: "grids/x.png", finishedAt: "" }]);
    expect(csv.split("\n")[1]).toBe('"a,""b""",10,4,2,1.5,0.1,0.5,1.5,100,0.25,2,,,0.2,0.4,grids/x.png');
  });
});
