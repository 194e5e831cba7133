/**
 * emoji-64-fp16 (float16 weight storage, float32 compute; models/recipes/make_fp16.py): about half
 * the generator's bytes, and images within a bound of the float32 model's for the same seed. The
 * committed folder is what the recipe makes from the committed emoji-64 (byte for byte).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { diffgraph } from "../helpers.ts";
import { HAS_PYTHON_REFERENCE } from "../python-reference.ts";

const onnxFiles = (dir: string) =>
  readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".onnx"))
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
const generatorBytes = (dir: string) => onnxFiles(dir).filter((f) => !f.startsWith("clip_eval/")).reduce((n, f) => n + statSync(join(dir, f)).size, 0);

describe("emoji-64-fp16", () => {
  test("stores the generator in at most 55 % of the float32 bytes", () => {
    const ratio = generatorBytes("models/emoji-64-fp16") / generatorBytes("models/emoji-64");
    expect(ratio).toBeLessThan(0.55);
    expect(ratio).toBeGreaterThan(0.45); // float16 is half of float32; far below means something was dropped
  });

  test("draws the float32 model's images within 0.02 per pixel (mean under 5e-4), with the same CLIP score within 0.5", async () => {
    const dg = await diffgraph();
    const f32 = await dg.openPipeline("pipelines/emoji-64.json");
    const f16 = await dg.openPipeline("pipelines/emoji-64-fp16.json");
    let max = 0;
    let sum = 0;
    let n = 0;
    for (const [i, prompt] of ["red heart", "cat face", "rainbow", "four leaf clover"].entries()) {
      const input = { prompt, seed: 100 + i, steps: 10 };
      const [a, b] = [await f32.run(input, { metrics: true }), await f16.run(input, { metrics: true })];
      for (let k = 0; k < a.images.data.length; k++) {
        const d = Math.abs(a.images.data[k]! - b.images.data[k]!);
        max = Math.max(max, d);
        sum += d;
        n++;
      }
      expect(Math.abs(a.metrics["clip.score"]! - b.metrics["clip.score"]!)).toBeLessThan(0.5);
      expect(a.images.data).not.toEqual(b.images.data); // it is a different model, not the same file
    }
    expect(max).toBeLessThan(0.02);
    expect(sum / n).toBeLessThan(5e-4);
    await dg.dispose();
  }, 60_000);

  test.skipIf(!HAS_PYTHON_REFERENCE)("the recipe rebuilds the committed folder byte for byte from emoji-64", () => {
    const out = mkdtempSync(join(tmpdir(), "dg-fp16-"));
    try {
      const p = Bun.spawnSync(["/usr/bin/python3", "models/recipes/make_fp16.py", "--out", join(out, "m")], { stdout: "pipe", stderr: "pipe" });
      expect(p.exitCode, p.stderr.toString()).toBe(0);
      expect(onnxFiles(join(out, "m"))).toEqual(onnxFiles("models/emoji-64-fp16"));
      for (const f of onnxFiles("models/emoji-64-fp16")) expect(Bun.hash(readFileSync(join(out, "m", f)))).toBe(Bun.hash(readFileSync(join("models/emoji-64-fp16", f))));
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);
});
