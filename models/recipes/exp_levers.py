#!/usr/bin/python3
"""Experiments of issue 17, measured and not adopted (models/emoji-64/README.md, Known limitations).
Each continues v5's UNet from its step-6,137 checkpoint on v6a's kind of schedule (peak learning rate
2e-4, a cosine over the steps to END_STEP, EMA 0.997) with one lever changed:

  more-data   the Fluent Emoji Flat base emojis (MIT; the 64 px renders of the super-resolution
              recipe's data, models/.cache/sr/data/lr.u8 from render_sr.ts) added to the training
              images, captioned like the same emoji's other images but never with a style word
              ("fluent" is not in the tokenizer; the text encoder stays v5's). Run to 8,000.
  joint-text  the conditioning text encoder trained through the diffusion loss with the UNet (its own
              parameter group at a quarter of the UNet's learning rate, EMA'd too), same data; v5's
              text encoder was trained only contrastively, before the UNet. Run to 7,000.

    /usr/bin/python3 models/recipes/exp_levers.py more-data|joint-text OUT_DIR [END_STEP]

Writes OUT_DIR/ckpt.pt (resumable), OUT_DIR/unet_ema_<step>.pt every 250 steps (keys: ema, the UNet;
text_ema, the text encoder, for joint-text) and OUT_DIR/log.txt.
"""
import copy, json, math, os, random, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np, torch, torch.nn.functional as F
import train as T

LEVERS = ("more-data", "joint-text")
if len(sys.argv) < 3 or sys.argv[1] not in LEVERS:
    sys.exit(f"usage: exp_levers.py {'|'.join(LEVERS)} OUT_DIR [END_STEP]")
LEVER, OUT = sys.argv[1], sys.argv[2]
END = int(sys.argv[3]) if len(sys.argv) > 3 else {"more-data": 8000, "joint-text": 7000}[LEVER]
T.CACHE = os.path.join(HERE, "..", ".cache")
T.CFG = dict(T.FULL)
torch.set_num_threads(2)
os.makedirs(OUT, exist_ok=True)
LOG = open(os.path.join(OUT, "log.txt"), "a")
def log(m):
    s = time.strftime("%H:%M:%S") + " " + m; print(s, flush=True); LOG.write(s + "\n"); LOG.flush()

d, tok = T.load_data(), T.load_tok()
tr = np.where(~d["heldout"])[0]
lat = T.tload(os.path.join(T.CACHE, "latents.pt"))
sf = lat["scaling_factor"]
z_all = lat["mean"] * sf
caps_all = list(d["caps"])
base_all = d["base"]
train_idx = tr


def fluent_images():
    """The Fluent Emoji Flat renders of training base emojis, and the data index of each one's emoji."""
    sr = os.path.join(T.CACHE, "sr", "data")
    idx = json.load(open(os.path.join(sr, "index.json")))
    lr = np.fromfile(os.path.join(sr, "lr.u8"), dtype=np.uint8).reshape(-1, 64, 64, 3)
    first = {}
    for i, h in enumerate(d["hexes"]):
        first.setdefault(h, i)
    keep, src = [], []
    for j, it in enumerate(idx["items"]):
        i = first.get(it["unified"]) if it["style"] == "fluent" and not it["heldout"] else None
        if i is not None and not d["heldout"][i]:
            keep.append(j); src.append(i)
    return lr[keep], np.array(src)


if LEVER == "more-data":
    extra, src = fluent_images()
    ae, _ = T.load_ae()
    with torch.no_grad():
        z_new = torch.cat([ae.encode(T.to_t(extra[i:i + 256]))[0] for i in range(0, len(extra), 256)]) * sf
    log(f"extra fluent images {len(extra)}; z std old {float(z_all[tr].std()):.3f} new {float(z_new.std()):.3f}")
    N = len(caps_all)
    z_all = torch.cat([z_all, z_new])
    caps_all += [dict(d["caps"][i], style="") for i in src]
    base_all = np.concatenate([base_all, d["base"][src]])
    train_idx = np.concatenate([tr, N + np.arange(len(extra))])
