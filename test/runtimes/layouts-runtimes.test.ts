/**
 * The SDXL fixture (two text towers, text_embeds/time_ids, a long-enough weighted prompt) on Deno
 * with onnxruntime-web's WebGPU provider (Deno finds a CPU llvmpipe adapter here) and WASM, against
 * Bun/CPU: the latents within 1e-4 and every pixel within 1e-3.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { maxAbsDiff } from "../helpers.ts";

interface Out { host: string; provider: string; dims: number[]; data: number[]; latents: number[]; logs: string[] }

function runJson(cmd: string[]): Out {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const line = p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
  if (p.exitCode !== 0 || !line) throw new Error(`${cmd.join(" ")} exited ${p.exitCode}: ${p.stderr.toString().slice(-2000)}`);
  return JSON.parse(line) as Out;
}

const deno = "node_modules/.bin/deno";

describe("tiny-sdxl on every runtime", () => {
  const ref = () => runJson([process.execPath, "test/runtimes/layout-run.ts", "cpu", "models/tiny-sdxl"]);
  for (const provider of ["webgpu", "wasm"]) {
    test.skipIf(!existsSync(deno))(`Deno + onnxruntime-web ${provider} equals Bun/CPU`, () => {
      const r = ref();
      const d = runJson([deno, "run", "-A", "test/runtimes/layout-run.ts", provider, "models/tiny-sdxl"]);
      expect([d.host, d.provider]).toEqual(["deno", provider]);
      expect(d.dims).toEqual([1, 3, 64, 64]);
      expect(maxAbsDiff(d.latents, r.latents)).toBeLessThan(1e-4);
      expect(maxAbsDiff(d.data, r.data)).toBeLessThan(1e-3);
    }, 120_000);
  }
});

describe("WebGPU residency (Deno's adapter)", () => {
  test.skipIf(!existsSync(deno))("the text states stay on the GPU across runs of one prompt (one upload in all) and the latents are unchanged", () => {
    const p = Bun.spawnSync([deno, "run", "-A", "test/runtimes/residency-bench.ts", "2"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
    const line = p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("{")).at(-1);
    expect(p.exitCode, p.stderr.toString().slice(-1000)).toBe(0);
    const r = JSON.parse(line!) as Record<"on" | "off", { maxLatentDiffVsFirst: number; unet: { residentFeeds: number; uploadedBytes: number }; backend: string }>;
    expect(r.on.backend).toBe("onnxruntime-web/webgpu");
    expect(r.off.unet).toEqual({ residentFeeds: 0, uploadedBytes: 0 });
    expect(r.on.unet.residentFeeds).toBe(2); // encoder_hidden_states and text_embeds
    // 3 runs (warm-up + 2) of one prompt: the denoise node hands the UNet the same [uncond; cond]
    // arrays each run, so [2, 77, 40] states and [2, 24] pooled floats are uploaded once (16-byte aligned)
    expect(r.on.unet.uploadedBytes).toBe(2 * 77 * 40 * 4 + 2 * 24 * 4);
    expect(r.on.maxLatentDiffVsFirst).toBe(0);
  }, 120_000);
});

test.skipIf(!existsSync(deno))("WebGPU residency with two runs interleaved on one session: each run gets its solo latents", () => {
  const p = Bun.spawnSync([deno, "run", "-A", "test/runtimes/residency-concurrent.ts"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  expect(p.exitCode, p.stderr.toString().slice(-1000)).toBe(0);
  const r = JSON.parse(p.stdout.toString().trim().split("\n").filter((l) => l.startsWith("{")).at(-1)!) as { a: number; b: number; apart: number };
  expect(r.a).toBe(0);
  expect(r.b).toBe(0);
  expect(r.apart).toBeGreaterThan(1e-3);
}, 120_000);
