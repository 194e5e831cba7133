/**
 * Corrupted copies of the committed model folders, one per case, for the file-robustness suite
 * (`files.test.ts`). A case corrupts one file of a fresh copy (truncated or bit-flipped ONNX, bad
 * JSON of every kind, a missing file, a model in the wrong slot) and names the file an error must
 * point at. Random corruptions take a recorded seed, so a failing case replays exactly.
 *
 * Copies of emoji-64 link its large ONNX files instead of copying them, unless the case changes one.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createRng } from "../../core/random.ts";
import { MANIFEST_FILE } from "../../core/manifest.ts";

export type ModelName = "tiny-sd" | "emoji-64";

export interface FileCase {
  /** Unique, readable: "tiny-sd unet/model.onnx truncated to 50 %". */
  readonly name: string;
  readonly model: ModelName;
  /** The file (relative to the model folder) an error must name. */
  readonly file: string;
  /** Open the model folder itself, or through the committed pipeline file pointed at the copy. */
  readonly via: "folder" | "pipeline";
  /** Keep the committed manifest.sha256.json in the copy (bit flips only it can see). */
  readonly manifest: boolean;
  /** Seed of a random corruption (replay: the same seed flips the same bits). */
  readonly seed?: number;
  /** Files the corruption rewrites (copied rather than linked). */
  readonly touches: readonly string[];
  apply(dir: string): void;
}

const ROOT = resolve(import.meta.dir, "../..");

function filesOf(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...filesOf(dir, rel));
    else out.push(rel);
  }
  return out;
}

/** A copy of models/<model> at `dest`: small files copied, large ones linked unless `touches` names them. */
export function copyModel(model: ModelName, dest: string, options: { manifest: boolean; touches: readonly string[] }): void {
  const src = join(ROOT, "models", model);
  for (const rel of filesOf(src)) {
    if (rel === MANIFEST_FILE && !options.manifest) continue;
    const to = join(dest, rel);
    mkdirSync(dirname(to), { recursive: true });
    if (statSync(join(src, rel)).size > 256 * 1024 && !options.touches.includes(rel)) symlinkSync(join(src, rel), to);
    else copyFileSync(join(src, rel), to);
  }
}

