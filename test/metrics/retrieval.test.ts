/**
 * Hard retrieval (plugins/metrics/retrieval.ts): top-1 among a whole caption pool. The pure function on
 * hand-made vectors (known top-1, ties, a caption missing from the pool), against the numpy reference
 * of the same definition (models/recipes/caption_pool.py, which also defines the pool), and through
 * `bun run eval` on tiny-sd with the test evaluation CLIP: the column in results.json/CSV/plots, the
 * real-image ceiling against a direct computation, --retrieval-pool errors, and an older results.json.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileSource } from "../../core/adapters/node.ts";
import { createRng } from "../../core/random.ts";
import { concat0, type Tensor } from "../../core/tensor.ts";
import type { Results } from "../../api/cli/report.ts";
import { tensorToPng } from "../../api/image.ts";
import { readImage } from "../../api/cli/image-file.ts";
import { ClipImageTower, ClipTextTower } from "../../plugins/metrics/clip-eval.ts";
import { retrievalPool, retrievedTop1, RetrievalTally } from "../../plugins/metrics/retrieval.ts";
import { HAS_PYTHON_REFERENCE } from "../python-reference.ts";
import { testRuntime } from "../helpers.ts";

// These tests spawn `bun run eval` several times; bun takes no test timeout from bunfig.toml, and on the
// loaded 2-core machine its 5 s default cuts them off.
setDefaultTimeout(120_000);

const t = (rows: number[][]): Tensor => ({ dims: [rows.length, rows[0]!.length], data: Float32Array.from(rows.flat()) });

/** Pool features by caption, handed to retrievalPool as its text tower. */
const embedder = (byCaption: Record<string, number[]>) => async (texts: readonly string[]) => t(texts.map((c) => byCaption[c]!));

describe("hard retrieval, by hand", () => {
  const vectors = { a: [2, 0], b: [0, 1], c: [-1, 0] }; // a deliberately not unit length

  test("top-1 known; a tie counts against the caption; a caption outside the pool is left out", async () => {
    const pool = await retrievalPool(["a", "b", "c", "a"], embedder(vectors));
    expect(pool.captions).toEqual(["a", "b", "c"]); // duplicates dropped, order kept
    const images = t([
      [1, 0.1], // a
      [0.1, 3], // b (norm 3: cosines normalise)
      [1, 1], // a and b tie
      [-5, -0.2], // c
      [0, 0], // all cosines 0: a three-way tie
    ]);
    const top = (i: number, c: string) => retrievedTop1(images, i, pool, pool.index.get(c)!);
    expect([top(0, "a"), top(0, "b"), top(0, "c")]).toEqual([true, false, false]);
    expect([top(1, "a"), top(1, "b")]).toEqual([false, true]);
    expect([top(2, "a"), top(2, "b"), top(2, "c")]).toEqual([false, false, false]);
    expect(top(3, "c")).toBe(true);
    expect([top(4, "a"), top(4, "b"), top(4, "c")]).toEqual([false, false, false]);

    const tally = new RetrievalTally(pool);
    tally.add(images, ["a", "a", "b", "c", "z"]); // hit, miss, miss (tie), hit, left out
    expect({ hits: tally.hits, measured: tally.measured, excluded: tally.excluded, rate: tally.rate }).toEqual({ hits: 2, measured: 4, excluded: 1, rate: 0.5 });
    tally.add(t([[0, 1]]), ["b"]);
    expect([tally.hits, tally.measured, tally.rate]).toEqual([3, 5, 0.6]);
    // Per image, in the order added (what bun run eval keeps to compare cells image by image).
    expect(tally.outcomes).toBe("1001-1");
  });

  test("exact string equality; a lone caption is always retrieved; no measured image gives null", async () => {
    const pool = await retrievalPool(["a"], embedder(vectors));
    const tally = new RetrievalTally(pool);
    tally.add(t([[-1, 0]]), ["A"]); // not "a"
    expect([tally.measured, tally.excluded, tally.rate]).toEqual([0, 1, null]);
    tally.add(t([[-1, 0]]), ["a"]);
    expect(tally.rate).toBe(1);
    expect(() => tally.add(t([[1, 0]]), ["a", "a"])).toThrow("2 captions for 1 images");
    await expect(retrievalPool([], embedder(vectors))).rejects.toThrow("empty");
  });
});

