#!/usr/bin/python3
"""Writes models/emoji-64/README.md (the model card) from the recipe's outputs:
metrics.json, the ONNX files, split.json and the training checkpoints in models/.cache/, and the
card's measured text that no output holds (how the committed weights were made, the eval tables, the
levers tried): EXTRA_JSON, or models/recipes/emoji-64-card.json when no MODEL_DIR is given.

    /usr/bin/python3 models/recipes/write_card.py [MODEL_DIR] [CACHE_DIR] [EXTRA_JSON]
"""
import json, os, sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "emoji-64")
CACHE = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "models", ".cache")
# The committed card's text describes the committed weights: another folder (a --quick run) gets it only when asked.
EXTRA = json.load(open(sys.argv[3])) if len(sys.argv) > 3 else \
    json.load(open(os.path.join(HERE, "emoji-64-card.json"))) if len(sys.argv) <= 1 else {}


def onnx_params(path):
    import onnx
    m = onnx.load(path)
    return int(sum(np.prod(t.dims) for t in m.graph.initializer))


def io(path):
    import onnx
    m = onnx.load(path)
    inits = {t.name for t in m.graph.initializer}
    T = {1: "float32", 7: "int64"}

    def fmt(v):
        dims = [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]
        return f"`{v.name}` {T.get(v.type.tensor_type.elem_type, v.type.tensor_type.elem_type)} [{', '.join(dims)}]"
    ins = [fmt(v) for v in m.graph.input if v.name not in inits]
    return ", ".join(ins) + " → " + ", ".join(fmt(v) for v in m.graph.output)


M = json.load(open(os.path.join(OUT, "metrics.json")))
split = json.load(open(os.path.join(OUT, "split.json")))
vae = json.load(open(os.path.join(OUT, "vae_decoder", "config.json")))
tokc = json.load(open(os.path.join(OUT, "tokenizer", "tokenizer_config.json")))
tokj = json.load(open(os.path.join(OUT, "tokenizer", "tokenizer.json")))
proj = json.load(open(os.path.join(OUT, "preview", "projection.json")))
files = ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx",
         "clip_eval/text_model.onnx", "clip_eval/image_model.onnx"]
rows, total = [], 0
for f in files:
    p = os.path.join(OUT, f)
    sz = os.path.getsize(p)
    total += sz
    rows.append(f"| `{f}` | {onnx_params(p)/1e6:.2f} M | {sz/1e6:.2f} MB | {io(p)} |")
ck = lambda n: torch.load(os.path.join(CACHE, n), map_location="cpu")
ae, cl, ce, un = ck("ae.pt"), ck("clip.pt"), ck("clipeval.pt"), ck("unet.pt")
dec = ck("ae_dec.pt") if os.path.exists(os.path.join(CACHE, "ae_dec.pt")) else None
sel = json.load(open(os.path.join(CACHE, "select.json"))) if os.path.exists(os.path.join(CACHE, "select.json")) else None
nodes = json.load(open(os.path.join(CACHE, "export_nodes.json"))) if os.path.exists(os.path.join(CACHE, "export_nodes.json")) else {}
cells = {(c["steps"], c["guidance"]): c["top1"] for c in M.get("hard_top1_gen_grid", [])}
default_cell = (EXTRA.get("default_steps", 20), float(EXTRA.get("default_guidance", 4)))
hard_ratio = cells.get(default_cell, float("nan")) / max(M.get("hard_top1_real_train", 0), 1e-9)
mins = lambda s: f"{s/60:.1f} min"
ratio = M["rprec_gen_train"] / max(M["rprec_real_train"], 1e-9)

def hard_section():
    if not cells:
        return ""
    steps = sorted({st for st, _ in cells})
    gs = sorted({g for _, g in cells})
    head = "| steps \\ guidance | " + " | ".join(f"{g:g}" for g in gs) + " |"
    rows_ = "\n".join(f"| {st} | " + " | ".join(f"{cells[(st, g)]:.3f}" for g in gs) + " |" for st in steps)
    return f"""**Hard retrieval** — the measure that picks checkpoints and defaults: each image's own CLDR label must
be the nearest (by `clip_eval` cosine) among **all {M['hard_pool']} training base-emoji captions**
(definition: `models/recipes/caption_pool.py`; the same in `bun run eval`). {M['hard_n']} training base
emojis, one random style each; real images score **{M['hard_top1_real_train']:.3f}** (the ceiling this judge
allows). Generated (Python DDIM, seed 14), by steps × guidance:

{head}
|---|{'---|' * len(gs)}
{rows_}

At the defaults ({default_cell[0]} steps, guidance {default_cell[1]:g}): generated / real =
**{hard_ratio:.2f}** (bar 0.8). The 16 fixed prompts: generated {M['hard_top1_gen_fixed']:.3f}
({round(M['hard_top1_gen_fixed'] * M['hard_fixed_n'])} of {M['hard_fixed_n']}), their real images {M['hard_top1_real_fixed']:.3f}.
{EXTRA.get('hard_v3', '')}
"""


