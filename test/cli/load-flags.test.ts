/**
 * `bun run generate`'s loading flags (issue 13): `--metrics` runs the pipeline's metric nodes and
 * prints them (without it they are not run, and their models are not loaded); `--graph-cache DIR`
 * gets one optimized graph per model a run created; bad thread counts fail naming the flag.
 */
import { expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const run = (args: string[]) => Bun.spawnSync([process.execPath, "api/cli/generate.ts", "--prompt", "red heart", "--steps", "2", "--provider", "cpu", ...args], { stdout: "pipe", stderr: "pipe" });

test("--metrics prints the CLIP score; without it no metric line; --graph-cache DIR holds one optimized graph per model the runs created", () => {
  const dir = mkdtempSync(join(tmpdir(), "dg-cli-load-"));
  try {
    const cache = join(dir, "cache");
    const plain = run(["--pipeline", "pipelines/emoji-64.json", "--out", join(dir, "a.png"), "--graph-cache", cache, "--threads", "1"]);
    expect(plain.exitCode).toBe(0);
    expect(plain.stdout.toString()).not.toContain("metrics:");
    // The three models a text-to-image run uses, and not the CLIP towers or the VAE encoder.
    expect(readdirSync(cache).filter((f) => f.endsWith(".onnx"))).toHaveLength(3);
    const withMetrics = run(["--pipeline", "pipelines/emoji-64.json", "--out", join(dir, "b.png"), "--graph-cache", cache, "--metrics"]);
    expect(withMetrics.exitCode).toBe(0);
    expect(withMetrics.stdout.toString()).toMatch(/^metrics: clip\.score -?\d+\.\d{4}, clip\.min -?\d+\.\d{4}, clip\.max -?\d+\.\d{4}$/m);
    expect(readdirSync(cache).filter((f) => f.endsWith(".onnx"))).toHaveLength(5);
    expect(withMetrics.stderr.toString()).not.toMatch(/onnxruntime|Serializing/);
    const none = run(["--pipeline", "pipelines/tiny-sd.json", "--out", join(dir, "c.png"), "--graph-cache", "off", "--metrics"]);
    expect(none.stdout.toString()).toContain("metrics: none (tiny-sd has no metric nodes)");
    const bad = run(["--pipeline", "pipelines/tiny-sd.json", "--threads", "0"]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr.toString()).toContain('--threads: must be a whole number ≥ 1, got "0"');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
