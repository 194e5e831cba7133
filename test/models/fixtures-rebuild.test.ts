/** The committed layout fixtures are what models/make_tiny_variants.py builds, byte for byte (skips without torch/onnx, fails under CI). */
import { expect, test } from "bun:test";
import { cpSync, mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const HAS_TORCH = Bun.spawnSync(["/usr/bin/python3", "-c", "import torch, onnx"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0 || !!process.env.CI;
if (!HAS_TORCH) console.warn("torch/onnx for /usr/bin/python3 missing: the layout-fixture rebuild check is skipped");

const list = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? list(join(dir, n)).map((f) => join(n, f)) : [n])).sort();

test.skipIf(!HAS_TORCH)("tiny-sdxl, tiny-sd-turbo, tiny-lcm, tiny-sd-inpaint and tiny-sd-external rebuild identically", () => {
  const out = mkdtempSync(join(tmpdir(), "dg-variants-"));
  cpSync("models/tiny-sd", join(out, "tiny-sd"), { recursive: true }); // tiny-sd-external is made from it
  const p = Bun.spawnSync(["/usr/bin/python3", "models/make_tiny_variants.py", "--out", out], { stdout: "pipe", stderr: "pipe" });
  expect(p.exitCode, p.stderr.toString().slice(-500)).toBe(0);
  for (const d of ["tiny-sdxl", "tiny-sd-turbo", "tiny-lcm", "tiny-sd-inpaint", "tiny-sd-external"]) {
    const files = list(join("models", d));
    expect(list(join(out, d)), d).toEqual(files);
    for (const f of files) expect(Buffer.from(readFileSync(join(out, d, f))).equals(readFileSync(join("models", d, f))), `${d}/${f}`).toBe(true);
  }
}, 120_000);
