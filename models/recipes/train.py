#!/usr/bin/python3
"""Recipe for the embedded default model `models/emoji-64` (issue 4).

Trains, from the emoji PNGs of pinned npm packages, a tiny latent text-to-image diffusion model:
tokenizer -> mini-CLIP (text encoder) -> KL autoencoder (64x64 <-> 4x8x8) -> UNet (v-prediction,
squaredcos_cap_v2, cross-attention) and a second mini-CLIP used only for metrics; exports ONNX in the
diffusers ONNX layout, a preview projection, samples, metrics and the metrics test fixture.

    /usr/bin/python3 models/recipes/train.py [--quick] [--out DIR] [--stages a,b,...]

Stages (each resumable; checkpoints and logs under models/.cache/ or <out>/.cache when --quick):
    data tok ae latents clip clipeval unet select export eval
and the optional `dec` (decoder fine-tune; measured, not adopted: run it with --stages; --quick runs it too)
Use Debian's /usr/bin/python3 (torch 1.13, onnx). Needs `npm` to fetch the data packages.
"""
import argparse, json, math, os, random, subprocess, sys, time, unicodedata, shutil

import numpy as np

import caption_pool as cpool  # models/recipes/caption_pool.py: the hard-retrieval pool and measure, shared with bun run eval
import npm_packages  # models/recipes/npm_packages.py (the script's folder is on sys.path)
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PACKAGES = {  # pinned data packages
    "emoji-datasource": "16.0.0",
    "emoji-datasource-twitter": "16.0.0",
    "emoji-datasource-google": "16.0.0",
    "emojibase-data": "17.0.0",
}
STYLES = [("twemoji", "emoji-datasource-twitter", "img/twitter/64"),
          ("noto", "emoji-datasource-google", "img/google/64")]
SPLIT_SEED = 1234
HELDOUT_FRAC = 0.10
MAX_LEN = 16
SPECIALS = ["[UNK]", "<|startoftext|>", "<|endoftext|>"]  # ids 0,1,2
UNK, BOS, EOS = 0, 1, 2
T_TRAIN = 1000
SAMPLE_PROMPTS = ["red heart", "grinning face", "thumbs up", "pizza", "cat face", "rocket", "sun",
                  "crying face", "rainbow", "banana", "fire", "star", "ghost",
                  "smiling face with sunglasses", "hamburger", "four leaf clover"]

# ----------------------------------------------------------------------------------------------
# configuration (full vs --quick)
FULL = dict(ae_steps=1200, ae_batch=32, dec_steps=1000, dec_gan_start=300, dec_lr=2e-4, dec_edge=0.5, dec_gan_weight=0.15, clip_steps=1000, clip_batch=256, clipeval_steps=250, clipeval_batch=128,
            unet_steps=4200, unet_batch=128, unet_minutes=36.0, unet_snapshot_every=1000, eval_n=100, fd_n=1000, sample_steps=20)
QUICK = dict(ae_steps=4, ae_batch=8, dec_steps=6, dec_gan_start=3, dec_lr=2e-4, dec_edge=0.5, dec_gan_weight=0.5, clip_steps=3, clip_batch=32, clipeval_steps=3, clipeval_batch=32,
             unet_steps=4, unet_batch=8, unet_minutes=1.0, unet_snapshot_every=2, eval_n=8, fd_n=16, sample_steps=3)


DEV = torch.device("cpu")  # --device: where the training stages run; export and eval always run on the CPU


def tload(path, dev="cpu"):
    return torch.load(path, map_location=dev)


def log(msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    with open(os.path.join(CACHE, "train.log"), "a") as f:
        f.write(line + "\n")


# ----------------------------------------------------------------------------------------------
# data
def ensure_packages():
    return npm_packages.ensure_packages(PACKAGES)


def norm_hex(h):
    return "-".join(p for p in h.upper().split("-") if p != "FE0F")


def clean(s):
    return " ".join(s.replace("_", " ").lower().split())


def build_data():
    """Returns dict with images uint8 [N,64,64,3], per-image caption alternates, base id, style."""
    from PIL import Image
    nm = ensure_packages()
    ed = json.load(open(os.path.join(nm, "emoji-datasource", "emoji.json")))
    eb = json.load(open(os.path.join(nm, "emojibase-data", "en", "data.json")))
    ebmap = {}
    for e in eb:
        ebmap[norm_hex(e["hexcode"])] = e
        for s in e.get("skins", []) or []:
            ebmap[norm_hex(s["hexcode"])] = dict(s, tags=e.get("tags", []))
    entries = []  # (base_unified, unified, image file, name-based alternates)
    for e in sorted(ed, key=lambda e: e["sort_order"]):
        alts = [clean(e["name"] or "")] + [clean(s) for s in e.get("short_names", [])]
        entries.append((e["unified"], e["unified"], e["image"], alts, e))
        for k, v in sorted((e.get("skin_variations") or {}).items()):
            entries.append((e["unified"], v["unified"], v["image"], alts, e))
    bases = sorted({b for b, *_ in entries})
    rng = random.Random(SPLIT_SEED)
    held = set(rng.sample(bases, int(round(HELDOUT_FRAC * len(bases)))))
    imgs, caps, labels, base_idx, style_idx, hexes, heldout = [], [], [], [], [], [], []
    bindex = {b: i for i, b in enumerate(bases)}
    for base, uni, fn, alts, e in entries:
        info = ebmap.get(norm_hex(uni))
        if info is not None:
            label = clean(info["label"])
            tags = [clean(t) for t in info.get("tags", []) or []]
        else:
            label = alts[0]
            tags = []
        if not label:
            continue
        tone = ""
        if ":" in label:
            tone = label.split(":", 1)[1].strip()
        alt = []
        for a in alts:
            if a and a != label:
                alt.append(a + (": " + tone if tone else ""))
        for si, (sname, pkg, sub) in enumerate(STYLES):
            p = os.path.join(nm, pkg, sub, fn)
            if not os.path.exists(p):
                continue
            im = Image.open(p).convert("RGBA")
            if im.size != (64, 64):
                im = im.resize((64, 64), Image.LANCZOS)
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im).convert("RGB")
            imgs.append(np.asarray(im, dtype=np.uint8))
            caps.append({"label": label, "alts": alt, "tags": tags, "style": sname})
            labels.append(label)
            base_idx.append(bindex[base])
            style_idx.append(si)
            hexes.append(uni)
            heldout.append(base in held)
    return dict(images=np.stack(imgs), caps=caps, labels=labels, base=np.array(base_idx),
                style=np.array(style_idx), hexes=hexes, heldout=np.array(heldout),
                held_bases=sorted(held), n_bases=len(bases))


def stage_data(a):
    path = os.path.join(CACHE, "data.npz")
    if os.path.exists(path):
        return
    t0 = time.time()
    d = build_data()
    if a.quick:  # a small random subset keeps --quick under 2 minutes
        keep = np.sort(np.random.default_rng(0).choice(len(d["images"]), 400, replace=False))
        for k in ["images", "base", "style", "heldout"]:
            d[k] = d[k][keep]
        d["caps"] = [d["caps"][i] for i in keep]
        d["hexes"] = [d["hexes"][i] for i in keep]
    np.savez_compressed(path, images=d["images"], base=d["base"], style=d["style"],
                        heldout=d["heldout"])
    json.dump({"caps": d["caps"], "hexes": d["hexes"]}, open(os.path.join(CACHE, "caps.json"), "w"))
    split = {"seed": SPLIT_SEED, "heldout_fraction": HELDOUT_FRAC,
             "packages": PACKAGES, "n_base_emojis": d["n_bases"],
             "n_images": int(len(d["images"])), "n_heldout_images": int(d["heldout"].sum()),
             "note": "held-out = base emojis (emoji-datasource `unified` of the base emoji); all their "
                     "styles and skin tones are excluded from training of every component",
             "heldout_base_unified": d["held_bases"],
             "heldout_labels": sorted({c["label"] for c, h in zip(d["caps"], d["heldout"]) if h})}
    json.dump(split, open(os.path.join(CACHE, "split.json"), "w"), indent=1, ensure_ascii=False)
    log(f"data: {len(d['images'])} images, {d['n_bases']} bases, held-out images "
        f"{int(d['heldout'].sum())} ({time.time()-t0:.0f}s)")


_DATA = None


def load_data():
    global _DATA
    if _DATA is None:
        z = np.load(os.path.join(CACHE, "data.npz"))
        c = json.load(open(os.path.join(CACHE, "caps.json")))
        _DATA = dict(images=z["images"], base=z["base"], style=z["style"], heldout=z["heldout"],
                     caps=c["caps"], hexes=c["hexes"])
    return _DATA


class BalancedSampler:
    """Draws a batch of training images with every base emoji equally likely, whatever its number of
    skin-tone variants: a base emoji uniformly, then one of its images (style x skin tone). Drawing
    images uniformly instead lets person and hand emojis (up to 26 images each) crowd out the objects
    (2 each): 36 of the 38 captions holding the word "rocket" belong to astronauts."""

    def __init__(self, d, idx):
        groups = {}
        for i in idx:
            groups.setdefault(int(d["base"][i]), []).append(int(i))
        self.groups = [np.array(g) for g in groups.values()]

    def __call__(self, rng, n):
        picks = rng.choice(len(self.groups), n, replace=n > len(self.groups))
        return np.array([self.groups[g][rng.integers(len(self.groups[g]))] for g in picks])


