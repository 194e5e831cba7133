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