card = f"""# emoji-64: diffgraph's embedded default text-to-image model

A tiny latent diffusion model (Stable Diffusion's architecture in miniature) trained from scratch on
~7,600 emoji images, 64×64 pixels. It is the offline default of the CLI, the API and the demos: it
needs no model hub and runs on a laptop CPU. It draws emoji-like pictures for short prompts such as
"red heart", "rocket" or "four leaf clover"; it is not a general image model.

![samples](samples.png)

`samples.png`: the 16 fixed prompts "red heart", "grinning face", "thumbs up", "pizza" / "cat face",
"rocket", "sun", "crying face" / "rainbow", "banana", "fire", "star" / "ghost", "smiling face with
sunglasses", "hamburger", "four leaf clover" (row by row), each drawn by diffgraph's own CLI
(`bun run generate --prompt … --seed 0`, the pipeline's defaults: {EXTRA.get('defaults', 'DDIM, 20 steps, guidance 4')}),
64 px upscaled ×2 (nearest); made by `node_modules/.bin/bun models/recipes/samples_cli.ts`.

## Layout (diffusers ONNX layout, `OnnxStableDiffusionPipeline`)

| file | parameters | size | tensors (name dtype [shape]) |
|---|---|---|---|
{chr(10).join(rows)}

All ONNX files: opset 14, float32, dynamic batch axis (and dynamic sequence axis for `input_ids`),
exported **lean**: reshapes and GroupNorms emit constant ONNX Reshape targets (0 = copy the batch
dimension) instead of torch's Shape → Gather → Unsqueeze → Concat chains. Nodes per file, plain
trace → lean: {', '.join(f"{k} {v['plain']['nodes']} → {v['lean']['nodes']}" for k, v in nodes.items())}.
{EXTRA.get('ort_nodes', '')}
total {total/1e6:.1f} MB of weights (budget 40 MB). Checked against torch with onnxruntime-node
(`models/recipes/check_onnx.ts`): max abs difference {EXTRA.get('onnx_max_diff', 'n/a')}.

- `model_index.json`, `scheduler/scheduler_config.json` (`DDIMScheduler`, 1000 train steps,
  `squaredcos_cap_v2`, `v_prediction`, `timestep_spacing: trailing`, `set_alpha_to_one: false`,
  `steps_offset: 0`, `clip_sample: false`; `beta_start`/`beta_end` are present but unused by the cosine
  schedule), `unet/config.json` (`sample_size` 8, `in_channels` 4, `cross_attention_dim`
  {json.load(open(os.path.join(OUT, 'unet', 'config.json')))['cross_attention_dim']}),
  `vae_decoder/config.json` and `vae_encoder/config.json` (`scaling_factor` **{vae['scaling_factor']:.5f}**,
  `sample_size` 64, `latent_channels` 4), `text_encoder/config.json`.
- **text_encoder**: `input_ids` int64 [batch, sequence] → `last_hidden_state` float32
  [batch, sequence, 128] (what the UNet cross-attends to, as in SD) and `text_embeds` float32
  [batch, 128] (hidden state at the first `<|endoftext|>` token — which is also the padding token —
  after the final layer norm, linearly projected; CLIP-style). Causal self-attention, so the padding
  after the first `<|endoftext|>` does not change the pooled embedding.
- **unet**: `sample` float32 [batch, 4, 8, 8] (scaled latents), `timestep` float32 [batch] (any real
  value in [0, 999]: the network embeds it sinusoidally, so fractional timesteps of Euler/DPM-type
  schedulers are fine), `encoder_hidden_states` float32 [batch, sequence, 128] → `out_sample` float32
  [batch, 4, 8, 8], a **v-prediction**. Besides cross-attending to `encoder_hidden_states`, the network
  pools them (mean over tokens and the last position, which under the text encoder's causal attention
  has seen the whole prompt) through a small MLP into its timestep embedding, as SDXL adds its pooled
  text embedding: every ResBlock then knows what to draw. The inputs stay Stable Diffusion's.
- **vae_decoder**: `latent_sample` float32 [batch, 4, 8, 8] — *unscaled* latents: divide the UNet's
  latents by `scaling_factor` first, as SD pipelines do — → `sample` float32 [batch, 3, 64, 64] in
  [-1, 1] (clamped inside the graph).
- **vae_encoder**: `sample` float32 [batch, 3, 64, 64] in [-1, 1] → `latent_sample` float32
  [batch, 4, 8, 8], unscaled; this export returns the **posterior mean** (SD's export samples from the
  posterior instead). Multiply by `scaling_factor` before adding noise (img2img).
- **tokenizer/** (`tokenizer.json`, `tokenizer_config.json`): Hugging Face format, loads with
  `@huggingface/tokenizers` (`new Tokenizer(tokenizerJson, tokenizerConfig)`). Lowercase normalizer,
  `BertPreTokenizer` (split on whitespace and punctuation, each punctuation character its own token),
  a `WordPiece` model whose vocabulary holds whole words only ({len(tokj['model']['vocab'])} entries) —
  i.e. word-level: a word not in the vocabulary becomes `[UNK]` (id 0) — and a `TemplateProcessing`
  post-processor that adds `<|startoftext|>` (id 1) before and `<|endoftext|>` (id 2) after the sequence,
  like CLIP. `model_max_length` {tokc['model_max_length']}; `pad_token` = `eos_token` = `<|endoftext|>`
  (id 2), `bos_token` `<|startoftext|>`, `unk_token` `[UNK]`. The pipeline encodes, truncates to 16
  and pads with id 2; an empty prompt is `[1, 2, 2, …]`, which is the unconditional input the model was
  trained with. The vocabulary was built from the captions of all emojis, held-out ones included (their
  words exist in the vocabulary but were never trained on).
- **clip_eval/**: a second, independently trained mini-CLIP used **only for metrics** (CLIP score,
  R-precision, Fréchet distance), never for conditioning: `text_model.onnx` (`input_ids` → `text_embeds`
  [batch, 80]), `image_model.onnx` (`pixel_values` [batch, 3, 64, 64] → `image_embeds` [batch, 80]),
  `preprocessor_config.json` (HF CLIP style: RGB on white, rescale 1/255, normalise mean 0.5 std 0.5,
  i.e. [-1, 1]; size 64), `tokenizer/` (a copy of the same tokenizer). The embeddings are
  **unnormalised**: L2-normalise them before taking cosines.
- **preview/projection.json**: `{{"input": "scaled_latents", "weights": [[r0..r3], [g0..g3], [b0..b3]],
  "bias": [r, g, b], "range": [0, 1]}}`: `rgb01 = W·z + b` for each of the 8×8 latent pixels, `z` the
  *scaled* latent (what the UNet sees); upsample nearest to 64×64 and clamp to [0, 1]. Fitted by least
  squares against 8×8 average-pooled training images ({proj['fit']}).
- `split.json`: the held-out evaluation split. `metrics.json`: the figures below.

## Data, licences and attribution

| package (npm, pinned) | content used | licence |
|---|---|---|
| `emoji-datasource-twitter@16.0.0` | 64×64 PNGs `img/twitter/64/` (**Twemoji** graphics, © Twitter, Inc. and other contributors / jdecked/twemoji) | graphics **CC-BY 4.0**; package MIT |
| `emoji-datasource-google@16.0.0` | 64×64 PNGs `img/google/64/` (**Noto Color Emoji**, © Google) | graphics **Apache License 2.0**; package MIT |
| `emoji-datasource@16.0.0` (iamcal/emoji-data, © Cal Henderson) | `emoji.json`: code points, Unicode names, short names, skin variations | MIT |
| `emojibase-data@17.0.0` (© Miles Johnson) | `en/data.json`: CLDR labels and tags | MIT (labels derive from Unicode CLDR, Unicode licence) |

The model's outputs imitate Twemoji and Noto emoji artwork. Attribution: *Emoji graphics by Twemoji
(CC-BY 4.0, https://github.com/jdecked/twemoji) and Google Noto Emoji (Apache 2.0,
https://github.com/googlefonts/noto-emoji).* Keep this attribution when redistributing the model.

Images: RGBA composited on white; {split['n_images']} images ({split['n_base_emojis']} base emojis ×
their skin-tone variants × 2 styles). Captions per image, sampled during training: the CLDR label
("thumbs up: medium skin tone", 55 %), the `emoji.json` name or a short name with underscores as
spaces plus the tone suffix (20 %), the label with 1–3 tags or only tags (25 %), and in 15 % of cases
the style ("twemoji"/"noto") added; 10 % of UNet training captions are replaced by "" (classifier-free
guidance). The text encoder and the UNet draw their batches **balanced over base emojis** (a base emoji
uniformly, then one of its styles and skin tones): drawing images uniformly let person and hand emojis
(up to 26 images each) crowd out objects (2 each) — 36 of the 38 training captions holding the word
"rocket" belong to astronauts. The VAE and the metric CLIP draw images uniformly.

**Held-out split**: {round(100*split['heldout_fraction'])} % of the base emojis ({len(split['heldout_base_unified'])} of
{split['n_base_emojis']}, chosen with `random.Random({split['seed']}).sample` over the sorted base code
points), with all their styles and skin tones ({split['n_heldout_images']} images), are excluded from
training of every component (VAE, both CLIPs, UNet). The list is in `split.json`.

## Recipe

```
/usr/bin/python3 models/recipes/train.py            # full recipe, into models/emoji-64/
/usr/bin/python3 models/recipes/train.py --quick --out /tmp/x   # every stage for a few steps (CI)
```

Debian's `python3-torch` (1.13), `python3-onnx`, `python3-scipy`, `python3-pil`; the data packages are
installed by the recipe with npm into `models/.cache/npm/`. Stages `data tok ae latents clip
clipeval unet select export eval`, each resumable from checkpoints in `models/.cache/`. `--unet-deadline HH:MM` /
`--unet-extend-until HH:MM` fit the UNet stage to a wall-clock budget. `--device cpu|cuda` chooses
where the training stages run (export and eval always run on the CPU); `--threads N` torch's CPU
threads. Stage `select` picks the UNet weights among the final EMA and EMA snapshots taken every
1,000 steps by hard retrieval on 200 training captions{f" (this run: {sel['selected']} of {', '.join(f'{k} {v:.3f}' for k, v in sel['scores'].items())})" if sel else ""}.
`models/recipes/check_onnx.ts` checks the ONNX files and the tokenizer from bun;
`models/recipes/eval_sets.py` writes the real-image sets `bun run eval` measures against;
`models/recipes/write_card.py` writes this card.{EXTRA.get('recipe_note', '')}

**Hardware of the committed weights: {EXTRA.get('hardware', 'CPU')}.** Training on the 2-core CPU
machine (shared with other work, so the times are inflated), 2 torch threads:

| stage | what | steps × batch | time |
|---|---|---|---|
| VAE | KL autoencoder 3×64×64 ↔ 4×8×8 (f = 8), L1 + 1e-4·KL, posterior noise floor 0.1, AdamW 1e-3 cosine, h-flip | {EXTRA.get('vae_steps', 1200)} × 32{EXTRA.get('vae_note', '')} | {mins(ae['seconds'])} |
{f"| VAE decoder fine-tune (stage `dec`) | the decoder alone, encoder frozen (latents and everything trained on them unchanged): L1 + {EXTRA.get('dec_edge', 0.5)} × L1 of the images' finite differences (edges){' + a PatchGAN hinge loss, adaptively weighted (× ' + str(EXTRA['dec_gan_weight']) + ' of the gradient ratio at the last layer, from step ' + str(EXTRA.get('dec_gan_start', 300)) + ')' if EXTRA.get('dec_gan_weight') else ''}, Adam 2e-4; reconstruction L1 {dec['l1_before']:.4f} → {dec['l1']:.4f}, sharpness (mean finite difference, reconstructions / real) {dec['sharpness_before']:.3f} → {dec['sharpness']:.3f} on 400 training images | {dec['steps']} × 32 | {mins(dec['seconds'])} |" + chr(10) if dec else ""}| text encoder | mini-CLIP: 4-layer causal transformer (width 128) vs. a conv encoder over the VAE latents, contrastive (soft targets for equal labels) **plus a training-only head naming each caption's CLDR label among all {EXTRA.get('n_labels', '~3,800')} training labels** (cross-entropy on the pooled embedding and on the last position, which the UNet pools){EXTRA.get('clip_note', '')} | {EXTRA.get('clip_steps', 1000)} × 256 | {mins(cl['seconds'])} |
| UNet | 2-level UNet (96/160 channels) with self- and cross-attention blocks at 8×8 and 4×4 and pooled text conditioning added to the timestep embedding, v-prediction, discrete cosine schedule, AdamW 1e-3 with 200-step warm-up and a cosine decay to 1e-4 in wall time to the `--unet-deadline`, EMA 0.997, 10 % caption dropout, on cached posterior means × scaling_factor | {un['steps']} × 128 | {mins(un['seconds'])} |
| eval CLIP | 3-layer transformer (width 80) vs. conv image encoder on pixels (pooled to 32×32 inside), other seed | 250 × 128 | {mins(ce['seconds'])} |
| export + eval | ONNX export, Python sampler and metrics, fixture | — | {mins(M['eval_seconds'])} eval |

## Quality

Two measurements: the recipe's own **Python sampler and metrics** (stage `eval`: DDIM, v-prediction,
trailing spacing, η = 0, **20 steps, guidance 4**; metric network `clip_eval`), which is what picks a
model during training, and below it diffgraph's **`bun run eval`** over three schedulers and three step
counts.

{hard_section()}

**CLIP R-precision** (top-1 of 100 captions; each image's own CLDR label against the labels of the
other 99 images; {M['rprec_n_train']} base emojis (no skin-tone variants), one random style each):

| captions | real images (ceiling) | generated (DDIM 20) | generated / real |
|---|---|---|---|
| training | {M['rprec_real_train']:.2f} | {M['rprec_gen_train']:.2f} | {ratio:.2f} |
| held-out | {M['rprec_real_heldout']:.2f} | {M['rprec_gen_heldout']:.2f} | {M['rprec_gen_heldout']/max(M['rprec_real_heldout'],1e-9):.2f} |

Bar: generated ≥ 0.6 × real on training captions at 20 steps — **{'met' if ratio >= 0.6 else 'NOT met'}** ({ratio:.2f}).
Mean CLIP score (100 × cosine) on the same sets: training real {M['clipscore_real_train']:.1f}, generated
{M['clipscore_gen_train']:.1f}; held-out real {M['clipscore_real_heldout']:.1f}, generated {M['clipscore_gen_heldout']:.1f}.

**Fréchet distance** on L2-normalised `clip_eval` image embeddings (80-d), {M['fd_n']} vs {M['fd_n']} images,
training split; reference set A = {M['fd_n']} real images:

| set compared with A | FD |
|---|---|
| {M['fd_n']} other real images (floor) | {M['fd_floor_real_vs_real']:.4f} |
| VAE reconstructions of those images | {M['fd_vae_recon']:.4f} |
| generated from those images' labels (DDIM 20, guidance 4) | {M['fd_generated']:.4f} |

VAE reconstruction mean L1 (pixels in [-1, 1]): {M['vae_recon_l1']:.4f}. Preview projection mean abs error
(RGB in [0, 1], 8×8): {M['preview_mae']:.3f}.

{EXTRA.get('speed', '')}

{EXTRA.get('bun_eval', '')}

## Known limitations
{EXTRA.get('notes', '')}

- 64×64 only, emoji-like pictures only; small (≈ {total/4e6:.1f} M parameters in all).
- The UNet was trained for only {un['steps']} steps ({mins(un['seconds'])}) on a shared 2-core CPU: shapes are
  blurry, fine details (faces' expressions, text on keycaps, flags) are often wrong; colours and coarse
  shapes follow the prompt. Held-out emojis are generally not drawn correctly (the model has not seen them).
- Word-level tokenizer: words not in the emoji captions become `[UNK]`; no sub-words, no spelling
  robustness. Labels longer than 14 words (multi-person skin-tone combinations) are truncated.
- The VAE encoder export returns the posterior mean, not a sample.
- Skin tones, flags and multi-person sequences are weak.
- All quality figures are judged by the small `clip_eval` network (R-precision over 100 captions has a
  standard error of about 0.05); it is trained on the same emoji as the generator, never on held-out ones.
"""
open(os.path.join(OUT, "README.md"), "w").write(card)
print("wrote", os.path.join(OUT, "README.md"), f"total weights {total/1e6:.2f} MB")