def sample_caption(c, rng):
    """Sample a training caption among the alternates of one image."""
    r = rng.random()
    if r < 0.55 or (not c["alts"] and not c["tags"]):
        s = c["label"]
    elif r < 0.75 and c["alts"]:
        s = rng.choice(c["alts"])
    elif c["tags"]:
        k = min(len(c["tags"]), rng.randint(1, 3))
        s = c["label"] + ", " + ", ".join(rng.sample(c["tags"], k)) if rng.random() < 0.6 \
            else ", ".join(rng.sample(c["tags"], k))
    else:
        s = c["label"]
    if rng.random() < 0.15:
        s = s + ", " + c["style"] if rng.random() < 0.5 else c["style"] + " " + s
    return s


# ----------------------------------------------------------------------------------------------
# tokenizer (HF tokenizer.json, WordPiece model over a whole-word vocabulary => word-level)
def is_punct(ch):
    o = ord(ch)
    if 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def pre_tokenize(text):
    text = text.lower().strip()
    out, cur = [], []
    for ch in text:
        if ch.isspace():
            if cur:
                out.append("".join(cur)); cur = []
        elif is_punct(ch):
            if cur:
                out.append("".join(cur)); cur = []
            out.append(ch)
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


class Tok:
    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text, max_len=MAX_LEN):
        ids = [self.vocab.get(w, UNK) for w in pre_tokenize(text)]
        ids = [BOS] + ids[: max_len - 2] + [EOS]
        return ids + [EOS] * (max_len - len(ids))

    def batch(self, texts):
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)


def tokenizer_files(vocab):
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, s in enumerate(SPECIALS)],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|startoftext|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}}],
            "special_tokens": {
                "<|startoftext|>": {"id": "<|startoftext|>", "ids": [BOS], "tokens": ["<|startoftext|>"]},
                "<|endoftext|>": {"id": "<|endoftext|>", "ids": [EOS], "tokens": ["<|endoftext|>"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": MAX_LEN,
          "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
          "pad_token": "<|endoftext|>", "unk_token": "[UNK]", "do_lower_case": True,
          "clean_up_tokenization_spaces": True,
          "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False,
                                            "rstrip": False, "single_word": False, "special": True}
                                   for i, s in enumerate(SPECIALS)}}
    return tj, tc


def stage_tok(a):
    path = os.path.join(CACHE, "tokenizer", "tokenizer.json")
    if os.path.exists(path):
        return
    d = load_data()
    words = {}
    for c in d["caps"]:
        for s in [c["label"], c["style"]] + c["alts"] + c["tags"]:
            for w in pre_tokenize(s):
                words[w] = words.get(w, 0) + 1
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in sorted(words, key=lambda w: (-words[w], w)):
        if w not in vocab:
            vocab[w] = len(vocab)
    tj, tc = tokenizer_files(vocab)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(tj, open(path, "w"), ensure_ascii=False, indent=1)
    json.dump(tc, open(os.path.join(CACHE, "tokenizer", "tokenizer_config.json"), "w"), indent=1)
    lens = [len(pre_tokenize(c["label"])) for c in d["caps"]]
    log(f"tok: vocab {len(vocab)} (incl. 3 specials); longest label {max(lens)} words "
        f"(truncated to {MAX_LEN-2}: {sum(l > MAX_LEN-2 for l in lens)} labels)")


_TOK = None


def load_tok():
    global _TOK
    if _TOK is None:
        tj = json.load(open(os.path.join(CACHE, "tokenizer", "tokenizer.json")))
        _TOK = Tok(tj["model"]["vocab"])
    return _TOK


# ----------------------------------------------------------------------------------------------
# autoencoder
# Lean ONNX export. Traced with a dynamic batch (and sequence) axis, every `x.reshape(B, ...)` and
# GroupNorm becomes Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains (v3's UNet: 1,560 nodes,
# 97 Shape, 71 Gather, 157 Unsqueeze) that ORT runs at every call. ONNX's Reshape copies an input
# dimension where the target says 0, so the reshapes here emit one constant target while exporting
# (torch's own reshape has no such form); in eager training they are plain reshapes, same math.
EXPORTING = False


class _Reshape0(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shape):
        return x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])

    @staticmethod
    def symbolic(g, x, shape):
        return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))


def _shape_of(g, like):
    """`like`'s shape for a Reshape: a constant [-1, d1, d2, ...] when the tracer knows every dimension
    but the batch (the UNet's 8x8 and 4x4 maps), else a Shape node."""
    try:
        sizes = like.type().varyingSizes()
    except RuntimeError:
        sizes = None
    if sizes and all(isinstance(v, int) for v in sizes[1:]):
        return g.op("Constant", value_t=torch.tensor([-1] + list(sizes[1:]), dtype=torch.int64))
    return g.op("Shape", like)


class _ReshapeAs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, like):
        return x.reshape(like.shape)

    @staticmethod
    def symbolic(g, x, like):
        return g.op("Reshape", x, _shape_of(g, like))


def reshape0(x, shape):
    """Reshape where 0 copies that dimension of x (ONNX semantics); one constant Reshape in the export."""
    return _Reshape0.apply(x, tuple(shape)) if EXPORTING else x.reshape([x.shape[i] if s == 0 else s for i, s in enumerate(shape)])


def reshape_as(x, like):
    return _ReshapeAs.apply(x, like) if EXPORTING else x.reshape(like.shape)


class _GroupNormExport(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, groups, eps):
        return F.group_norm(x, groups, eps=eps)

    @staticmethod
    def symbolic(g, x, groups, eps):
        r = g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([0, groups, -1], dtype=torch.int64)))
        n = g.op("InstanceNormalization", r, g.op("Constant", value_t=torch.ones(groups)),
                 g.op("Constant", value_t=torch.zeros(groups)), epsilon_f=eps)
        return g.op("Reshape", n, _shape_of(g, x))


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters and math) whose export is Reshape[0,G,-1] -> InstanceNormalization
    -> Reshape(Shape(x)) -> Mul -> Add, instead of torch's shape-computing chain."""

    def forward(self, x):
        if not EXPORTING:
            return super().forward(x)
        shape = (-1,) + (1,) * (x.dim() - 2)
        return _GroupNormExport.apply(x, self.num_groups, self.eps) * self.weight.reshape(shape) + self.bias.reshape(shape)


def gn(c):
    g = min(32, c // 4) if c >= 8 else 1
    while c % g:
        g -= 1
    return GroupNorm(g, c)


class Res(nn.Module):
    def __init__(self, cin, cout, temb=0):
        super().__init__()
        self.n1, self.c1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout) if temb else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, t=None):
        h = self.c1(F.silu(self.n1(x)))
        if self.t is not None:
            h = h + reshape0(self.t(t), (0, -1, 1, 1))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class AE(nn.Module):
    def __init__(self, ch=(32, 64, 128), zc=4):
        super().__init__()
        c1, c2, c3 = ch
        self.enc = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1), Res(c1, c1),             # 32
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), Res(c2, c2),            # 16
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), Res(c3, c3), Res(c3, c3),  # 8
            gn(c3), nn.SiLU(), nn.Conv2d(c3, 2 * zc, 3, padding=1))
        self.dec = nn.Sequential(
            nn.Conv2d(zc, c3, 3, padding=1), Res(c3, c3), Res(c3, c3),
            nn.Upsample(scale_factor=2), nn.Conv2d(c3, c2, 3, padding=1), Res(c2, c2),   # 16
            nn.Upsample(scale_factor=2), nn.Conv2d(c2, c1, 3, padding=1), Res(c1, c1),   # 32
            nn.Upsample(scale_factor=2), nn.Conv2d(c1, c1, 3, padding=1),                # 64
            gn(c1), nn.SiLU(), nn.Conv2d(c1, 3, 3, padding=1))

    def encode(self, x):
        m, lv = self.enc(x).chunk(2, dim=1)
        return m, lv.clamp(-20, 5)

    def decode(self, z):
        return self.dec(z)


def to_t(imgs_u8):
    return torch.from_numpy(imgs_u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def save_ckpt(path, **kw):
    tmp = path + ".tmp"
    torch.save(kw, tmp)
    os.replace(tmp, path)


def lr_at(step, total, peak, warm):
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm)))))


