// The emoji model's sample grid through diffgraph's own CLI: one `bun api/cli/generate.ts` process per
// prompt (the 16 fixed prompts of models/recipes/sample_prompts.json, seed 0, the pipeline's defaults
// unless --steps/--guidance/--scheduler are given), the PNGs tiled 4 × 4 at 2× nearest zoom. What a user
// typing `bun run generate --prompt "…"` gets, not the Python sampler. Usage (repo root):
//   node_modules/.bin/bun models/recipes/samples_cli.ts [--pipeline P] [--out PNG] [--steps N] [--guidance G] [--scheduler S]
// (defaults pipelines/emoji-64.json, models/emoji-64/samples.png)
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { pipeline: { type: "string" }, out: { type: "string" }, steps: { type: "string" }, guidance: { type: "string" }, scheduler: { type: "string" } },
});
const pipeline = values.pipeline ?? "pipelines/emoji-64.json";
const out = values.out ?? "models/emoji-64/samples.png";
const prompts = JSON.parse(readFileSync(new URL("./sample_prompts.json", import.meta.url), "utf8")) as string[];
const extra = [
  ...(values.steps ? ["--steps", values.steps] : []),
  ...(values.guidance ? ["--guidance", values.guidance] : []),
  ...(values.scheduler ? ["--scheduler", values.scheduler] : []),
];
const TILE = 128; // 64 px images at 2× nearest
const dir = mkdtempSync(join(tmpdir(), "diffgraph-samples-"));
try {
  const tiles: sharp.OverlayOptions[] = [];
  for (const [k, prompt] of prompts.entries()) {
    const file = join(dir, `${k}.png`);
    const p = Bun.spawnSync([process.execPath, "api/cli/generate.ts", "--pipeline", pipeline, "--prompt", prompt, "--seed", "0", "--out", file, ...extra], { stderr: "pipe", stdout: "pipe" });
    if (p.exitCode !== 0) throw new Error(`generate "${prompt}" exited ${p.exitCode}: ${p.stderr.toString().trim()}`);
    tiles.push({ input: await sharp(file).resize(TILE, TILE, { kernel: "nearest" }).png().toBuffer(), left: (k % 4) * TILE, top: Math.floor(k / 4) * TILE });
    console.log(`${String(k + 1).padStart(2)}/${prompts.length} ${prompt}`);
  }
  await sharp({ create: { width: 4 * TILE, height: Math.ceil(prompts.length / 4) * TILE, channels: 3, background: "#ffffff" } }).composite(tiles).png().toFile(out);
  console.log(`wrote ${out} (${pipeline}, seed 0${extra.length ? ", " + extra.join(" ") : ", pipeline defaults"})`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
