// Renders the training pairs of the super-resolution stage (`models/emoji-sr-256`, issue 14): every
// base emoji of three SVG emoji sets at 256×256 on white (sharp / librsvg), its 64×64 version (4×4 area
// average of the 256 render: what a rasteriser with 4×4 supersampling draws at 64 px) and that 64 px
// image after a round trip through the emoji-64 VAE (the blur and artefacts the base model's decoder
// leaves, which the SR stage learns to repair). Called by `models/recipes/train_sr.py`, which pins and
// installs the packages; usage (repo root):
//   node_modules/.bin/bun models/recipes/render_sr.ts NODE_MODULES OUT_DIR [--limit N]
// Writes OUT_DIR/hr.u8 [N,256,256,3], lr.u8 and vae.u8 [N,64,64,3] (uint8 RGB, HWC) and
// OUT_DIR/index.json (one entry per image: style, code points, base emoji, held-out flag).
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";
import * as ort from "onnxruntime-node";

const [nm, out, ...rest] = process.argv.slice(2);
if (!nm || !out) throw new Error("usage: render_sr.ts NODE_MODULES OUT_DIR [--limit N]");
const limit = rest[0] === "--limit" ? Number(rest[1]) : Infinity;
const ROOT = join(import.meta.dir, "..", "..");
const HR = 256;
const LR = 64;
sharp.concurrency(1);

/** Code points as emoji-datasource writes `unified`, without FE0F (presentation selectors vary by set). */
const norm = (hex: string) => hex.toUpperCase().split("-").filter((p) => p !== "FE0F").join("-");

// Base emoji of every code point sequence (a skin-tone variant maps to its base), from emoji-datasource.
const ed = JSON.parse(readFileSync(join(nm, "emoji-datasource", "emoji.json"), "utf8")) as {
  unified: string;
  skin_variations?: Record<string, { unified: string }>;
}[];
const baseOf = new Map<string, string>();
for (const e of ed) {
  baseOf.set(norm(e.unified), e.unified);
  for (const v of Object.values(e.skin_variations ?? {})) baseOf.set(norm(v.unified), e.unified);
}
const split = JSON.parse(readFileSync(join(ROOT, "models", "emoji-64", "split.json"), "utf8")) as { heldout_base_unified: string[] };
const heldout = new Set(split.heldout_base_unified);

interface Item { style: string; unified: string; base: string; heldout: boolean; svg: string }
const items: Item[] = [];
const seen = new Set<string>();
const add = (style: string, hex: string, svg: () => string | undefined) => {
  const key = norm(hex);
  const base = baseOf.get(key);
  // Base emojis only: skin-tone variants add little for super-resolution and cost render time.
  if (!base || norm(base) !== key || seen.has(`${style}|${key}`)) return;
  const text = svg();
  if (!text) return;
  seen.add(`${style}|${key}`);
  items.push({ style, unified: base, base, heldout: heldout.has(base), svg: text });
};

/** Give an SVG document's root element width and height of `HR` so librsvg draws it at exactly HR px. */
const sized = (svg: string) => svg.replace(/<svg\b([^>]*)>/, (_m, attrs: string) => `<svg${attrs.replace(/\s(width|height)="[^"]*"/g, "")} width="${HR}" height="${HR}">`);