def stage_ae(a):
    final = os.path.join(CACHE, "ae.pt")
    if os.path.exists(final):
        return
    d = load_data()
    tr = np.where(~d["heldout"])[0]
    torch.manual_seed(0)
    model = AE().to(DEV)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    ck = os.path.join(CACHE, "ae_ckpt.pt")
    step, spent = 0, 0.0
    if os.path.exists(ck):
        s = tload(ck, DEV)
        model.load_state_dict(s["model"]); opt.load_state_dict(s["opt"]); step, spent = s["step"], s["spent"]
        log(f"ae: resumed at step {step}")
    total = CFG["ae_steps"]
    rng = np.random.default_rng(step)
    t0 = time.time() - spent
    run = 0.0
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, 1e-3, 100)
        idx = rng.choice(tr, CFG["ae_batch"], replace=False)
        x = to_t(d["images"][idx]).to(DEV)
        if rng.random() < 0.5:
            x = x.flip(3)
        m, lv = model.encode(x)
        std = torch.sqrt(torch.exp(lv) + 0.01)  # noise floor 0.1 keeps the decoder robust
        z = m + std * torch.randn_like(m)
        xr = model.decode(z)
        rec = (xr - x).abs().mean()
        kl = 0.5 * (m.pow(2) + lv.exp() - 1 - lv).mean()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run = 0.98 * run + 0.02 * rec.item() if step else rec.item()
        step += 1
        if step % 50 == 0 or step == total:
            log(f"ae step {step}/{total} l1 {run:.4f} kl {kl.item():.3f} {time.time()-t0:.0f}s")
        if step % 250 == 0 or step == total:
            save_ckpt(ck, model=model.state_dict(), opt=opt.state_dict(), step=step, spent=time.time() - t0)
    # scaling factor = 1/std of posterior means on training images
    model = model.cpu().eval()
    with torch.no_grad():
        ms = []
        for i in range(0, min(len(tr), 2000), 200):
            ms.append(model.encode(to_t(d["images"][tr[i:i + 200]]))[0])
        ms = torch.cat(ms)
        sf = float(1.0 / ms.std())
        l1 = float((model.decode(ms[:200]) - to_t(d["images"][tr[:200]])).abs().mean())
    save_ckpt(final, model=model.state_dict(), scaling_factor=sf, seconds=time.time() - t0, l1=l1)
    log(f"ae: done, scaling_factor {sf:.5f}, mean-latent recon L1 {l1:.4f}, {time.time()-t0:.0f}s")


def load_ae():
    """The autoencoder: ae.pt's encoder (what the latents, the text encoder's image tower and the UNet
    were trained on) with the fine-tuned decoder of stage `dec` where it has run."""
    s = tload(os.path.join(CACHE, "ae.pt"))
    m = AE(); m.load_state_dict(s["model"])
    dec = os.path.join(CACHE, "ae_dec.pt")
    if os.path.exists(dec):
        m.dec.load_state_dict(tload(dec)["dec"])
    m.eval()
    return m, s["scaling_factor"]


class PatchDisc(nn.Module):
    """PatchGAN discriminator (pix2pix / taming-transformers style): one logit per ~34-pixel patch."""

    def __init__(self, ch=(32, 64, 128)):
        super().__init__()
        c1, c2, c3 = ch
        self.net = nn.Sequential(
            nn.Conv2d(3, c1, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c1, c2, 4, 2, 1), gn(c2), nn.LeakyReLU(0.2),
            nn.Conv2d(c2, c3, 4, 1, 1), gn(c3), nn.LeakyReLU(0.2),
            nn.Conv2d(c3, 1, 4, 1, 1))

    def forward(self, x):
        return self.net(x)


def _dx(t):
    return t[..., :, 1:] - t[..., :, :-1]


def _dy(t):
    return t[..., 1:, :] - t[..., :-1, :]


def grad_l1(a, b):
    """L1 between the horizontal and vertical finite differences of two images: penalises soft edges."""
    return (_dx(a) - _dx(b)).abs().mean() + (_dy(a) - _dy(b)).abs().mean()


def sharpness(x):
    """Mean absolute finite difference of images in [-1, 1]; a decoder's / real ratio below 1 means softer edges."""
    return float((_dx(x).abs().mean() + _dy(x).abs().mean()) / 2)


def stage_dec(a):
    """(Optional stage, not in the default run: measured and not adopted, see the model card.)
    Fine-tune the VAE decoder alone, encoder frozen, so the latent space (and every model trained on
    it: text encoder, UNet) is unchanged: L1 + edge (finite-difference) L1 + a PatchGAN hinge loss whose
    weight is set each step from the ratio of the two losses' gradients at the decoder's last layer
    (Esser et al., taming transformers; what Stable Diffusion's VAE was trained with). Stage `ae`
    alone (L1) leaves reconstructions soft: with 256 latent numbers for 12,288 pixel values the L1
    optimum hedges at edges; the adversarial term makes the decoder commit to one crisp edge."""
    name = getattr(a, "dec_name", None) or "ae_dec"
    final = os.path.join(CACHE, f"{name}.pt")
    if os.path.exists(final):
        return
    d = load_data()
    tr = np.where(~d["heldout"])[0]
    s0 = tload(os.path.join(CACHE, "ae.pt"))
    model = AE(); model.load_state_dict(s0["model"]); model.to(DEV)
    model.enc.requires_grad_(False)
    torch.manual_seed(11)
    disc = PatchDisc().to(DEV)
    opt = torch.optim.Adam(model.dec.parameters(), lr=CFG["dec_lr"], betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=CFG["dec_lr"], betas=(0.5, 0.9))
    ck = os.path.join(CACHE, f"{name}_ckpt.pt")
    step, spent = 0, 0.0
    if os.path.exists(ck):
        s = tload(ck, DEV)
        model.dec.load_state_dict(s["dec"]); disc.load_state_dict(s["disc"])
        opt.load_state_dict(s["opt"]); opt_d.load_state_dict(s["opt_d"]); step, spent = s["step"], s["spent"]
        log(f"dec: resumed at step {step}")
    total, gan_start = CFG["dec_steps"], CFG["dec_gan_start"]
    rng = np.random.default_rng(500 + step)
    last = model.dec[-1].weight
    t0 = time.time() - spent
    run = {}
    while step < total:
        idx = rng.choice(tr, CFG["ae_batch"], replace=False)
        x = to_t(d["images"][idx]).to(DEV)
        if rng.random() < 0.5:
            x = x.flip(3)
        with torch.no_grad():
            m, lv = model.encode(x)
            z = m + torch.sqrt(torch.exp(lv) + 0.01) * torch.randn_like(m)  # the noise floor stage ae trained with
        xr = model.decode(z)
        rec = (xr - x).abs().mean() + CFG["dec_edge"] * grad_l1(xr, x)
        gan = step >= gan_start and CFG["dec_gan_weight"] > 0
        if gan:
            g_loss = -disc(xr).mean()
            gr = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
            gg = torch.autograd.grad(g_loss, last, retain_graph=True)[0].norm()
            w = (CFG["dec_gan_weight"] * gr / (gg + 1e-4)).clamp(0, 1e4).detach()
            loss = rec + w * g_loss
        else:
            loss = rec
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if CFG["dec_gan_weight"] > 0 and step >= gan_start - 100:  # the discriminator starts a little before it is used
            d_real, d_fake = disc(x), disc(xr.detach())
            d_loss = 0.5 * (F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            run["d"] = 0.98 * run.get("d", d_loss.item()) + 0.02 * d_loss.item()
        run["l1"] = 0.98 * run.get("l1", rec.item()) + 0.02 * rec.item()
        step += 1
        if step % 50 == 0 or step == total:
            log(f"dec step {step}/{total} rec {run['l1']:.4f} disc {run.get('d', float('nan')):.3f} "
                f"{'w %.3f ' % float(w) if gan else ''}{time.time()-t0:.0f}s")
        if step % 250 == 0 or step == total:
            save_ckpt(ck, dec=model.dec.state_dict(), disc=disc.state_dict(), opt=opt.state_dict(),
                      opt_d=opt_d.state_dict(), step=step, spent=time.time() - t0)
    model = model.cpu().eval()
    base = AE(); base.load_state_dict(s0["model"]); base.eval()
    with torch.no_grad():
        x = to_t(d["images"][tr[:400]])
        ms = torch.cat([model.encode(x[i:i + 200])[0] for i in range(0, len(x), 200)])
        r_new = torch.cat([model.decode(ms[i:i + 200]).clamp(-1, 1) for i in range(0, len(ms), 200)])
        r_old = torch.cat([base.decode(ms[i:i + 200]).clamp(-1, 1) for i in range(0, len(ms), 200)])
    res = dict(l1=float((r_new - x).abs().mean()), l1_before=float((r_old - x).abs().mean()),
               sharpness=sharpness(r_new) / sharpness(x), sharpness_before=sharpness(r_old) / sharpness(x))
    save_ckpt(final, dec=model.dec.state_dict(), steps=step, seconds=time.time() - t0, **res)
    log(f"dec: done {step} steps, {time.time()-t0:.0f}s: recon L1 {res['l1_before']:.4f} -> {res['l1']:.4f}, "
        f"sharpness (recon / real) {res['sharpness_before']:.3f} -> {res['sharpness']:.3f}")


# ----------------------------------------------------------------------------------------------
# mini-CLIP
class Block(nn.Module):
    """Pre-LN transformer block: self-attention (optionally causal), optional cross-attention, MLP."""

    def __init__(self, d, heads, ctx=0, mlp=4):
        super().__init__()
        self.h, self.d = heads, d
        self.n1, self.qkv, self.o = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        if ctx:
            self.n2, self.q2, self.kv2, self.o2 = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(ctx, 2 * d), nn.Linear(d, d)
        self.ctx = ctx
        self.n3 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, mlp * d), nn.GELU(), nn.Linear(mlp * d, d))

    def attn(self, q, k, v, mask=None):
        D = self.d  # static, so a constant in the export
        hd = D // self.h
        q = reshape0(q, (0, -1, self.h, hd)).transpose(1, 2)
        k = reshape0(k, (0, -1, self.h, hd)).transpose(1, 2)
        v = reshape0(v, (0, -1, self.h, hd)).transpose(1, 2)
        w = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        if mask is not None:
            w = w + mask
        return reshape0((w.softmax(-1) @ v).transpose(1, 2), (0, -1, D))

    def forward(self, x, mask=None, ctx=None):
        q, k, v = self.qkv(self.n1(x)).chunk(3, dim=-1)
        x = x + self.o(self.attn(q, k, v, mask))
        if self.ctx:
            k2, v2 = self.kv2(ctx).chunk(2, dim=-1)
            x = x + self.o2(self.attn(self.q2(self.n2(x)), k2, v2))
        return x + self.ff(self.n3(x))