/** A pipeline file for `model` (the committed one) whose `model` is the copy at `dir`. */
export function pipelineFor(model: ModelName, dir: string, file: string): string {
  const doc = JSON.parse(readFileSync(join(ROOT, "pipelines", `${model}.json`), "utf8")) as Record<string, unknown>;
  doc.model = dir;
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

const json = (dir: string, file: string): Record<string, any> => JSON.parse(readFileSync(join(dir, file), "utf8"));
const writeJson = (dir: string, file: string, value: unknown) => writeFileSync(join(dir, file), JSON.stringify(value, null, 1));
const editJson = (fn: (j: Record<string, any>) => unknown) => (file: string) => (dir: string) => {
  const j = json(dir, file);
  const r = fn(j);
  writeJson(dir, file, r === undefined ? j : r);
};
const writeText = (text: string) => (file: string) => (dir: string) => writeFileSync(join(dir, file), text);
const remove = (file: string) => (dir: string) => unlinkSync(join(dir, file));
const truncate = (fraction: number) => (file: string) => (dir: string) => {
  const bytes = readFileSync(join(dir, file));
  writeFileSync(join(dir, file), bytes.subarray(0, Math.floor(bytes.length * fraction)));
};
/** Flip `count` random bits, at offsets drawn from `seed` in [from, to) (to ≤ 0 counts from the end). */
const flipBits = (seed: number, count: number, from = 0, to = 0) => (file: string) => (dir: string) => {
  const bytes = new Uint8Array(readFileSync(join(dir, file)));
  const end = to <= 0 ? bytes.length + to : Math.min(to, bytes.length);
  const rng = createRng(seed);
  for (let i = 0; i < count; i++) {
    const at = from + Math.floor(rng.uniform() * (end - from));
    bytes[at]! ^= 1 << Math.floor(rng.uniform() * 8);
  }
  writeFileSync(join(dir, file), bytes);
};
/** Replace the JSON text with one whose numeric `key` is the literal NaN (not JSON). */
const nanValue = (key: string) => (file: string) => (dir: string) => {
  const text = readFileSync(join(dir, file), "utf8");
  const out = text.replace(new RegExp(`("${key}"\\s*:\\s*)[-0-9.e]+`), "$1NaN");
  if (out === text) throw new Error(`nanValue: no numeric "${key}" in ${file}`);
  writeFileSync(join(dir, file), out);
};
const copyFrom = (other: string) => (file: string) => (dir: string) => {
  rmSync(join(dir, file));
  copyFileSync(join(dir, other), join(dir, file));
};

type Corrupt = (file: string) => (dir: string) => void;
interface Spec {
  readonly what: string;
  readonly corrupt: Corrupt;
  readonly via?: readonly ("folder" | "pipeline")[];
  readonly manifest?: boolean;
  readonly seed?: number;
  /** The file the error must name, when not the corrupted one (a missing file named by another). */
  readonly blame?: string;
}

const ONNX_SPECS = (file: string, seeds: readonly number[], wrongSlot: string | undefined): Spec[] => [
  { what: "truncated to 50 %", corrupt: truncate(0.5) },
  { what: "truncated to 99 %", corrupt: truncate(0.99) },
  { what: "empty", corrupt: truncate(0) },
  { what: "not ONNX (text)", corrupt: writeText('{"not": "a model"}\n') },
  { what: "not ONNX (16 zero bytes)", corrupt: writeText("\0".repeat(16)) },
  { what: "missing", corrupt: remove, via: file.startsWith("vae_encoder/") ? ["pipeline"] : ["folder", "pipeline"] },
  ...(wrongSlot ? [{ what: `replaced by ${wrongSlot} (wrong slot)`, corrupt: copyFrom(wrongSlot) }] : []),
  ...seeds.flatMap((seed): Spec[] => [
    { what: `8 bits flipped in the header (seed ${seed})`, corrupt: flipBits(seed, 8, 0, 64), manifest: true, seed },
    { what: `1 bit flipped anywhere (seed ${seed})`, corrupt: flipBits(seed, 1), manifest: true, seed },
  ]),
];

const SCHEDULER_SPECS: Spec[] = [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[1, 2]") },
  { what: "steps_offset -1", corrupt: editJson((j) => void (j.steps_offset = -1)) },
  { what: "steps_offset past the schedule (1000)", corrupt: editJson((j) => void (j.steps_offset = 1000)) },
  { what: 'steps_offset "1" (a string)', corrupt: editJson((j) => void (j.steps_offset = "1")) },
  { what: "steps_offset 1.5", corrupt: editJson((j) => void (j.steps_offset = 1.5)) },
  { what: "num_train_timesteps 0", corrupt: editJson((j) => void (j.num_train_timesteps = 0)) },
  { what: "num_train_timesteps 1e999 (Infinity)", corrupt: (f) => (d) => writeFileSync(join(d, f), readFileSync(join(d, f), "utf8").replace(/("num_train_timesteps"\s*:\s*)\d+/, "$11e999")) },
  { what: "num_train_timesteps NaN", corrupt: nanValue("num_train_timesteps") },
  { what: 'beta_schedule "cosine"', corrupt: editJson((j) => void (j.beta_schedule = "cosine")) },
  { what: "beta_end below beta_start", corrupt: editJson((j) => void (j.beta_end = 1e-6)) },
  { what: "a misspelt key (beta_strat)", corrupt: editJson((j) => void (j.beta_strat = 0.001)) },
  { what: 'prediction_type "noise"', corrupt: editJson((j) => void (j.prediction_type = "noise")) },
  { what: "_class_name unknown", corrupt: editJson((j) => void (j._class_name = "FooScheduler")), via: ["folder"] },
  { what: "_class_name missing", corrupt: editJson((j) => void delete j._class_name), via: ["folder"] },
  { what: "missing", corrupt: remove },
];

const MODEL_INDEX_SPECS: Spec[] = [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  { what: "a string", corrupt: writeText('"OnnxStableDiffusionPipeline"') },
  { what: "empty object (no _class_name)", corrupt: writeText("{}") },
  { what: "_class_name a number", corrupt: editJson((j) => void (j._class_name = 5)) },
  { what: 'unet "x" (not a pair)', corrupt: editJson((j) => void (j.unet = "x")) },
  { what: "unet [null, null] (missing component)", corrupt: editJson((j) => void (j.unet = [null, null])), via: ["folder"] },
  { what: "an option that is an object", corrupt: editJson((j) => void (j.requires_safety_checker = { a: 1 })) },
  { what: "missing", corrupt: remove, via: ["folder"] },
];

const TOKENIZER_SPECS: Spec[] = [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  { what: 'model type "Foo"', corrupt: editJson((j) => void (j.model.type = "Foo")) },
  { what: "model type missing", corrupt: editJson((j) => void delete j.model.type) },
  { what: "empty vocab", corrupt: editJson((j) => void (j.model.vocab = {})) },
  { what: "vocab a string", corrupt: editJson((j) => void (j.model.vocab = "abc")) },
  { what: "no model", corrupt: editJson((j) => void delete j.model) },
  { what: "special tokens removed from the vocabulary", corrupt: editJson((j) => {
    j.added_tokens = [];
    for (const k of Object.keys(j.model.vocab)) if (/^(<\|endoftext\|>|<\|startoftext\|>|\[UNK\])$/.test(k)) delete j.model.vocab[k];
  }) },
  { what: "missing", corrupt: remove },
];

const TOKENIZER_CONFIG_SPECS: Spec[] = [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  { what: "pad_token not in the vocabulary", corrupt: editJson((j) => void (j.pad_token = "<|nope|>")) },
  { what: "eos_token not in the vocabulary", corrupt: editJson((j) => void (j.eos_token = "<|nope|>")) },
  { what: "pad_token a number", corrupt: editJson((j) => void (j.pad_token = 5)) },
  { what: "model_max_length -1", corrupt: editJson((j) => void (j.model_max_length = -1)) },
  { what: 'model_max_length "77"', corrupt: editJson((j) => void (j.model_max_length = "77")) },
  { what: "model_max_length 7.5", corrupt: editJson((j) => void (j.model_max_length = 7.5)) },
  { what: "model_max_length NaN", corrupt: nanValue("model_max_length") },
  { what: "missing", corrupt: remove },
];

const SPECIAL_TOKENS_SPECS: Spec[] = [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  { what: "pad_token a number", corrupt: editJson((j) => void (j.pad_token = 5)) },
  { what: "pad_token not in the vocabulary", corrupt: editJson((j) => void (j.pad_token = "<|nope|>")) },
];

const PROJECTION_SPECS: Spec[] = [
  { what: "missing", corrupt: remove, via: ["pipeline"] },
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  { what: "two rows of weights", corrupt: editJson((j) => void (j.weights = j.weights.slice(0, 2))) },
  { what: "weights for 3 latent channels (the model has 4)", corrupt: editJson((j) => void (j.weights = j.weights.map((r: number[]) => r.slice(0, 3)))) },
  { what: "rows of unequal length", corrupt: editJson((j) => void j.weights[1].pop()) },
  { what: "a weight NaN", corrupt: (f) => (d) => writeFileSync(join(d, f), readFileSync(join(d, f), "utf8").replace(/-?\d+\.\d+/, "NaN")) },
  { what: "a weight 1e999 (Infinity)", corrupt: (f) => (d) => writeFileSync(join(d, f), readFileSync(join(d, f), "utf8").replace(/-?\d+\.\d+/, "1e999")) },
  { what: "range [1, 1]", corrupt: editJson((j) => void (j.range = [1, 1])) },
];

const configSpecs = (keys: Record<string, unknown>): Spec[] => [
  { what: "not JSON", corrupt: truncate(0.5) },
  { what: "an array", corrupt: writeText("[]") },
  ...Object.entries(keys).map(([k, v]): Spec => ({ what: `${k} ${JSON.stringify(v)}`, corrupt: editJson((j) => void (j[k] = v)) })),
];

function expand(model: ModelName, file: string, specs: readonly Spec[]): FileCase[] {
  return specs.flatMap((s) =>
    (s.via ?? ["folder", "pipeline"]).map((via): FileCase => ({
      name: `${model} ${file} ${s.what} (via ${via})`,
      model,
      file: s.blame ?? file,
      via,
      manifest: s.manifest ?? false,
      ...(s.seed !== undefined ? { seed: s.seed } : {}),
      touches: [file],
      apply: s.corrupt(file),
    })),
  );
}

const SEEDS = [11, 12];

/** Every case, tiny-sd first. */
export function fileCases(): FileCase[] {
  const tiny: FileCase[] = [
    ...expand("tiny-sd", "text_encoder/model.onnx", ONNX_SPECS("text_encoder/model.onnx", SEEDS, "unet/model.onnx")),
    ...expand("tiny-sd", "unet/model.onnx", ONNX_SPECS("unet/model.onnx", SEEDS, "vae_decoder/model.onnx")),
    ...expand("tiny-sd", "vae_decoder/model.onnx", ONNX_SPECS("vae_decoder/model.onnx", SEEDS, "vae_encoder/model.onnx")),
    ...expand("tiny-sd", "vae_encoder/model.onnx", ONNX_SPECS("vae_encoder/model.onnx", SEEDS, "vae_decoder/model.onnx")),
    ...expand("tiny-sd", "scheduler/scheduler_config.json", SCHEDULER_SPECS),
    ...expand("tiny-sd", "model_index.json", MODEL_INDEX_SPECS),
    ...expand("tiny-sd", "tokenizer/tokenizer.json", TOKENIZER_SPECS),
    ...expand("tiny-sd", "tokenizer/tokenizer_config.json", TOKENIZER_CONFIG_SPECS),
    ...expand("tiny-sd", "tokenizer/special_tokens_map.json", SPECIAL_TOKENS_SPECS),
  ];
  const emoji: FileCase[] = [
    ...expand("emoji-64", "preview/projection.json", PROJECTION_SPECS),
    ...expand("emoji-64", "unet/config.json", configSpecs({ sample_size: "8", in_channels: 3 })),
    ...expand("emoji-64", "vae_decoder/config.json", configSpecs({ scaling_factor: "0.57", latent_channels: 0 })),
    ...expand("emoji-64", "vae_encoder/config.json", configSpecs({ scaling_factor: 0.18215 })),
    ...expand("emoji-64", "text_encoder/config.json", configSpecs({ vocab_size: 100, max_position_embeddings: 8 })),
    ...expand("emoji-64", "scheduler/scheduler_config.json", [
      { what: "steps_offset past the schedule (5000, trailing spacing)", corrupt: editJson((j) => void (j.steps_offset = 5000)) },
      { what: "beta_schedule a number", corrupt: editJson((j) => void (j.beta_schedule = 3)) },
    ]),
    ...expand("emoji-64", "tokenizer/tokenizer.json", [{ what: 'model type "WordLevel"', corrupt: editJson((j) => void (j.model.type = "WordLevel")) }]),
    ...expand("emoji-64", "unet/model.onnx", [
      { what: "truncated to 50 %", corrupt: truncate(0.5) },
      { what: "1 bit flipped anywhere (seed 21)", corrupt: flipBits(21, 1), manifest: true, seed: 21 },
    ]),
  ];
  const all = [...tiny, ...emoji];
  const names = new Set(all.map((c) => c.name));
  if (names.size !== all.length) throw new Error("fileCases: duplicate case names");
  return all;
}