// Twemoji: one SVG file per sequence, named by lowercase code points.
const tw = join(nm, "@twemoji", "svg");
for (const f of readdirSync(tw).filter((f) => f.endsWith(".svg")).sort()) {
  add("twemoji", f.slice(0, -4), () => sized(readFileSync(join(tw, f), "utf8")));
}
// Iconify sets: icons.json bodies, chars.json maps code points to icon names.
for (const [style, pkg] of [["noto", "noto"], ["fluent", "fluent-emoji-flat"]] as const) {
  const dir = join(nm, "@iconify-json", pkg);
  const set = JSON.parse(readFileSync(join(dir, "icons.json"), "utf8")) as {
    width?: number; height?: number;
    icons: Record<string, { body: string; width?: number; height?: number; left?: number; top?: number }>;
    aliases?: Record<string, { parent: string; hFlip?: boolean; vFlip?: boolean; rotate?: number }>;
  };
  const chars = JSON.parse(readFileSync(join(dir, "chars.json"), "utf8")) as Record<string, string>;
  const resolve = (name: string) => {
    if (set.icons[name]) return set.icons[name];
    const a = set.aliases?.[name];
    // A flipped or rotated alias would need a transform: such icons are skipped.
    if (a && !a.hFlip && !a.vFlip && !a.rotate) return set.icons[a.parent];
    return undefined;
  };
  for (const hex of Object.keys(chars).sort()) {
    add(style, hex, () => {
      const icon = resolve(chars[hex]!);
      if (!icon) return undefined;
      const w = icon.width ?? set.width ?? 16;
      const h = icon.height ?? set.height ?? 16;
      return `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="${HR}" height="${HR}" viewBox="${icon.left ?? 0} ${icon.top ?? 0} ${w} ${h}">${icon.body}</svg>`;
    });
  }
}
items.sort((a, b) => (a.style + a.unified).localeCompare(b.style + b.unified));
const todo = items.slice(0, Number.isFinite(limit) ? limit : items.length);
console.log(`render_sr: ${items.length} base-emoji SVGs (${items.filter((i) => i.heldout).length} held out); rendering ${todo.length}`);

mkdirSync(out, { recursive: true });
const n = todo.length;
const hr = new Uint8Array(n * HR * HR * 3);
const lr = new Uint8Array(n * LR * LR * 3);
const t0 = performance.now();
for (let i = 0; i < n; i++) {
  const { data, info } = await sharp(Buffer.from(todo[i]!.svg), { density: 72 })
    .resize(HR, HR, { fit: "contain", background: "#ffffff" })
    .flatten({ background: "#ffffff" })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.width !== HR || info.height !== HR || info.channels !== 3) throw new Error(`${todo[i]!.style} ${todo[i]!.unified}: rendered ${info.width}x${info.height}x${info.channels}`);
  hr.set(data, i * HR * HR * 3);
  const f = HR / LR;
  for (let y = 0; y < LR; y++)
    for (let x = 0; x < LR; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) s += data[((y * f + dy) * HR + x * f + dx) * 3 + c]!;
        lr[i * LR * LR * 3 + (y * LR + x) * 3 + c] = Math.round(s / (f * f));
      }
  if ((i + 1) % 500 === 0) console.log(`render_sr: ${i + 1}/${n} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

// VAE round trip of the 64 px images through the committed emoji-64 ONNX encoder (posterior mean) and decoder.
const vae = new Uint8Array(lr.length);
const vaeDir = join(ROOT, "models", "emoji-64");
if (!existsSync(join(vaeDir, "vae_encoder", "model.onnx"))) throw new Error(`${vaeDir}/vae_encoder/model.onnx: file not found`);
const opts = { intraOpNumThreads: 1, interOpNumThreads: 1 };
const enc = await ort.InferenceSession.create(join(vaeDir, "vae_encoder", "model.onnx"), opts);
const dec = await ort.InferenceSession.create(join(vaeDir, "vae_decoder", "model.onnx"), opts);
const B = 64;
const P = LR * LR;
for (let s = 0; s < n; s += B) {
  const b = Math.min(B, n - s);
  const x = new Float32Array(b * 3 * P);
  for (let k = 0; k < b; k++)
    for (let p = 0; p < P; p++) for (let c = 0; c < 3; c++) x[(k * 3 + c) * P + p] = (lr[((s + k) * P + p) * 3 + c]! / 255) * 2 - 1;
  const z = (await enc.run({ sample: new ort.Tensor("float32", x, [b, 3, LR, LR]) })).latent_sample!;
  const y = (await dec.run({ latent_sample: z })).sample!.data as Float32Array;
  for (let k = 0; k < b; k++)
    for (let p = 0; p < P; p++)
      for (let c = 0; c < 3; c++) vae[((s + k) * P + p) * 3 + c] = Math.round(Math.min(1, Math.max(0, (y[(k * 3 + c) * P + p]! + 1) / 2)) * 255);
}
writeFileSync(join(out, "hr.u8"), hr);
writeFileSync(join(out, "lr.u8"), lr);
writeFileSync(join(out, "vae.u8"), vae);
writeFileSync(join(out, "index.json"), JSON.stringify({ hr: HR, lr: LR, n, items: todo.map(({ svg: _svg, ...rest }) => rest) }));
console.log(`render_sr: wrote ${n} pairs to ${out} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