class TextTower(nn.Module):
    def __init__(self, vocab, d, layers, heads, emb):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(MAX_LEN, d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.proj = nn.Linear(d, emb, bias=False)
        self.register_buffer("mask", torch.full((MAX_LEN, MAX_LEN), -1e4).triu(1), persistent=False)
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.tok(ids) + self.pos[:T]
        m = self.mask[:T, :T]
        for b in self.blocks:
            x = b(x, m)
        h = self.ln(x)
        pos = (ids == EOS).float().argmax(-1)  # first end-of-text token (pad == eos)
        # [:, 0], not .squeeze(1): squeeze of a dynamic axis exports as an If node, and onnxruntime
        # cannot keep the weights of a graph with subgraphs apart in its optimized-graph cache.
        pooled = h.gather(1, pos[:, None, None].expand(-1, 1, h.shape[2]))[:, 0]
        return h, self.proj(pooled)


class ImageTower(nn.Module):
    """Pixel image encoder [B,3,64,64] in [-1,1]; average-pools to 32x32 first (CPU budget)."""

    def __init__(self, c, emb):
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(2),                                                      # 32
            nn.Conv2d(3, c, 3, padding=1), Res(c, c),                             # 32
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), Res(2 * c, 2 * c),       # 16
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), Res(4 * c, 4 * c),   # 8
            nn.Conv2d(4 * c, 4 * c, 3, stride=2, padding=1), Res(4 * c, 4 * c),   # 4
            gn(4 * c), nn.SiLU())
        self.proj = nn.Linear(4 * c, emb)

    def forward(self, x):
        return self.proj(self.net(x).mean(dim=(2, 3)))


class LatentTower(nn.Module):
    """Image encoder over the VAE's scaled 4x8x8 latents: only a training aid for the text encoder."""

    def __init__(self, c, emb):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, c, 3, padding=1), Res(c, c), Res(c, c),
            nn.Conv2d(c, c, 3, stride=2, padding=1), Res(c, c), gn(c), nn.SiLU())
        self.proj = nn.Linear(c, emb)

    def forward(self, z):
        return self.proj(self.net(z).mean(dim=(2, 3)))


class CLIP(nn.Module):
    def __init__(self, vocab, d, layers, heads, c, emb, latent=False):
        super().__init__()
        self.text = TextTower(vocab, d, layers, heads, emb)
        self.image = LatentTower(c, emb) if latent else ImageTower(c, emb)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


CLIP_CFG = {"clip": dict(d=128, layers=4, heads=4, c=64, emb=128, seed=1, latent=True, label_head=True),
            "clipeval": dict(d=80, layers=3, heads=4, c=24, emb=80, seed=2)}


def make_clip(name):
    c = CLIP_CFG[name]
    return CLIP(len(load_tok().vocab), c["d"], c["layers"], c["heads"], c["c"], c["emb"], c.get("latent", False))