function numpyReference(req: Record<string, unknown>): { hits: number; measured: number; excluded: number; caption_pool: string[] | null } {
  const p = Bun.spawnSync(["/usr/bin/python3", "models/recipes/caption_pool.py", "--check"], { stdin: Buffer.from(JSON.stringify(req)) });
  if (p.exitCode !== 0) throw new Error(p.stderr.toString());
  return JSON.parse(p.stdout.toString());
}

describe.skipIf(!HAS_PYTHON_REFERENCE)("hard retrieval against numpy (models/recipes/caption_pool.py)", () => {
  test("the same hits on random features, ties included; the caption pool's definition", async () => {
    const rng = createRng(17);
    const normal = (n: number, d: number) => Array.from({ length: n }, () => Array.from({ length: d }, () => rng.normal()));
    const poolCaptions = Array.from({ length: 60 }, (_, k) => `caption ${k}`);
    const poolRows = normal(60, 6);
    poolRows[7] = [...poolRows[3]!]; // two captions with one embedding: never retrieved
    const imageRows = normal(40, 6);
    // Images near their caption's vector, so there are hits as well as misses.
    const captions = imageRows.map((row, i) => {
      const k = i % 20 === 19 ? -1 : Math.floor(rng.uniform() * 60);
      if (k >= 0 && i % 2 === 0) row.forEach((_, j) => (row[j] = poolRows[k]![j]! + 0.6 * row[j]!));
      return k < 0 ? "not in the pool" : poolCaptions[k]!;
    });
    imageRows[0] = poolRows[3]!.map((x) => 2 * x); // caption 3 and 7 tie exactly
    captions[0] = "caption 3";
    const pool = await retrievalPool(poolCaptions, async () => t(poolRows));
    const tally = new RetrievalTally(pool);
    tally.add(t(imageRows), captions);
    const caps = [
      { label: "thumbs up" }, { label: "thumbs up: medium skin tone" }, { label: "keycap: 1" }, { label: "flag: Japan" },
      { label: "held out" }, { label: "thumbs up" }, { label: "dark skin tone" }, { label: "zebra" },
    ];
    const hexes = ["1F44D", "1F44D-1F3FD", "0031-FE0F-20E3", "1F1EF-1F1F5", "1F600", "1F44D", "1F3FF", "1f993"];
    const heldout = [false, false, false, false, true, false, false, false];
    const ref = numpyReference({ image_embeds: imageRows, pool_embeds: poolRows, pool: poolCaptions, captions, caps, hexes, heldout });
    console.log(`hard retrieval: ours ${tally.hits}/${tally.measured} (${tally.excluded} left out) vs numpy ${ref.hits}/${ref.measured} (${ref.excluded})`);
    expect(tally.hits).toBeGreaterThan(3);
    expect(tally.hits).toBeLessThan(tally.measured);
    expect({ hits: tally.hits, measured: tally.measured, excluded: tally.excluded }).toEqual({ hits: ref.hits, measured: ref.measured, excluded: ref.excluded });
    expect(retrievedTop1(t(imageRows), 0, pool, 3)).toBe(false);
    // Keycaps and flags are base emojis; a skin-tone code point (even alone) or a held-out image is not.
    expect(ref.caption_pool).toEqual(["flag: Japan", "keycap: 1", "thumbs up", "zebra"]);
  });
});

const FIXTURE = "test/metrics/fixtures/clip-eval"; // its clip_eval/captions.json (18 captions) is the default pool
const ARGS = ["--pipeline", "pipelines/tiny-sd.json", "--eval-models", FIXTURE, "--schedulers", "ddim", "--steps", "2", "--provider", "cpu", "--threads", "1"];

