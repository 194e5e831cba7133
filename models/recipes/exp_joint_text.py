#!/usr/bin/python3
"""Experiment of issue 17 (the text-encoder lever; models/emoji-64/README.md, Known limitations):
continue v5's UNet from its step-6,137 checkpoint with the conditioning text encoder trained jointly
through the diffusion loss (its own parameter group at a quarter of the UNet's learning rate; v5's
text encoder was trained only contrastively, before the UNet). Same data, batch and EMA (0.997, for
both networks) as v5; peak learning rate 2e-4, cosine over the steps to END_STEP.

    /usr/bin/python3 models/recipes/exp_joint_text.py OUT_DIR [END_STEP]

Writes OUT_DIR/ckpt.pt (resumable), OUT_DIR/unet_ema_<step>.pt (keys ema: the UNet, text_ema: the
text encoder) every 250 steps and OUT_DIR/log.txt.
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
N = len(d["caps"])
z_all = z_old
caps_all = list(d["caps"])
balanced = T.BalancedSampler(d, tr)

def caption(c, rng):
    if c["style"]:
        return T.sample_caption(c, rng)
    # the same draw as sample_caption, without a style word
    return T.sample_caption(dict(c, style="\0"), rng).replace(", \0", "").replace("\0 ", "")

import copy
text = T.load_clip("clip").text
text.train()
text_ema = copy.deepcopy(text).eval().requires_grad_(False)
model, ema = T.UNet(), T.UNet()
ck = os.path.join(OUT, "ckpt.pt")
src_ck = ck if os.path.exists(ck) else os.path.join(T.CACHE, "unet_ckpt.pt")
s = T.tload(src_ck)
model.load_state_dict(s["model"]); ema.load_state_dict(s["ema"]); ema.requires_grad_(False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
if "text" in s:  # resuming this experiment: both parameter groups were saved
    text.load_state_dict(s["text"]); text_ema.load_state_dict(s["text_ema"])
    opt.add_param_group({"params": list(text.parameters()), "lr": 5e-5, "weight_decay": 0.0})
    opt.load_state_dict(s["opt"])
else:  # from v5's checkpoint: the UNet's optimizer state, a fresh group for the text encoder
    opt.load_state_dict(s["opt"])
    opt.add_param_group({"params": list(text.parameters()), "lr": 5e-5, "weight_decay": 0.0})
step = s["step"]; start = s.get("start", 6137)
log(f"resumed from {src_ck} at step {step}")
rng = np.random.default_rng(700 + step); prng = random.Random(700 + step)
ac = torch.tensor(T.cosine_alphas_cumprod(), dtype=torch.float32)
B = T.CFG["unet_batch"]; run = None; t0 = time.time()
while step < END:
    frac = (step - start) / (END - start)
    for g, peak in zip(opt.param_groups, (2e-4, 5e-5)):
        g["lr"] = peak * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
    ids = balanced(rng, B)
    z = z_all[ids]
    caps = [caption(caps_all[i], prng) if prng.random() >= 0.1 else "" for i in ids]
    ctx = text(tok.batch(caps))[0]  # with gradients: the text encoder learns through the diffusion loss
    t = torch.from_numpy(rng.integers(0, T.T_TRAIN, B))
    a_ = ac[t][:, None, None, None]
    eps = torch.randn_like(z)
    zt = a_.sqrt() * z + (1 - a_).sqrt() * eps
    v = a_.sqrt() * eps - (1 - a_).sqrt() * z
    loss = F.mse_loss(model(zt, t.float(), ctx), v)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(text.parameters()), 1.0); opt.step()
    with torch.no_grad():
        for pe, pm in zip(list(ema.parameters()) + list(text_ema.parameters()), list(model.parameters()) + list(text.parameters())):
            pe.mul_(0.997).add_(pm, alpha=0.003)
    run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
    step += 1
    if step % 50 == 0:
        log(f"step {step}/{END} loss {run:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time()-t0:.0f}s")
    if step % 250 == 0 or step == END:
        T.save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step, start=start,
                    text=text.state_dict(), text_ema=text_ema.state_dict())
        T.save_ckpt(os.path.join(OUT, f"unet_ema_{step:06d}.pt"), ema=ema.state_dict(), text_ema=text_ema.state_dict(), steps=step)
log("done")