def train_clip(name):
    final = os.path.join(CACHE, name + ".pt")
    if os.path.exists(final):
        return
    d, tok = load_data(), load_tok()
    tr = np.where(~d["heldout"])[0]
    cc = CLIP_CFG[name]
    torch.manual_seed(cc["seed"])
    model = make_clip(name).to(DEV)
    # The conditioning encoder also learns to name each caption's emoji among all training labels
    # (cross-entropy over ~3,800 CLDR labels, skin tones included, from the pooled embedding and from
    # the last position, which is what the UNet pools): a contrastive batch of 256 sees 255
    # negatives, this head sees them all, so captions of different emojis end up apart before the
    # UNet starts (v3: 300 contrastive steps only). The head is a training aid, never exported.
    names = sorted({d["caps"][i]["label"] for i in tr})
    label_id = {n: k for k, n in enumerate(names)}
    head = nn.Linear(cc["emb"], len(names)).to(DEV) if cc.get("label_head") else None
    head_h = nn.Linear(cc["d"], len(names)).to(DEV) if head is not None else None
    params = list(model.parameters()) + (list(head.parameters()) + list(head_h.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    ck = os.path.join(CACHE, name + "_ckpt.pt")
    step, spent = 0, 0.0
    if os.path.exists(ck):
        s = tload(ck, DEV)
        model.load_state_dict(s["model"]); opt.load_state_dict(s["opt"]); step, spent = s["step"], s["spent"]
        if head is not None:
            head.load_state_dict(s["head"]); head_h.load_state_dict(s["head_h"])
    total = CFG[name + "_steps"] if name == "clipeval" else CFG["clip_steps"]
    rng = np.random.default_rng(cc["seed"] * 1000 + step)
    prng = random.Random(cc["seed"] * 1000 + step)
    if cc.get("latent"):
        lat = tload(os.path.join(CACHE, "latents.pt"))
        z_all = (lat["mean"] * lat["scaling_factor"]).to(DEV)
    balanced = BalancedSampler(d, tr)
    t0 = time.time() - spent
    run = None
    while step < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, 1e-3, 50)
        if name == "clip":  # the conditioning text encoder: balanced over base emojis, as the UNet
            idx = balanced(rng, CFG["clip_batch"])
        else:  # the metric network keeps uniform image sampling (unchanged since the first model)
            idx = rng.choice(tr, CFG["clipeval_batch"], replace=False)
        x = z_all[idx] if cc.get("latent") else to_t(d["images"][idx]).to(DEV)
        labels = [d["caps"][i]["label"] for i in idx]
        caps = [sample_caption(d["caps"][i], prng) for i in idx]
        ie = F.normalize(model.image(x), dim=-1)
        hid, te_raw = model.text(tok.batch(caps).to(DEV))
        te = F.normalize(te_raw, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * ie @ te.t()
        same = torch.tensor([[a == b for b in labels] for a in labels], dtype=torch.float32, device=DEV)
        tgt = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(tgt * logits.log_softmax(1)).sum(1).mean() - (tgt * logits.log_softmax(0)).sum(0).mean())
        if head is not None:
            y = torch.tensor([label_id[l] for l in labels], device=DEV)
            loss = loss + 0.5 * (F.cross_entropy(head(te_raw), y) + F.cross_entropy(head_h(hid[:, -1]), y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = (logits.argmax(1) == torch.arange(len(idx), device=DEV)).float().mean().item()
        run = loss.item() if run is None else 0.95 * run + 0.05 * loss.item()
        step += 1
        if step % 25 == 0 or step == total:
            log(f"{name} step {step}/{total} loss {run:.3f} acc {acc:.2f} {time.time()-t0:.0f}s")
        if step % 200 == 0 or step == total:
            extra = dict(head=head.state_dict(), head_h=head_h.state_dict()) if head is not None else {}
            save_ckpt(ck, model=model.state_dict(), opt=opt.state_dict(), step=step, spent=time.time() - t0, **extra)
    model = model.cpu().eval()
    if head is not None:  # how well the frozen conditioning names the emoji of its CLDR label, all-way
        with torch.no_grad():
            hd = head.cpu()
            pred = torch.cat([hd(model.text(tok.batch(names[i:i + 512]))[1]).argmax(-1) for i in range(0, len(names), 512)])
        log(f"{name}: label top-1 among all {len(names)} training labels {float((pred == torch.arange(len(names))).float().mean()):.3f}")
    save_ckpt(final, model=model.state_dict(), seconds=time.time() - t0)
    log(f"{name}: done {time.time()-t0:.0f}s")


def stage_clip(a):
    train_clip("clip")


def stage_clipeval(a):
    train_clip("clipeval")


def load_clip(name):
    m = make_clip(name)
    m.load_state_dict(tload(os.path.join(CACHE, name + ".pt"))["model"])
    m.eval()
    return m


# ----------------------------------------------------------------------------------------------
# latents cache
def stage_latents(a):
    path = os.path.join(CACHE, "latents.pt")
    if os.path.exists(path):
        return
    d = load_data()
    ae, sf = load_ae()
    ms = []
    with torch.no_grad():
        for i in range(0, len(d["images"]), 256):
            ms.append(ae.encode(to_t(d["images"][i:i + 256]))[0])
    ms = torch.cat(ms)
    torch.save({"mean": ms, "scaling_factor": sf}, path)
    log(f"latents: {tuple(ms.shape)} std(scaled, train) {float((ms[~torch.from_numpy(d['heldout'])] * sf).std()):.3f}")


# ----------------------------------------------------------------------------------------------
# UNet + schedule
def cosine_alphas_cumprod(T=T_TRAIN):
    def ab(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


class SpatialT(nn.Module):
    def __init__(self, c, ctx, heads=4):
        super().__init__()
        self.norm = gn(c)
        self.pin = nn.Conv2d(c, c, 1)
        self.block = Block(c, heads, ctx=ctx, mlp=2)
        self.pout = nn.Conv2d(c, c, 1)

    def forward(self, x, ctx):
        h = reshape0(self.pin(self.norm(x)), (0, 0, -1)).transpose(1, 2)
        h = self.block(h, None, ctx)
        return x + self.pout(reshape_as(h.transpose(1, 2), x))


UNET_CFG = dict(ch=(96, 160), temb=256, ctx=128)


class UNet(nn.Module):
    def __init__(self, ch=UNET_CFG["ch"], temb=UNET_CFG["temb"], ctx=UNET_CFG["ctx"], zc=4):
        super().__init__()
        c0, c1 = ch
        self.c0 = c0
        self.temb = nn.Sequential(nn.Linear(c0, temb), nn.SiLU(), nn.Linear(temb, temb))
        # Pooled text conditioning, added to the timestep embedding (as SDXL adds its pooled text
        # embedding, and as class-conditional UNets add a label embedding): every ResBlock then sees
        # what to draw, not only the attention blocks. Built from encoder_hidden_states alone (mean over
        # tokens, and the last position, which under the text encoder's causal attention has seen the
        # whole prompt), so the ONNX interface stays Stable Diffusion's.
        self.pool = nn.Sequential(nn.Linear(2 * ctx, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.cin = nn.Conv2d(zc, c0, 3, padding=1)
        self.d0r = Res(c0, c0, temb)
        self.down = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.d1r, self.d1a = Res(c0, c1, temb), SpatialT(c1, ctx)
        self.m1, self.ma, self.m2 = Res(c1, c1, temb), SpatialT(c1, ctx), Res(c1, c1, temb)
        self.u1r = nn.ModuleList([Res(c1 + c1, c1, temb), Res(c1 + c0, c1, temb)])
        self.u1a = nn.ModuleList([SpatialT(c1, ctx), SpatialT(c1, ctx)])
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c1, c1, 3, padding=1))
        self.u0r = nn.ModuleList([Res(c1 + c0, c0, temb), Res(c0 + c0, c0, temb)])
        self.u0a = nn.ModuleList([SpatialT(c0, ctx), nn.Identity()])
        self.out = nn.Sequential(gn(c0), nn.SiLU(), nn.Conv2d(c0, zc, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight); nn.init.zeros_(self.out[-1].bias)

    def forward(self, x, t, ctx):
        e = self.temb(timestep_embedding(t, self.c0)) + self.pool(torch.cat([ctx.mean(1), ctx[:, -1]], -1))
        h = self.cin(x); hs = [h]
        h = self.d0r(h, e); hs.append(h)
        h = self.down(h); hs.append(h)
        h = self.d1a(self.d1r(h, e), ctx); hs.append(h)
        h = self.m2(self.ma(self.m1(h, e), ctx), e)
        for r, at in zip(self.u1r, self.u1a):
            h = at(r(torch.cat([h, hs.pop()], 1), e), ctx)
        h = self.up(h)
        h = self.u0a[0](self.u0r[0](torch.cat([h, hs.pop()], 1), e), ctx)
        h = self.u0r[1](torch.cat([h, hs.pop()], 1), e)
        return self.out(h)


def lr_time(step, frac, peak, warm):
    """Linear warm-up over `warm` steps, then a cosine to 10 % of `peak` over the fraction of wall time (as lr_at over steps)."""
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac))))


def stage_unet(a):
    final = os.path.join(CACHE, "unet.pt")
    extend = CFG.get("unet_extend_s")
    if os.path.exists(final) and not extend:
        return
    d, tok = load_data(), load_tok()
    tr = np.where(~d["heldout"])[0]
    lat = tload(os.path.join(CACHE, "latents.pt"))
    z_all = (lat["mean"] * lat["scaling_factor"]).to(DEV)
    text = load_clip("clip").text.to(DEV)
    for p in text.parameters():
        p.requires_grad_(False)
    torch.manual_seed(3)
    model = UNet().to(DEV)
    ema = UNet().to(DEV); ema.load_state_dict(model.state_dict()); ema.requires_grad_(False)
    log(f"unet: {sum(p.numel() for p in model.parameters())/1e6:.2f} M params")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    ac = torch.tensor(cosine_alphas_cumprod(), dtype=torch.float32, device=DEV)
    ck = os.path.join(CACHE, "unet_ckpt.pt")
    step, spent, total = 0, 0.0, CFG["unet_steps"]
    if os.path.exists(ck):
        s = tload(ck, DEV)
        model.load_state_dict(s["model"]); ema.load_state_dict(s["ema"]); opt.load_state_dict(s["opt"])
        step, spent, total = s["step"], s["spent"], s["total"]
        log(f"unet: resumed at {step}/{total}")
    rng = np.random.default_rng(100 + step)
    prng = random.Random(100 + step)
    with torch.no_grad():
        empty = text(tok.batch([""]).to(DEV))[0]
    t0 = time.time() - spent
    run, ema_decay, budget = None, 0.997, CFG["unet_minutes"] * 60
    step0, ext = None, 0
    if extend and step > 0:  # continue a finished run until a deadline with a fresh, lower cosine in time
        step0, ext_t0 = step, time.time()
        total = 10 ** 9
        budget = (spent + extend - ext_t0) / 1.1  # the loop stops at 1.1 x budget
        log(f"unet: extending from {step0} until the deadline, peak lr {CFG['unet_extend_lr']}")
    by_time = bool(CFG.get("unet_deadline_s")) and step0 is None
    if by_time:
        # With a deadline the learning rate follows a cosine in wall time, not in steps, so a machine
        # that is slower or busier than when the run began still ends on a decayed learning rate.
        budget = spent + CFG["unet_deadline_s"] - time.time()
        total = 10 ** 9
        log(f"unet: budget {budget/60:.1f} min (deadline); learning rate scheduled in wall time")
    B = CFG["unet_batch"]
    balanced = BalancedSampler(d, tr)
    while step < total:
        if time.time() - t0 > (budget if by_time else budget * 1.1):
            log(f"unet: time budget reached, stopping at step {step}")
            save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                      step=step, spent=time.time() - t0, total=step)
            break
        if step == 30 and spent == 0.0 and step0 is None and not by_time:  # fit the schedule to the time budget, once
            per = (time.time() - t0) / 30
            total = int(min(total, budget / per))
            log(f"unet: {per:.3f}s/step -> total {total} steps")
        for g in opt.param_groups:
            g["lr"] = (lr_time(step, (time.time() - t0) / budget, 1e-3, 200) if by_time else lr_at(step, total, 1e-3, 200)) if step0 is None else \
                CFG["unet_extend_lr"] * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (time.time() - ext_t0) / (extend - ext_t0)))))
        idx = balanced(rng, B)
        z = z_all[idx]
        caps = [sample_caption(d["caps"][i], prng) if prng.random() >= 0.1 else "" for i in idx]
        with torch.no_grad():
            ctx = text(tok.batch(caps).to(DEV))[0]
        t = torch.from_numpy(rng.integers(0, T_TRAIN, B)).to(DEV)
        a_ = ac[t][:, None, None, None]
        eps = torch.randn_like(z)
        zt = a_.sqrt() * z + (1 - a_).sqrt() * eps
        v = a_.sqrt() * eps - (1 - a_).sqrt() * z
        loss = F.mse_loss(model(zt, t.float(), ctx), v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dec = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(dec).add_(pm, alpha=1 - dec)
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        step += 1
        if step % 50 == 0 or step == total:
            log(f"unet step {step}/{total} loss {run:.4f} {time.time()-t0:.0f}s")
        if step % 250 == 0 or step == total:
            save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(),
                      step=step, spent=time.time() - t0, total=total)
        if step % CFG["unet_snapshot_every"] == 0:  # EMA snapshots: the eval stage picks one by hard retrieval
            save_ckpt(os.path.join(CACHE, f"unet_ema_{step:06d}.pt"), ema=ema.state_dict(), steps=step,
                      seconds=time.time() - t0)
    save_ckpt(final, ema=ema.state_dict(), steps=step, seconds=time.time() - t0)
    log(f"unet: done {step} steps {time.time()-t0:.0f}s")


def load_unet(path=None):
    m = UNet()
    sel = os.path.join(CACHE, "unet_selected.pt")
    s = tload(path or (sel if os.path.exists(sel) else os.path.join(CACHE, "unet.pt")))
    m.load_state_dict(s["ema"]); m.eval()
    return m


# ----------------------------------------------------------------------------------------------
# hard retrieval: top-1 among all training captions (definitions in caption_pool.py)
is_base_image = cpool.is_base_emoji


