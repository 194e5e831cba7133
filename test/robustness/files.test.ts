/**
 * Corrupted model files (issue 10, defect 8): every file of the tiny-sd and emoji-64 folders,
 * corrupted in each way `corrupt.ts` knows — truncated, bit-flipped (seeded), not ONNX, a model in
 * the wrong slot, JSON that is not JSON, of the wrong type, with a key missing, out of range, NaN or
 * Infinity, a file missing — must fail to open or dry-run with one line naming the file at fault.
 * A few go through the CLI too (`bun api/cli/generate.ts`): exit 1, one stderr line naming the file.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { diffgraph } from "../helpers.ts";
import { copyModel, fileCases, pipelineFor, type FileCase } from "./corrupt.ts";

const base = mkdtempSync(join(tmpdir(), "dg-files-"));
afterAll(() => rmSync(base, { recursive: true, force: true }), 60_000);

let n = 0;
/** A fresh corrupted copy; returns what to open (the folder, or a pipeline file pointing at it) and the path to expect. */
function prepare(c: FileCase): { target: string; expected: string; cleanup(): void } {
  const caseDir = join(base, `case-${n++}`);
  const dir = join(caseDir, "model");
  mkdirSync(dir, { recursive: true });
  copyModel(c.model, dir, { manifest: c.manifest, touches: c.touches });
  c.apply(dir);
  const target = c.via === "folder" ? dir : pipelineFor(c.model, dir, join(dir, "..", "pipeline.json"));
  // The node adapter shows paths relative to the working directory.
  return { target, expected: relative(process.cwd(), join(dir, c.file)), cleanup: () => rmSync(caseDir, { recursive: true, force: true }) };
}

/** The error opening and dry-running `target` gives, or null. A Diffgraph per case: its sessions go with it. */
async function failure(target: string): Promise<string | null> {
  const dg = await diffgraph();
  try {
    const p = await dg.openPipeline(target);
    try {
      await p.check();
    } finally {
      await p.dispose();
    }
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await dg.dispose();
  }
}

const cases = fileCases();

describe(`corrupted model files (${cases.length} cases)`, () => {
  test("the cases cover every file of tiny-sd a pipeline reads, and emoji-64's configs and preview projection", () => {
    const files = new Set(cases.filter((c) => c.model === "tiny-sd").map((c) => c.file));
    for (const f of ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"]) {
      expect(files.has(f)).toBe(true);
    }
    const emoji = new Set(cases.filter((c) => c.model === "emoji-64").map((c) => c.file));
    for (const f of ["preview/projection.json", "unet/config.json", "vae_decoder/config.json", "vae_encoder/config.json", "text_encoder/config.json"]) expect(emoji.has(f)).toBe(true);
  });

  for (const c of cases) {
    test(c.name, async () => {
      const { target, expected, cleanup } = prepare(c);
      const message = await failure(target);
      cleanup();
      if (message === null) throw new Error(`accepted silently${c.seed !== undefined ? ` (seed ${c.seed})` : ""}`);
      expect(message).toContain(expected);
      expect(message).not.toContain("\n");
    });
  }
});

describe("through the CLI: exit 1 and one stderr line naming the file", () => {
  const picks = [
    "tiny-sd unet/model.onnx truncated to 50 % (via folder)",
    "tiny-sd scheduler/scheduler_config.json steps_offset past the schedule (1000) (via folder)",
    "tiny-sd tokenizer/tokenizer.json empty vocab (via pipeline)",
    "tiny-sd vae_decoder/model.onnx 1 bit flipped anywhere (seed 11) (via folder)",
    "emoji-64 preview/projection.json missing (via pipeline)",
  ];
  for (const name of picks) {
    test(name, () => {
      const c = cases.find((k) => k.name === name);
      if (!c) throw new Error(`no case "${name}"`);
      const { target, expected } = prepare(c);
      const out = join(base, `cli-${n}.png`);
      const p = Bun.spawnSync([process.execPath, "api/cli/generate.ts", "--pipeline", target, "--prompt", "x", "--steps", "1", "--provider", "cpu", "--out", out]);
      const stderr = p.stderr.toString().trim().split("\n").filter((l) => !l.startsWith("onnx: "));
      expect(p.exitCode).toBe(1);
      expect(stderr).toHaveLength(1);
      expect(stderr[0]).toStartWith("generate: ");
      expect(stderr[0]).toContain(expected);
    });
  }
});