function evalCli(args: string[]) {
  const p = Bun.spawnSync(["./node_modules/.bin/bun", "api/cli/eval.ts", ...ARGS, ...args]);
  return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

describe("bun run eval: hard retrieval", () => {
  const onnx = testRuntime();
  afterAll(() => onnx.dispose());

  test("a column per cell and for the real set (checked directly), images outside the pool counted; older results.json recomputed", async () => {
    const dir = mkdtempSync(`${tmpdir()}/diffgraph-hard-`);
    const rng = createRng(3);
    const items = [];
    for (const [i, caption] of ["red heart", "pizza", "rocket", "not a caption"].entries()) {
      const img = { dims: [1, 3, 64, 64], data: Float32Array.from({ length: 3 * 64 * 64 }, () => rng.uniform()) };
      writeFileSync(`${dir}/${i}.png`, await tensorToPng(img));
      items.push({ file: `${i}.png`, caption });
    }
    writeFileSync(`${dir}/set.json`, JSON.stringify(items));
    const out = `${dir}/report`;
    const r = evalCli(["--real-set", `${dir}/set.json`, "--per-prompt", "2", "--out", out]);
    expect(r.stderr).not.toContain("eval:");
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`hard retrieval (top-1 among 18 captions of ${FIXTURE}/clip_eval/captions.json): 3 of 4 prompts are in it`);
    expect(r.stdout).toContain("6 of 8 images per cell measured (2 left out: caption not in the pool); real: 3 of 4");
    const results = JSON.parse(readFileSync(`${out}/results.json`, "utf8")) as Results;
    expect(results.settings.retrievalPool).toEqual({ source: `${FIXTURE}/clip_eval/captions.json`, captions: 18 });
    const cell = results.cells[0]!;
    expect(cell.images).toBe(8);
    expect(cell.hardRetrievalImages).toBe(6);
    expect(cell.hardRetrieval! * 6).toBeCloseTo(Math.round(cell.hardRetrieval! * 6), 10);
    // One outcome per image: prompts in order, 2 images each; the 4th prompt is not in the pool.
    expect(cell.hardOutcomes).toMatch(/^[01]{6}--$/);
    expect([...cell.hardOutcomes!].filter((c) => c === "1").length / 6).toBeCloseTo(cell.hardRetrieval!, 12);

    // The real ceiling, computed here from the towers and an argmax written out.
    const models = fileSource(FIXTURE);
    const files = { imageModel: "clip_eval/image_model.onnx", textModel: "clip_eval/text_model.onnx", tokenizer: "clip_eval/tokenizer", preprocessor: "clip_eval/preprocessor_config.json", maxBatch: 32 };
    const [image, text] = await Promise.all([ClipImageTower.load(models, onnx, files), ClipTextTower.load(models, onnx, files)]);
    const poolCaptions = JSON.parse(readFileSync(`${FIXTURE}/clip_eval/captions.json`, "utf8")) as string[];
    const pf = await text.embed(poolCaptions);
    const fi = await image.embed(concat0(await Promise.all(items.slice(0, 3).map((it) => readImage(`${dir}/${it.file}`, 64, 64)))));
    const d = pf.dims[1]!;
    const unit = (a: Float32Array) => {
      const n = Math.hypot(...a);
      return Array.from(a, (x) => x / n);
    };
    let hits = 0;
    for (const [i, it] of items.slice(0, 3).entries()) {
      const v = unit(fi.data.subarray(i * d, (i + 1) * d));
      const cos = poolCaptions.map((_, k) => unit(pf.data.subarray(k * d, (k + 1) * d)).reduce((s, x, j) => s + x * v[j]!, 0));
      if (poolCaptions[cos.indexOf(Math.max(...cos))] === it.caption) hits++;
    }
    expect(results.real!.hardRetrievalImages).toBe(3);
    expect(results.real!.hardRetrieval).toBeCloseTo(hits / 3, 10);

    const csv = readFileSync(`${out}/results.csv`, "utf8").split("\n");
    expect(csv[0]).toContain(",hardRetrieval,hardRetrievalImages,");
    expect(existsSync(`${out}/plots/hardRetrieval.png`)).toBe(true);
    expect(readFileSync(`${out}/index.html`, "utf8")).toContain("Hard retrieval: top-1 among all 18 captions");

    // A results.json from before the measure: same settings otherwise, cells without the field.
    const old = structuredClone(results) as unknown as { settings: Record<string, unknown>; cells: Record<string, unknown>[]; real: Record<string, unknown> };
    delete old.settings.retrievalPool;
    for (const c of [...old.cells, old.real]) {
      delete c.hardRetrieval;
      delete c.hardRetrievalImages;
    }
    writeFileSync(`${out}/results.json`, JSON.stringify(old));
    const again = evalCli(["--real-set", `${dir}/set.json`, "--per-prompt", "2", "--out", out]);
    expect(again.code).toBe(0);
    expect(again.stderr).toContain("results.json predates hard retrieval or its per-image outcomes: recomputing its 1 cell(s) of this grid");
    const redone = JSON.parse(readFileSync(`${out}/results.json`, "utf8")) as Results;
    expect(redone.cells).toHaveLength(1);
    expect(redone.cells[0]!.hardRetrieval).toBe(cell.hardRetrieval);
    expect(redone.cells[0]!.hardOutcomes).toBe(cell.hardOutcomes);
    expect(redone.cells[0]!.clipScore).toBeCloseTo(cell.clipScore, 10);
    expect(redone.real!.hardRetrieval).toBe(results.real!.hardRetrieval);

    // A cell with the measure but without its per-image outcomes is recomputed; the real set is kept.
    const noOutcomes = structuredClone(redone) as unknown as { cells: Record<string, unknown>[] };
    delete noOutcomes.cells[0]!.hardOutcomes;
    writeFileSync(`${out}/results.json`, JSON.stringify(noOutcomes));
    const third = evalCli(["--real-set", `${dir}/set.json`, "--per-prompt", "2", "--out", out]);
    expect(third.code).toBe(0);
    expect(third.stderr).toContain("recomputing its 1 cell(s) of this grid");
    expect((JSON.parse(readFileSync(`${out}/results.json`, "utf8")) as Results).cells[0]!.hardOutcomes).toBe(cell.hardOutcomes);

    // A different pool into the same folder is refused, not mixed.
    writeFileSync(`${dir}/pool.json`, JSON.stringify(["red heart", "pizza"]));
    const clash = evalCli(["--real-set", `${dir}/set.json`, "--per-prompt", "2", "--out", out, "--retrieval-pool", `${dir}/pool.json`]);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain('different "retrievalPool"');
  });

  test("--retrieval-pool errors name the flag and the file", () => {
    const dir = mkdtempSync(`${tmpdir()}/diffgraph-hard-err-`);
    const cases: [string, string, string][] = [
      [`${dir}/missing.json`, "", `--retrieval-pool ${dir}/missing.json: file not found`],
      [`${dir}/bad.json`, "[\"a\",", `--retrieval-pool ${dir}/bad.json: not valid JSON`],
      [`${dir}/numbers.json`, "[\"a\", 2]", `--retrieval-pool ${dir}/numbers.json: item 1 is not a string`],
      [`${dir}/object.json`, "{\"a\": 1}", `--retrieval-pool ${dir}/object.json: expected an array of prompts`],
      [`${dir}/empty.json`, "[]", `--retrieval-pool ${dir}/empty.json: no captions`],
    ];
    for (const [file, content, message] of cases) {
      if (content) writeFileSync(file, content);
      const r = evalCli(["--limit", "1", "--retrieval-pool", file, "--out", `${dir}/report`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(message);
    }
  });
});