balanced = T.BalancedSampler({"base": base_all}, train_idx)


def caption(c, rng):
    if c["style"]:
        return T.sample_caption(c, rng)
    # the same draw as sample_caption, without a style word
    return T.sample_caption(dict(c, style="\0"), rng).replace(", \0", "").replace("\0 ", "")


joint = LEVER == "joint-text"
text = T.load_clip("clip").text
text.train() if joint else text.requires_grad_(False)
text_ema = copy.deepcopy(text).eval().requires_grad_(False) if joint else None
model, ema = T.UNet(), T.UNet()
ck = os.path.join(OUT, "ckpt.pt")
src_ck = ck if os.path.exists(ck) else os.path.join(T.CACHE, "unet_ckpt.pt")
s = T.tload(src_ck)
model.load_state_dict(s["model"]); ema.load_state_dict(s["ema"]); ema.requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
PEAKS = (2e-4, 5e-5)  # the UNet's, the text encoder's
if joint and "text" in s:  # resuming this experiment: both parameter groups were saved
    text.load_state_dict(s["text"]); text_ema.load_state_dict(s["text_ema"])
    opt.add_param_group({"params": list(text.parameters()), "lr": PEAKS[1], "weight_decay": 0.0})
    opt.load_state_dict(s["opt"])
else:  # v5's checkpoint (the UNet's optimizer state), or this experiment resumed without a text group
    opt.load_state_dict(s["opt"])
    if joint:
        opt.add_param_group({"params": list(text.parameters()), "lr": PEAKS[1], "weight_decay": 0.0})
trained = list(model.parameters()) + (list(text.parameters()) if joint else [])
averaged = list(ema.parameters()) + (list(text_ema.parameters()) if joint else [])
step = s["step"]; start = s.get("start", 6137)
log(f"{LEVER}: resumed from {src_ck} at step {step}")
rng = np.random.default_rng(700 + step); prng = random.Random(700 + step)
ac = torch.tensor(T.cosine_alphas_cumprod(), dtype=torch.float32)
B = T.CFG["unet_batch"]; run = None; t0 = time.time()
while step < END:
    frac = (step - start) / (END - start)
    for g, peak in zip(opt.param_groups, PEAKS):
        g["lr"] = peak * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
    ids = balanced(rng, B)
    z = z_all[ids]
    caps = [caption(caps_all[i], prng) if prng.random() >= 0.1 else "" for i in ids]
    with torch.set_grad_enabled(joint):  # joint-text: the text encoder learns through the diffusion loss
        ctx = text(tok.batch(caps))[0]
    t = torch.from_numpy(rng.integers(0, T.T_TRAIN, B))
    a_ = ac[t][:, None, None, None]
    eps = torch.randn_like(z)
    zt = a_.sqrt() * z + (1 - a_).sqrt() * eps
    v = a_.sqrt() * eps - (1 - a_).sqrt() * z
    loss = F.mse_loss(model(zt, t.float(), ctx), v)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(trained, 1.0); opt.step()
    with torch.no_grad():
        for pe, pm in zip(averaged, trained):
            pe.mul_(0.997).add_(pm, alpha=0.003)
    run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
    step += 1
    if step % 50 == 0:
        log(f"step {step}/{END} loss {run:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time()-t0:.0f}s")
    if step % 250 == 0 or step == END:
        texts = dict(text=text.state_dict(), text_ema=text_ema.state_dict()) if joint else {}
        T.save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step, start=start, **texts)
        T.save_ckpt(os.path.join(OUT, f"unet_ema_{step:06d}.pt"), ema=ema.state_dict(), steps=step,
                    **({"text_ema": texts["text_ema"]} if joint else {}))
log("done")