def caption_pool(d):
    """The candidates of hard retrieval (~1,720 labels), here and in `bun run eval` (clip_eval/captions.json)."""
    return cpool.caption_pool(d["caps"], d["hexes"], d["heldout"])


def pick_base(d, rng, n, heldout=False):
    """n base-emoji images of distinct labels (one random style each) from one split."""
    cand = [i for i in rng.permutation(len(d["caps"])) if bool(d["heldout"][i]) == heldout and is_base_image(d["hexes"][i])]
    seen, pick = set(), []
    for i in cand:
        if d["caps"][i]["label"] not in seen:
            seen.add(d["caps"][i]["label"]); pick.append(int(i))
        if len(pick) == n:
            break
    return np.array(pick)


class HardRetrieval:
    """Top-1 among all pool captions with the evaluation CLIP: correct iff the nearest caption (cosine)
    is the image's own."""

    def __init__(self, ev, tok, pool):
        self.ev, self.pool = ev, pool
        self.index = {c: k for k, c in enumerate(pool)}
        with torch.no_grad():
            self.te = torch.cat([ev.text(tok.batch(pool[i:i + 512]))[1] for i in range(0, len(pool), 512)]).numpy()

    @torch.no_grad()
    def top1(self, images, captions):
        ie = torch.cat([self.ev.image(images[i:i + 256]) for i in range(0, len(images), 256)]).numpy()
        hits, measured, _ = cpool.hard_retrieval(ie, self.te, self.pool, captions)
        return hits / max(measured, 1)


def stage_select(a):
    """Choose the UNet weights (final EMA or an EMA snapshot) by hard retrieval of generated images on
    200 training base emojis (DDIM 20, guidance 4, a seed of its own); ties go to the later weights."""
    d, tok = load_data(), load_tok()
    ae, sf = load_ae()
    text, ev = load_clip("clip").text, load_clip("clipeval")
    hr = HardRetrieval(ev, tok, caption_pool(d))
    pick = pick_base(d, np.random.default_rng(8), min(200, CFG["eval_n"] * 2))
    caps = [d["caps"][i]["label"] for i in pick]
    cands = sorted(f for f in os.listdir(CACHE) if f.startswith("unet_ema_")) + ["unet.pt"]
    scores = {}
    for f in cands:
        gen = ddim_sample(load_unet(os.path.join(CACHE, f)), text, ae, sf, caps, seed=13)
        scores[f] = hr.top1(gen, caps)
        log(f"select: {f} hard top-1 {scores[f]:.3f} ({len(caps)} captions, pool {len(hr.pool)})")
    best = max(reversed(cands), key=lambda f: scores[f])  # reversed + max keeps the latest of equals
    shutil.copy(os.path.join(CACHE, best), os.path.join(CACHE, "unet_selected.pt"))
    json.dump({"scores": scores, "selected": best, "n": len(caps)}, open(os.path.join(CACHE, "select.json"), "w"), indent=1)
    log(f"select: {best}")


# ----------------------------------------------------------------------------------------------
# sampler (DDIM, v-prediction, trailing spacing, classifier-free guidance) -- as the scheduler config
@torch.no_grad()
def ddim_sample(unet, text, ae, sf, prompts, steps=None, guidance=4.0, seed=0, batch=200, decode=True):
    tok = load_tok()
    steps = steps or CFG["sample_steps"]
    ac = torch.tensor(cosine_alphas_cumprod(), dtype=torch.float32)
    ts = (np.round(np.arange(T_TRAIN, 0, -T_TRAIN / steps)) - 1).astype(np.int64)  # "trailing"
    g = torch.Generator().manual_seed(seed)
    uncond = text(tok.batch([""]))[0]
    outs = []
    for i in range(0, len(prompts), batch):
        ps = prompts[i:i + batch]
        cond = text(tok.batch(ps))[0]
        ctx = torch.cat([uncond.expand(len(ps), -1, -1), cond])
        x = torch.randn(len(ps), 4, 8, 8, generator=g)
        for j, t in enumerate(ts):
            v_u, v_c = unet(torch.cat([x, x]), torch.full((2 * len(ps),), float(t)), ctx).chunk(2)
            v = v_u + guidance * (v_c - v_u)
            a_t = ac[t]
            a_p = ac[ts[j + 1]] if j + 1 < len(ts) else ac[0]  # set_alpha_to_one=False
            x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * v
            eps = a_t.sqrt() * v + (1 - a_t).sqrt() * x
            x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps
        outs.append(x)
    z = torch.cat(outs)
    if not decode:
        return z
    return ae.decode(z / sf).clamp(-1, 1)


# ----------------------------------------------------------------------------------------------
# export (diffusers ONNX layout)
class TextEncoderExport(nn.Module):
    def __init__(self, t):
        super().__init__(); self.t = t

    def forward(self, input_ids):
        return self.t(input_ids)


class UNetExport(nn.Module):
    def __init__(self, u):
        super().__init__(); self.u = u

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.u(sample, timestep, encoder_hidden_states)


class VaeDecoderExport(nn.Module):
    def __init__(self, ae):
        super().__init__(); self.ae = ae

    def forward(self, latent_sample):
        return self.ae.decode(latent_sample).clamp(-1, 1)


class VaeEncoderExport(nn.Module):
    def __init__(self, ae):
        super().__init__(); self.ae = ae

    def forward(self, sample):
        return self.ae.encode(sample)[0]


class EvalText(nn.Module):
    def __init__(self, t):
        super().__init__(); self.t = t

    def forward(self, input_ids):
        return self.t(input_ids)[1]


NODE_COUNTS = {}


