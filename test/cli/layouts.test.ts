/** Each issue-16 fixture end to end through `bun run generate --pipeline models/<fixture>`, and `--mask`. */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";

// Each test spawns a CLI that creates real sessions: seconds on a shared 2-core machine beside other
// suites, past Bun's default 5 s (bunfig's timeout is not read here).
setDefaultTimeout(60_000);

describe("bun run generate on the model-layout fixtures", () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-cli-layouts-"));
  // A cache folder of their own: each fixture's first start writes its optimized graphs, the second loads them.
  const env = { ...process.env, DIFFGRAPH_CACHE_DIR: join(dir, "cache") };
  const run = (args: string[]) => Bun.spawnSync([process.execPath, "api/cli/generate.ts", "--provider", "cpu", ...args], { stdout: "pipe", stderr: "pipe", env });
  for (const [fixture, args, want] of [
    ["tiny-sdxl", ["--steps", "3", "--negative", "blue"], /tiny-sdxl, euler, 3 steps, guidance 7\.5/],
    ["tiny-sd-turbo", ["--steps", "1", "--guidance", "0"], /tiny-sd-turbo, euler, 1 steps, guidance 0/],
    ["tiny-lcm", [], /tiny-lcm, lcm, 4 steps, guidance 8\.5/],
    ["tiny-sd-external", ["--steps", "2", "--size", "64"], /tiny-sd-external, pndm, 2 steps/],
  ] as const) {
    test(`${fixture}: from the model, then from the graphs it cached (same image)`, async () => {
      const images: Buffer[] = [];
      for (const start of ["first", "cached"]) {
        const out = join(dir, `${fixture}-${start}.png`);
        const p = run(["--pipeline", `models/${fixture}`, "--prompt", "a (red:1.2) heart", ...args, "--out", out]);
        expect(p.stderr.toString()).not.toMatch(/error/i);
        expect([start, p.exitCode, p.signalCode ?? null]).toEqual([start, 0, null]);
        expect(p.stdout.toString()).toMatch(want);
        const meta = await sharp(out).metadata();
        expect([meta.format, meta.width, meta.height]).toEqual(["png", 256, 256]);
        images.push(readFileSync(out));
      }
      expect(images[1]!.equals(images[0]!)).toBe(true);
    });
  }

  test("--mask on the inpainting fixture and on a 4-channel model; --mask without --image is refused", async () => {
    await sharp({ create: { width: 64, height: 64, channels: 3, background: "#3080c0" } }).png().toFile(join(dir, "in.png"));
    const half = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < 64 * 64; i++) if (i % 64 < 32) half.fill(255, i * 3, i * 3 + 3);
    await sharp(half, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(join(dir, "mask.png"));
    for (const pipeline of ["models/tiny-sd-inpaint", "pipelines/tiny-sd.json"]) {
      const p = run(["--pipeline", pipeline, "--prompt", "x", "--steps", "4", "--image", join(dir, "in.png"), "--mask", join(dir, "mask.png"), "--strength", "1", "--out", join(dir, "o.png")]);
      expect(p.stderr.toString()).not.toMatch(/error/i);
      expect(p.exitCode).toBe(0);
    }
    const bad = run(["--pipeline", "pipelines/tiny-sd.json", "--prompt", "x", "--mask", join(dir, "mask.png")]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toMatch(/--mask needs --image/);
  });
});
