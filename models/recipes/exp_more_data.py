#!/usr/bin/python3
"""Experiment of issue 17 (the data lever), measured and not adopted (models/emoji-64/README.md,
Known limitations): continue v5's UNet from its step-6,137 checkpoint to step 8,000 on the same
schedule as the v6a extension (peak learning rate 2e-4, cosine over the steps, EMA 0.997), with the
Fluent Emoji Flat base emojis (MIT; the 64 px renders of the super-resolution recipe's data,
models/.cache/sr/data/lr.u8 from render_sr.ts) added to the training images. They are captioned like
the same emoji's other images but never with a style word: "fluent" is not in the tokenizer, and the
text encoder stays v5's. v6a (same schedule, no extra images) is the control.

    /usr/bin/python3 models/recipes/exp_more_data.py OUT_DIR [END_STEP]

Writes OUT_DIR/ckpt.pt (resumable), OUT_DIR/unet_ema_<step>.pt every 500 steps and OUT_DIR/log.txt.
"""
import json, math, os, random, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import numpy as np, torch, torch.nn.functional as F
import train as T

T.CACHE = os.path.join(HERE, "..", ".cache")
T.CFG = dict(T.FULL)
torch.set_num_threads(2)
if len(sys.argv) < 2:
    sys.exit("usage: exp_more_data.py OUT_DIR [END_STEP]")
OUT = sys.argv[1]
END = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
os.makedirs(OUT, exist_ok=True)
LOG = open(os.path.join(OUT, "log.txt"), "a")
def log(m):
    s = time.strftime("%H:%M:%S") + " " + m; print(s, flush=True); LOG.write(s + "\n"); LOG.flush()

d, tok = T.load_data(), T.load_tok()
tr = np.where(~d["heldout"])[0]
lat = T.tload(os.path.join(T.CACHE, "latents.pt"))
sf = lat["scaling_factor"]
z_old = lat["mean"] * sf
# extra images
sr = os.path.join(T.CACHE, "sr", "data")
idx = json.load(open(os.path.join(sr, "index.json")))
lr = np.fromfile(os.path.join(sr, "lr.u8"), dtype=np.uint8).reshape(-1, 64, 64, 3)
first = {}
for i, h in enumerate(d["hexes"]):
    first.setdefault(h, i)
keep, src = [], []
for j, it in enumerate(idx["items"]):
    if it["style"] != "fluent" or it["heldout"]:
        continue
    i = first.get(it["unified"])
    if i is None or d["heldout"][i]:
        continue
    keep.append(j); src.append(i)
extra = lr[keep]
ae, _ = T.load_ae()
with torch.no_grad():
    z_new = torch.cat([ae.encode(T.to_t(extra[i:i + 256]))[0] for i in range(0, len(extra), 256)]) * sf
log(f"extra fluent images {len(extra)}; z std old {float(z_old[tr].std()):.3f} new {float(z_new.std()):.3f}")
N = len(d["caps"])
z_all = torch.cat([z_old, z_new])
caps_all = list(d["caps"]) + [dict(d["caps"][i], style="") for i in src]
base_all = np.concatenate([d["base"], d["base"][np.array(src)]])
train_idx = np.concatenate([tr, N + np.arange(len(extra))])
balanced = T.BalancedSampler({"base": base_all}, train_idx)

def caption(c, rng):
    if c["style"]:
        return T.sample_caption(c, rng)
    # the same draw as sample_caption, without a style word
    return T.sample_caption(dict(c, style="\0"), rng).replace(", \0", "").replace("\0 ", "")

text = T.load_clip("clip").text
for p in text.parameters():
    p.requires_grad_(False)
model, ema = T.UNet(), T.UNet()
ck = os.path.join(OUT, "ckpt.pt")
src_ck = ck if os.path.exists(ck) else os.path.join(T.CACHE, "unet_ckpt.pt")
s = T.tload(src_ck)
model.load_state_dict(s["model"]); ema.load_state_dict(s["ema"]); ema.requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
opt.load_state_dict(s["opt"])
step = s["step"]; start = s.get("start", 6137)
log(f"resumed from {src_ck} at step {step}")
rng = np.random.default_rng(700 + step); prng = random.Random(700 + step)
ac = torch.tensor(T.cosine_alphas_cumprod(), dtype=torch.float32)
B = T.CFG["unet_batch"]; run = None; t0 = time.time()
while step < END:
    frac = (step - start) / (END - start)
    for g in opt.param_groups:
        g["lr"] = 2e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
    ids = balanced(rng, B)
    z = z_all[ids]
    caps = [caption(caps_all[i], prng) if prng.random() >= 0.1 else "" for i in ids]
    with torch.no_grad():
        ctx = text(tok.batch(caps))[0]
    t = torch.from_numpy(rng.integers(0, T.T_TRAIN, B))
    a_ = ac[t][:, None, None, None]
    eps = torch.randn_like(z)
    zt = a_.sqrt() * z + (1 - a_).sqrt() * eps
    v = a_.sqrt() * eps - (1 - a_).sqrt() * z
    loss = F.mse_loss(model(zt, t.float(), ctx), v)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(0.997).add_(pm, alpha=0.003)
    run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
    step += 1
    if step % 50 == 0:
        log(f"step {step}/{END} loss {run:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time()-t0:.0f}s")
    if step % 250 == 0 or step == END:
        T.save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step, start=start)
    if step % 500 == 0 or step == END:
        T.save_ckpt(os.path.join(OUT, f"unet_ema_{step:06d}.pt"), ema=ema.state_dict(), steps=step)
log("done")