def onnx_export(model, args, path, inames, onames, axes):
    global EXPORTING
    import collections, onnx, tempfile
    os.makedirs(os.path.dirname(path), exist_ok=True)
    counts = {}
    for lean in (False, True):  # the plain trace only to report what the lean one saves
        EXPORTING = lean
        try:
            dst = path if lean else os.path.join(tempfile.mkdtemp(), "plain.onnx")
            torch.onnx.export(model, args, dst, input_names=inames, output_names=onames, dynamic_axes=axes,
                              opset_version=14, do_constant_folding=True)
        finally:
            EXPORTING = False
        ops = collections.Counter(n.op_type for n in onnx.load(dst).graph.node)
        counts["lean" if lean else "plain"] = {"nodes": sum(ops.values()), **{k: ops[k] for k in ("Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "Constant")}}
    NODE_COUNTS[os.path.relpath(path, OUT)] = counts
    log(f"export {os.path.relpath(path, OUT)}: {counts['plain']['nodes']} -> {counts['lean']['nodes']} nodes ({counts})")
    m = onnx.load(path)
    outs = model(*args)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    for o, t in zip(m.graph.output, outs):  # name the static output dims (shape inference leaves some symbolic)
        for k, dim in enumerate(o.type.tensor_type.shape.dim):
            if k in axes.get(o.name, {}):
                dim.ClearField("dim_value"); dim.dim_param = axes[o.name][k]
            else:
                dim.ClearField("dim_param"); dim.dim_value = int(t.shape[k])
    onnx.checker.check_model(m)
    onnx.save(m, path)


def stage_export(a):
    tok = load_tok()
    ae, sf = load_ae()
    clip, ev, unet = load_clip("clip"), load_clip("clipeval"), load_unet()
    D = CLIP_CFG["clip"]["d"]
    ids = tok.batch(["red heart", "thumbs up: medium skin tone"])
    ref = {}
    with torch.no_grad():
        onnx_export(TextEncoderExport(clip.text), (ids,), os.path.join(OUT, "text_encoder", "model.onnx"),
                    ["input_ids"], ["last_hidden_state", "text_embeds"],
                    {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"},
                     "text_embeds": {0: "batch"}})
        h, te = clip.text(ids)
        ref["text_encoder"] = {"input_ids": ids.tolist(), "last_hidden_state": h.flatten().tolist()[:64],
                               "text_embeds": te.flatten().tolist()}
        g = torch.Generator().manual_seed(5)
        x = torch.randn(2, 4, 8, 8, generator=g)
        t = torch.tensor([999.0, 412.5])
        onnx_export(UNetExport(unet), (x, t, h), os.path.join(OUT, "unet", "model.onnx"),
                    ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
                    {"sample": {0: "batch"}, "timestep": {0: "batch"},
                     "encoder_hidden_states": {0: "batch", 1: "sequence"}, "out_sample": {0: "batch"}})
        ref["unet"] = {"sample": x.flatten().tolist(), "timestep": t.tolist(),
                       "out_sample": unet(x, t, h).flatten().tolist()}
        onnx_export(VaeDecoderExport(ae), (x,), os.path.join(OUT, "vae_decoder", "model.onnx"),
                    ["latent_sample"], ["sample"], {"latent_sample": {0: "batch"}, "sample": {0: "batch"}})
        img = ae.decode(x).clamp(-1, 1)
        ref["vae_decoder"] = {"sample": img.flatten().tolist()[:256]}
        onnx_export(VaeEncoderExport(ae), (img,), os.path.join(OUT, "vae_encoder", "model.onnx"),
                    ["sample"], ["latent_sample"], {"sample": {0: "batch"}, "latent_sample": {0: "batch"}})
        ref["vae_encoder"] = {"latent_sample": ae.encode(img)[0].flatten().tolist()}
        onnx_export(EvalText(ev.text), (ids,), os.path.join(OUT, "clip_eval", "text_model.onnx"),
                    ["input_ids"], ["text_embeds"],
                    {"input_ids": {0: "batch", 1: "sequence"}, "text_embeds": {0: "batch"}})
        ref["clip_eval_text"] = {"text_embeds": ev.text(ids)[1].flatten().tolist()}
        onnx_export(ev.image, (img,), os.path.join(OUT, "clip_eval", "image_model.onnx"),
                    ["pixel_values"], ["image_embeds"], {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        ref["clip_eval_image"] = {"image_embeds": ev.image(img).flatten().tolist()}
    json.dump(ref, open(os.path.join(CACHE, "onnx_ref.json"), "w"))
    json.dump(NODE_COUNTS, open(os.path.join(CACHE, "export_nodes.json"), "w"), indent=1)
    # tokenizer copies
    for dst in [os.path.join(OUT, "tokenizer"), os.path.join(OUT, "clip_eval", "tokenizer")]:
        os.makedirs(dst, exist_ok=True)
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            shutil.copy(os.path.join(CACHE, "tokenizer", f), os.path.join(dst, f))
    shutil.copy(os.path.join(CACHE, "split.json"), os.path.join(OUT, "split.json"))
    json.dump(caption_pool(load_data()), open(os.path.join(OUT, "clip_eval", "captions.json"), "w"), indent=0, ensure_ascii=False)
    V = len(tok.vocab)
    W = lambda p, o: json.dump(o, open(os.path.join(OUT, p), "w"), indent=2)
    W("model_index.json", {
        "_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "vae_encoder": ["diffusers", "OnnxRuntimeModel"]})
    os.makedirs(os.path.join(OUT, "scheduler"), exist_ok=True)
    W("scheduler/scheduler_config.json", {
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.30.0", "num_train_timesteps": T_TRAIN,
        "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.00085, "beta_end": 0.012,
        "prediction_type": "v_prediction", "timestep_spacing": "trailing", "set_alpha_to_one": False,
        "steps_offset": 0, "clip_sample": False, "rescale_betas_zero_snr": False, "trained_betas": None})
    vae_cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.30.0", "in_channels": 3,
               "out_channels": 3, "latent_channels": 4, "sample_size": 64, "scaling_factor": sf,
               "block_out_channels": [32, 64, 128], "down_block_types": ["custom"] * 3,
               "up_block_types": ["custom"] * 3, "latent_sample_size": 8,
               "encoder_output": "posterior mean (no sampling)", "decoder_output_clamped_to": [-1, 1]}
    W("vae_decoder/config.json", vae_cfg)
    W("vae_encoder/config.json", vae_cfg)
    W("unet/config.json", {"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.30.0",
                           "sample_size": 8, "in_channels": 4, "out_channels": 4,
                           "cross_attention_dim": D, "block_out_channels": list(UNET_CFG["ch"]),
                           "timestep_input": "float [batch], fractional timesteps allowed",
                           "prediction_type": "v_prediction"})
    W("text_encoder/config.json", {"_class_name": "CLIPTextModelWithProjection", "architectures": ["MiniCLIPTextModel"],
                                   "vocab_size": V, "hidden_size": D, "projection_dim": CLIP_CFG["clip"]["emb"],
                                   "num_hidden_layers": CLIP_CFG["clip"]["layers"],
                                   "num_attention_heads": CLIP_CFG["clip"]["heads"],
                                   "max_position_embeddings": MAX_LEN, "bos_token_id": BOS, "eos_token_id": EOS,
                                   "pad_token_id": EOS, "hidden_act": "gelu", "causal_mask": True,
                                   "pooling": "hidden state at the first <|endoftext|>, then linear projection"})
    W("clip_eval/config.json", {"model_type": "mini-clip-eval", "projection_dim": CLIP_CFG["clipeval"]["emb"],
                                "text_hidden_size": CLIP_CFG["clipeval"]["d"], "vocab_size": V,
                                "image_size": 64, "embeddings": "unnormalised; L2-normalise before cosine"})
    W("clip_eval/preprocessor_config.json", {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 64},
        "resample": 3, "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
        "background": "composite transparent images on white first"})
    log("export: done")


# ----------------------------------------------------------------------------------------------
# evaluation, preview projection, sample grid, metrics fixture
def to_u8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def frechet(f1, f2):
    from scipy import linalg
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    cs, _ = linalg.sqrtm(s1 @ s2, disp=False)
    cs = cs.real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * cs))


def r_precision(ie, te):
    """ie[i] image i, te[j] caption j (100 captions); correct if argmax_j cos(i,j) == i."""
    ie, te = F.normalize(ie, dim=-1), F.normalize(te, dim=-1)
    return float(((ie @ te.t()).argmax(1) == torch.arange(len(ie))).float().mean())


def stage_eval(a):
    from PIL import Image
    d, tok = load_data(), load_tok()
    ae, sf = load_ae()
    clip, ev, unet = load_clip("clip"), load_clip("clipeval"), load_unet()
    text = clip.text
    rng = np.random.default_rng(7)
    res = {"sampler": "python DDIM (v-prediction, trailing, eta 0), 20 steps, guidance 4",
           "metric_model": "clip_eval (second mini-CLIP)"}
    t0 = time.time()
    with torch.no_grad():
        img_emb = lambda x: torch.cat([ev.image(x[i:i + 256]) for i in range(0, len(x), 256)])
        txt_emb = lambda c: ev.text(tok.batch(c))[1]
        # R-precision: base emojis (no skin-tone variants), one random style each, 100 distinct captions
        n = CFG["eval_n"]
        is_base = np.array([":" not in c["label"] or "flag" in c["label"] for c in d["caps"]])
        for split, mask in [("train", ~d["heldout"]), ("heldout", d["heldout"])]:
            cand = np.where(mask & is_base)[0]
            seen, pick = set(), []
            for i in rng.permutation(cand):
                if d["caps"][i]["label"] not in seen:
                    seen.add(d["caps"][i]["label"]); pick.append(i)
                if len(pick) == n:
                    break
            pick = np.array(pick)
            caps = [d["caps"][i]["label"] for i in pick]
            te = txt_emb(caps)
            real = to_t(d["images"][pick])
            gen = ddim_sample(unet, text, ae, sf, caps, seed=11)
            res[f"rprec_real_{split}"] = r_precision(img_emb(real), te)
            res[f"rprec_gen_{split}"] = r_precision(img_emb(gen), te)
            res[f"clipscore_real_{split}"] = float(100 * (F.normalize(img_emb(real), dim=-1) * F.normalize(te, dim=-1)).sum(1).mean())
            res[f"clipscore_gen_{split}"] = float(100 * (F.normalize(img_emb(gen), dim=-1) * F.normalize(te, dim=-1)).sum(1).mean())
            res[f"rprec_n_{split}"] = len(pick)
            log(f"eval {split}: R-precision real {res[f'rprec_real_{split}']:.3f} gen {res[f'rprec_gen_{split}']:.3f} "
                f"({time.time()-t0:.0f}s)")
            if split == "train":
                fx = (pick[:32], caps[:32], real[:32], gen[:32])
        # Frechet distance on clip_eval image_embeds (L2-normalised), training images
        m = CFG["fd_n"]
        tr = rng.permutation(np.where(~d["heldout"])[0])
        A, Bi = tr[:m], tr[m:2 * m]
        fA = F.normalize(img_emb(to_t(d["images"][A])), dim=-1).numpy()
        fB = F.normalize(img_emb(to_t(d["images"][Bi])), dim=-1).numpy()
        xB = to_t(d["images"][Bi])
        rec = torch.cat([ae.decode(ae.encode(xB[i:i + 200])[0]).clamp(-1, 1) for i in range(0, m, 200)])
        fR = F.normalize(img_emb(rec), dim=-1).numpy()
        gen = ddim_sample(unet, text, ae, sf, [d["caps"][i]["label"] for i in Bi], seed=12)
        fG = F.normalize(img_emb(gen), dim=-1).numpy()
        res.update(fd_n=m, fd_floor_real_vs_real=frechet(fA, fB), fd_vae_recon=frechet(fA, fR),
                   fd_generated=frechet(fA, fG),
                   vae_recon_l1=float((rec - xB).abs().mean()), sharpness_recon=sharpness(rec) / sharpness(xB))
        log(f"eval FD: floor {res['fd_floor_real_vs_real']:.4f} recon {res['fd_vae_recon']:.4f} "
            f"gen {res['fd_generated']:.4f} ({time.time()-t0:.0f}s)")
        # hard retrieval (top-1 among all training captions) on 400 training base emojis: real images
        # (the ceiling) and generated over a guidance x steps grid; the 16 fixed prompts
        hr = HardRetrieval(ev, tok, caption_pool(d))
        hp = pick_base(d, np.random.default_rng(9), CFG["eval_n"] * 4)
        hc = [d["caps"][i]["label"] for i in hp]
        res.update(hard_pool=len(hr.pool), hard_n=len(hp), hard_top1_real_train=hr.top1(to_t(d["images"][hp]), hc))
        cells = []
        real_h = to_t(d["images"][hp])
        for st in ((10, 20) if not a.quick else (2, 3)):
            for gs in (2.0, 3.0, 4.0, 6.0):
                g_img = ddim_sample(unet, text, ae, sf, hc, steps=st, guidance=gs, seed=14)
                # sharpness: mean |finite difference| of generated / of the real images (1 = as crisp)
                cells.append({"steps": st, "guidance": gs, "top1": hr.top1(g_img, hc),
                              "sharpness": sharpness(g_img) / sharpness(real_h)})
                log(f"eval hard top-1: steps {st} guidance {gs:g}: {cells[-1]['top1']:.3f} "
                    f"(real {res['hard_top1_real_train']:.3f}; {time.time()-t0:.0f}s)")
        res["hard_top1_gen_grid"] = cells
        fixed = [p for p in SAMPLE_PROMPTS if p in hr.index]
        res["hard_fixed_n"] = len(fixed)
        res["hard_top1_gen_fixed"] = hr.top1(ddim_sample(unet, text, ae, sf, fixed, seed=0), fixed) if fixed else None
        rf = [i for i in range(len(d["caps"])) if d["caps"][i]["label"] in fixed and not d["heldout"][i] and is_base_image(d["hexes"][i])]
        res["hard_top1_real_fixed"] = hr.top1(to_t(d["images"][rf]), [d["caps"][i]["label"] for i in rf]) if rf else None
        log(f"eval hard top-1, 16 fixed prompts: generated {res['hard_top1_gen_fixed']} real {res['hard_top1_real_fixed']}")
        # sample grid (fixed prompts, seed 0), 128 px tiles
        grid = to_u8(ddim_sample(unet, text, ae, sf, SAMPLE_PROMPTS, seed=0))
        G = Image.new("RGB", (4 * 128, 4 * 128), "white")
        for k, im in enumerate(grid):
            G.paste(Image.fromarray(im).resize((128, 128), Image.NEAREST), ((k % 4) * 128, (k // 4) * 128))
        G.save(os.path.join(OUT, "samples.png"))
        # preview projection: scaled latent pixel -> mean RGB (0..1) of its 8x8 patch, least squares
        lat = tload(os.path.join(CACHE, "latents.pt"))
        sel = np.where(~d["heldout"])[0][:3000]
        Z = (lat["mean"][sel] * sf).permute(0, 2, 3, 1).reshape(-1, 4).numpy().astype(np.float64)
        Y = torch.from_numpy(d["images"][sel]).float().div(255).permute(0, 3, 1, 2)
        Y = F.avg_pool2d(Y, 8).permute(0, 2, 3, 1).reshape(-1, 3).numpy().astype(np.float64)
        X = np.concatenate([Z, np.ones((len(Z), 1))], 1)
        sol = np.linalg.lstsq(X, Y, rcond=None)[0]  # [5,3]
        err = float(np.abs(np.clip(X @ sol, 0, 1) - Y).mean())
        os.makedirs(os.path.join(OUT, "preview"), exist_ok=True)
        json.dump({"input": "scaled_latents", "weights": sol[:4].T.tolist(), "bias": sol[4].tolist(),
                   "range": [0, 1], "fit": f"least squares on {len(sel)} training images, 8x8 average-pooled RGB; "
                   f"mean abs error {err:.4f}"},
                  open(os.path.join(OUT, "preview", "projection.json"), "w"), indent=2)
        res["preview_mae"] = err
        # metrics fixture
        # the test fixture follows the committed model only: a run into another --out keeps its own copy
        committed = OUT == os.path.join(ROOT, "models", "emoji-64")
        fxdir = os.path.join(ROOT, "test", "fixtures", "emoji-metrics") if committed else os.path.join(OUT, "fixture")
        os.makedirs(os.path.join(fxdir, "real"), exist_ok=True)
        os.makedirs(os.path.join(fxdir, "generated"), exist_ok=True)
        pick, caps, real, gen = fx
        ir, ig, tt = ev.image(real), ev.image(gen), txt_emb(caps)
        items = []
        for k in range(len(caps)):
            fn = f"{k:02d}.png"
            Image.fromarray(d["images"][pick[k]]).save(os.path.join(fxdir, "real", fn))
            Image.fromarray(to_u8(gen[k:k + 1])[0]).save(os.path.join(fxdir, "generated", fn))
            items.append({"file": fn, "caption": caps[k], "hexcode": d["hexes"][pick[k]],
                          "style": d["caps"][pick[k]]["style"]})
        ig_png = ev.image(to_t(np.stack([np.asarray(Image.open(os.path.join(fxdir, "generated", it["file"])))
                                         for it in items])))  # features of the PNGs as written
        ir64, ig64, tt64 = ir.double(), ig_png.double(), tt.double()
        cs = lambda i, t: (100 * F.normalize(i, dim=-1) * F.normalize(t, dim=-1)).sum(1)
        fixture = {
            "description": "see README.md", "feature_model": "models/emoji-64/clip_eval",
            "items": items,
            "real_image_embeds": ir64.tolist(), "generated_image_embeds": ig64.tolist(), "text_embeds": tt64.tolist(),
            "clip_score_real": cs(ir64, tt64).tolist(), "clip_score_generated": cs(ig64, tt64).tolist(),
            "clip_score_real_mean": float(cs(ir64, tt64).mean()), "clip_score_generated_mean": float(cs(ig64, tt64).mean()),
            "frechet_distance_raw": frechet(ir64.numpy(), ig64.numpy()),
            "frechet_distance_l2normalised": frechet(F.normalize(ir64, dim=-1).numpy(), F.normalize(ig64, dim=-1).numpy()),
            "r_precision_real": r_precision(ir64, tt64), "r_precision_generated": r_precision(ig64, tt64),
        }
        json.dump(fixture, open(os.path.join(fxdir, "fixture.json"), "w"), indent=1)
    res["eval_seconds"] = time.time() - t0
    json.dump(res, open(os.path.join(OUT, "metrics.json"), "w"), indent=2)
    log("eval: " + json.dumps(res))


# ----------------------------------------------------------------------------------------------
STAGES = ["data", "tok", "ae", "latents", "clip", "clipeval", "unet", "select", "export", "eval"]
# Not in the default run: `dec` (the decoder fine-tune) was measured and not adopted (model card,
# "Tried after v5"); `--stages dec,select,export,eval` runs it, and load_ae() then uses its decoder.
OPTIONAL_STAGES = ["dec"]


def main():
    global CACHE, CFG, OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--unet-minutes", type=float, default=None, help="wall-time budget of the UNet stage")
    ap.add_argument("--unet-deadline", default=None, help="UTC HH:MM at which the UNet stage must end")
    ap.add_argument("--unet-extend-until", default=None, help="UTC HH:MM: continue a finished UNet run until then")
    ap.add_argument("--unet-extend-lr", type=float, default=4e-4, help="peak learning rate of that extension")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the training stages run (export and eval run on the CPU)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--dec-name", default=None, help="stage dec: write <name>.pt instead of ae_dec.pt (to compare settings; load_ae reads ae_dec.pt)")
    ap.add_argument("--dec-gan-weight", type=float, default=None, help="stage dec: weight of the adversarial term (0: L1 + edge loss only)")
    ap.add_argument("--dec-steps", type=int, default=None, help="stage dec: steps")
    a = ap.parse_args()
    global DEV
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch finds no CUDA device here (torch.cuda.is_available() is False)")
    DEV = torch.device(a.device)
    torch.set_num_threads(a.threads)
    CFG = dict(QUICK if a.quick else FULL)
    if a.unet_minutes:
        CFG["unet_minutes"] = a.unet_minutes
    if a.dec_gan_weight is not None:
        CFG["dec_gan_weight"] = a.dec_gan_weight
    if a.dec_steps is not None:
        CFG["dec_steps"] = a.dec_steps
    def until(hhmm):  # UTC "HH:MM" today -> epoch seconds
        hh, mm = map(int, hhmm.split(":"))
        now = time.gmtime()
        return time.time() + (hh * 3600 + mm * 60) - (now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec)
    if a.unet_deadline:
        CFG["unet_deadline_s"] = until(a.unet_deadline)
    if a.unet_extend_until:
        CFG["unet_extend_s"] = until(a.unet_extend_until)
    CFG["unet_extend_lr"] = a.unet_extend_lr
    OUT = os.path.abspath(a.out or os.path.join(ROOT, "models", "emoji-64"))
    if a.quick:
        if a.out is None:
            sys.exit("--quick needs --out DIR (never overwrites the committed model)")
        CACHE = os.path.join(OUT, ".cache")
    else:
        CACHE = os.path.join(ROOT, "models", ".cache")
    os.makedirs(CACHE, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    stages = a.stages.split(",")
    if a.quick and a.stages == ",".join(STAGES):  # --quick also runs the optional stages, so CI keeps them working
        stages = stages[:stages.index("latents") + 1] + OPTIONAL_STAGES + stages[stages.index("latents") + 1:]
    for st in stages:
        t = time.time()
        globals()["stage_" + st](a)
        print(f"[stage {st}] {time.time()-t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
