import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";

const run = (args: string[]) => Bun.spawnSync([process.execPath, "api/cli/generate.ts", ...args], { stdout: "pipe", stderr: "pipe" });

describe("bun run generate", () => {
  test("writes a PNG of the requested batch and shows progress with it/s and ETA", async () => {
    const out = join(mkdtempSync(join(tmpdir(), "dg-cli-")), "x.png");
    const p = run(["--pipeline", "pipelines/tiny-sd.json", "--prompt", "red heart", "--steps", "3", "--scheduler", "euler", "--batch", "2", "--seed", "9", "--out", out]);
    expect(p.exitCode).toBe(0);
    expect(p.stderr.toString()).toMatch(/3\/3 steps +[\d.]+ it\/s +ETA/);
    expect(p.stdout.toString()).toMatch(/wrote .*x\.png: 2× 64×64 \(×4\) "red heart" — tiny-sd, euler, 3 steps, guidance 7\.5, seed 9/);
    const meta = await sharp(out).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(["png", 512, 256]); // 2 columns × 64 px × 4
  });

  test("img2img from a PNG file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "dg-cli-"));
    await sharp({ create: { width: 40, height: 30, channels: 3, background: "#ff0000" } }).png().toFile(join(dir, "in.png"));
    const p = run(["--pipeline", "pipelines/tiny-sd.json", "--prompt", "x", "--steps", "4", "--image", join(dir, "in.png"), "--strength", "0.5", "--out", join(dir, "o.png")]);
    expect(p.exitCode).toBe(0);
    expect(p.stderr.toString()).toMatch(/2\/2 steps|3\/3 steps/); // PNDM: floor(4·0.5) steps (+1 PLMS warm-up evaluation)
  });

  test("bad arguments fail with a message naming them and exit 1", () => {
    const cases: [string[], RegExp][] = [
      [["--steps", "3"], /generate: --prompt is required/],
      [["--prompt", "x", "--steps", "many"], /--steps must be a number/],
      [["--prompt", "x", "--steps", "0", "--pipeline", "pipelines/tiny-sd.json"], /steps: .*>=1/],
      [["--prompt", "x", "--pipeline", "pipelines/nope.json"], /pipelines\/nope\.json: file not found/],
      [["--prompt", "x", "--pipeline", "pipelines/tiny-sd.json", "--scheduler", "eulr"], /unknown plugin "eulr".*Did you mean "euler"/],
      [["--prompt", "x", "--bogus"], /Unknown option '--bogus'/],
    ];
    for (const [args, re] of cases) {
      const p = run(args);
      expect(p.exitCode).toBe(1);
      expect(p.stderr.toString()).toMatch(re);
    }
  });
});
