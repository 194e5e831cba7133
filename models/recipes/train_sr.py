#!/usr/bin/python3
"""Recipe for the super-resolution stage `models/emoji-sr-256` (issue 14): 64 -> 256 px.

A feed-forward network (residual conv blocks at 64 px, two pixel-shuffle x2 steps) predicts a
residual over bicubic upsampling; trained on 256-px renders of three SVG emoji sets paired with their
64-px versions, plain and degraded (round trip through the emoji-64 VAE, blur, noise) so that it also
repairs the base model's decoder artefacts. Loss: L1 + L1 of image gradients (edges).

    /usr/bin/python3 models/recipes/train_sr.py [--quick --out DIR] [--minutes M] [--stages a,b]

Stages (each resumable; cache under models/.cache/sr/, or <out>/.cache when --quick):
    data train export eval
`data` installs the pinned npm packages into models/.cache/npm/ and runs models/recipes/render_sr.ts
(bun + sharp + onnxruntime-node); `export` writes the model folder and checks ONNX against torch with
onnxruntime-node (models/recipes/check_sr.ts), which also times the model on one CPU thread.
"""
import argparse, json, math, os, subprocess, sys, time

import numpy as np

import npm_packages  # models/recipes/npm_packages.py (the script's folder is on sys.path)
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PACKAGES = {  # pinned data packages (SVG emoji sets, and emoji-datasource for base emojis / skin tones)
    "@twemoji/svg": "15.0.0",
    "@iconify-json/noto": "1.2.9",
    "@iconify-json/fluent-emoji-flat": "1.2.6",
    "emoji-datasource": "16.0.0",
}
FACTOR = 4
LR_SIZE = 64
ARCH = dict(channels=64, blocks=10, mid=32)
FULL = dict(steps=6000, batch=24, patch=32, minutes=90.0, lr=1e-3, warm=100, eval_n=None, limit=None, ckpt_every=100)
QUICK = dict(steps=3, batch=4, patch=16, minutes=1.0, lr=1e-3, warm=1, eval_n=8, limit=48, ckpt_every=2)
SEED = 14


def log(msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    with open(os.path.join(CACHE, "train_sr.log"), "a") as f:
        f.write(line + "\n")


# ----------------------------------------------------------------------------------------------
# model
def cubic(x, a=-0.5):
    t = abs(x)
    if t <= 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return 0.0


def bicubic_kernel(factor=FACTOR):
    """Bicubic upsampling by `factor` as one convolution: [factor², 1, 5, 5] weights, one output
    channel per sub-pixel phase (pixel-shuffle order), over the input padded by 2 with its edge
    values. Keys' cubic with a = -0.5 and half-pixel centres, border clamped: the interpolation of
    plugins/decoders/upscale.ts `bicubicUpscale` (and PIL's BICUBIC when upsampling)."""
    taps = []  # per phase: weights of input offsets -2..2
    for p in range(factor):
        src = (p + 0.5) / factor - 0.5  # position of output factor*i + p, relative to input i
        taps.append([cubic(src - d) for d in range(-2, 3)])
    w = torch.tensor([[[[taps[py][dy] * taps[px][dx] for dx in range(5)] for dy in range(5)]]
                      for py in range(factor) for px in range(factor)], dtype=torch.float32)
    return w


def bicubic(x, factor=FACTOR, kernel=None):
    h, w = x.shape[-2:]
    k = bicubic_kernel(factor) if kernel is None else kernel
    y = F.conv2d(F.pad(x.reshape(-1, 1, h, w), (2, 2, 2, 2), mode="replicate"), k)
    return F.pixel_shuffle(y, factor).reshape(-1, x.shape[1], h * factor, w * factor)


class ResBlock(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.c1, s.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(s, x):
        return x + s.c2(F.relu(s.c1(x)))


class SR(nn.Module):
    """[B,3,h,w] in [0,1] -> [B,3,4h,4w] in [0,1]: clamp(bicubic(x) + residual(x))."""

    def __init__(s, channels=48, blocks=8, mid=16):
        super().__init__()
        c = channels
        s.head = nn.Conv2d(3, c, 3, padding=1)
        s.body = nn.Sequential(*[ResBlock(c) for _ in range(blocks)], nn.Conv2d(c, c, 3, padding=1))
        s.up1 = nn.Conv2d(c, mid * 4, 3, padding=1)  # -> pixel shuffle x2: mid channels at 2h
        s.up2 = nn.Conv2d(mid, 3 * 4, 3, padding=1)  # -> pixel shuffle x2: RGB residual at 4h
        nn.init.zeros_(s.up2.weight)
        nn.init.zeros_(s.up2.bias)
        s.register_buffer("bicubic", bicubic_kernel(FACTOR), persistent=False)

    def forward(s, x):
        f = s.head(x * 2 - 1)
        f = f + s.body(f)
        r = F.pixel_shuffle(F.relu(s.up1(f)), 2)
        r = F.pixel_shuffle(s.up2(r), 2)
        return torch.clamp(bicubic(x, kernel=s.bicubic) + r, 0.0, 1.0)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------------------------
# data
def ensure_packages():
    return npm_packages.ensure_packages(PACKAGES)


def bun():
    return os.path.join(ROOT, "node_modules", ".bin", "bun")


def data_dir():
    return os.path.join(CACHE, "data")


def stage_data(a):
    d = data_dir()
    if os.path.exists(os.path.join(d, "index.json")):
        log(f"data: cached in {d}")
        return
    nm = ensure_packages()
    cmd = [bun(), os.path.join(HERE, "render_sr.ts"), nm, d]
    if CFG["limit"]:
        cmd += ["--limit", str(CFG["limit"])]
    subprocess.run(cmd, check=True, cwd=ROOT)


def load_data():
    d = data_dir()
    idx = json.load(open(os.path.join(d, "index.json")))
    n, H, L = idx["n"], idx["hr"], idx["lr"]
    hr = np.fromfile(os.path.join(d, "hr.u8"), np.uint8).reshape(n, H, H, 3)
    lr = np.fromfile(os.path.join(d, "lr.u8"), np.uint8).reshape(n, L, L, 3)
    vae = np.fromfile(os.path.join(d, "vae.u8"), np.uint8).reshape(n, L, L, 3)
    held = np.array([it["heldout"] for it in idx["items"]], bool)
    return idx, hr, lr, vae, held


def to_t(u8):  # [N,H,W,3] uint8 -> [N,3,H,W] float in [0,1]
    return torch.from_numpy(np.ascontiguousarray(u8)).permute(0, 3, 1, 2).float() / 255.0


def gaussian_blur(x, sigma):
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def make_batch(rng, hr, lr, vae, train_idx, batch, patch):
    """Random LR patches (plain 60 %, VAE round trip 40 %; then blur 20 %, noise 30 %), flips and
    90-degree turns, with the matching HR patches as targets."""
    P, F_ = patch, FACTOR
    ii = rng.choice(train_idx, batch)
    ys = rng.integers(0, LR_SIZE - P + 1, batch)
    xs = rng.integers(0, LR_SIZE - P + 1, batch)
    src = [vae if rng.random() < 0.4 else lr for _ in range(batch)]
    x = np.stack([src[k][i, y:y + P, x0:x0 + P] for k, (i, y, x0) in enumerate(zip(ii, ys, xs))])
    t = np.stack([hr[i, y * F_:(y + P) * F_, x0 * F_:(x0 + P) * F_] for i, y, x0 in zip(ii, ys, xs)])
    x, t = to_t(x), to_t(t)
    for k in range(batch):
        if rng.random() < 0.2:
            x[k:k + 1] = gaussian_blur(x[k:k + 1], float(rng.uniform(0.3, 0.8)))
        if rng.random() < 0.3:
            x[k] = (x[k] + torch.from_numpy(rng.normal(0, rng.uniform(0.005, 0.03), x[k].shape)).float()).clamp(0, 1)
        if rng.random() < 0.5:
            x[k], t[k] = x[k].flip(-1), t[k].flip(-1)
        q = int(rng.integers(0, 4))
        if q:
            x[k], t[k] = torch.rot90(x[k], q, (1, 2)), torch.rot90(t[k], q, (1, 2))
    return x, t


def grad_l1(a, b):
    dx = lambda z: z[..., :, 1:] - z[..., :, :-1]
    dy = lambda z: z[..., 1:, :] - z[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


# ----------------------------------------------------------------------------------------------
# training
def save_ckpt(path, **kw):
    tmp = path + ".tmp"
    torch.save(kw, tmp)
    os.replace(tmp, path)


def lr_at(frac, step, peak, warm):
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def stage_train(a):
    final = os.path.join(CACHE, "sr.pt")
    if os.path.exists(final):
        log(f"train: done ({final})")
        return
    idx, hr, lr, vae, held = load_data()
    train_idx = np.nonzero(~held)[0]
    torch.manual_seed(SEED)
    model = SR(**ARCH)
    ema = SR(**ARCH)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=CFG["lr"], betas=(0.9, 0.99))
    ck = os.path.join(CACHE, "sr_ckpt.pt")
    step, spent = 0, 0.0
    rng = np.random.default_rng(SEED)
    if os.path.exists(ck):
        s = torch.load(ck)
        model.load_state_dict(s["model"]); ema.load_state_dict(s["ema"]); opt.load_state_dict(s["opt"])
        step, spent = s["step"], s["spent"]
        rng.bit_generator.state = s["rng"]
        log(f"train: resumed at step {step} ({spent / 60:.1f} min spent)")
    budget = CFG["minutes"] * 60
    log(f"train: SR {ARCH}, {n_params(model) / 1e6:.3f} M parameters, {len(train_idx)} training images, "
        f"batch {CFG['batch']} x {CFG['patch']}px patches, up to {CFG['steps']} steps or {CFG['minutes']} min")
    t_last, run_loss = time.time(), []
    while step < CFG["steps"] and spent < budget:
        frac = max(step / CFG["steps"], spent / budget)
        for g in opt.param_groups:
            g["lr"] = lr_at(frac, step, CFG["lr"], CFG["warm"])
        x, t = make_batch(rng, hr, lr, vae, train_idx, CFG["batch"], CFG["patch"])
        y = model(x)
        loss = (y - t).abs().mean() + 0.5 * grad_l1(y, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        step += 1
        now = time.time()
        spent += now - t_last
        t_last = now
        run_loss.append(float(loss))
        if step % CFG["ckpt_every"] == 0 or step >= CFG["steps"] or spent >= budget:
            save_ckpt(ck, model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                      spent=spent, rng=rng.bit_generator.state)
            log(f"train: step {step} loss {np.mean(run_loss):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{spent / step:.2f} s/step, {spent / 60:.1f} min")
            run_loss = []
    save_ckpt(final, ema=ema.state_dict(), arch=ARCH, step=step, spent=spent, batch=CFG["batch"], patch=CFG["patch"])
    log(f"train: finished at step {step}, {spent / 60:.1f} min")


def load_sr(path=None):
    s = torch.load(path or os.path.join(CACHE, "sr.pt"))
    m = SR(**s["arch"])
    m.load_state_dict(s["ema"])
    m.eval()
    return m, s


# ----------------------------------------------------------------------------------------------
# export
def stage_export(a):
    import onnx
    model, s = load_sr()
    sr_dir = os.path.join(OUT, "sr")
    os.makedirs(sr_dir, exist_ok=True)
    path = os.path.join(sr_dir, "model.onnx")
    x = torch.rand(2, 3, LR_SIZE, LR_SIZE, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(model, (x,), path, input_names=["images"], output_names=["upscaled"],
                      dynamic_axes={"images": {0: "batch"}, "upscaled": {0: "batch"}}, opset_version=14,
                      do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path))
    json.dump({"_class_name": "DiffgraphSuperResolution", "_diffgraph_version": "0.1.0",
               "sr": ["diffusers", "OnnxRuntimeModel"]}, open(os.path.join(OUT, "model_index.json"), "w"), indent=1)
    json.dump({"architecture": "residual conv blocks at the input size, 2x pixel-shuffle x2, residual over bicubic",
               **s["arch"], "scale_factor": FACTOR, "sample_size": LR_SIZE, "out_sample_size": LR_SIZE * FACTOR,
               "input": "images float32 [batch, 3, 64, 64], RGB in [0, 1]",
               "output": "upscaled float32 [batch, 3, 256, 256], RGB in [0, 1] (clamped in the graph)",
               "bicubic": "Keys a = -0.5, half-pixel centres, clamped border (as plugins/decoders/upscale.ts)",
               "parameters": n_params(model), "train_steps": s["step"], "train_minutes": round(s["spent"] / 60, 1),
               "batch": s["batch"], "patch": s["patch"]},
              open(os.path.join(sr_dir, "config.json"), "w"), indent=1)
    # ONNX vs torch on real held-out images (and the random input), checked with onnxruntime-node.
    idx, hr, lr, vae, held = load_data()
    pick = np.nonzero(held)[0][:2]
    xr = torch.cat([to_t(lr[pick]), to_t(vae[pick[:1]]), x[:1]])
    with torch.no_grad():
        yr = model(xr)
    ref = os.path.join(CACHE, "sr_onnx_ref.json")
    json.dump({"dims": list(xr.shape), "input": xr.flatten().tolist(), "output": yr.flatten().tolist()}, open(ref, "w"))
    r = subprocess.run([bun(), os.path.join(HERE, "check_sr.ts"), path, ref], cwd=ROOT, capture_output=True, text=True)
    print(r.stdout, r.stderr, flush=True)
    if r.returncode != 0:
        sys.exit("check_sr.ts failed")
    check = json.loads(r.stdout.strip().splitlines()[-1])
    met = os.path.join(OUT, "metrics.json")
    m = json.load(open(met)) if os.path.exists(met) else {}
    m.update({"onnx_vs_torch_max_abs_diff": check["maxAbsDiff"], "ms_per_image_1_thread": check["msPerImage"],
              "onnx_bytes": os.path.getsize(path), "parameters": n_params(model), "train_steps": s["step"],
              "train_minutes": round(s["spent"] / 60, 1)})
    json.dump(m, open(met, "w"), indent=1)
    log(f"export: {path} ({os.path.getsize(path) / 1e6:.2f} MB), ONNX vs torch max abs diff "
        f"{check['maxAbsDiff']:.2e}, {check['msPerImage']:.0f} ms/image on 1 thread")


# ----------------------------------------------------------------------------------------------
# eval
def psnr(a, b):  # per image, data range 1
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def ssim(a, b):
    """Mean SSIM per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, data
    range 1), computed per RGB channel on the valid region and averaged."""
    g = torch.exp(-torch.arange(-5, 6, dtype=torch.float32) ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).view(1, 1, 11, 11).repeat(3, 1, 1, 1)
    f = lambda z: F.conv2d(z, w, groups=3)
    mu_a, mu_b = f(a), f(b)
    saa, sbb, sab = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def stage_eval(a):
    model, s = load_sr()
    idx, hr, lr, vae, held = load_data()
    pick = np.nonzero(held)[0][:CFG["eval_n"]] if CFG["eval_n"] else np.nonzero(held)[0]
    res = {"heldout_images": int(len(pick))}
    for name, src in [("real", lr), ("vae", vae)]:
        acc = {k: [] for k in ["psnr_bicubic", "psnr_model", "ssim_bicubic", "ssim_model"]}
        for i in range(0, len(pick), 32):
            j = pick[i:i + 32]
            x, t = to_t(src[j]), to_t(hr[j])
            with torch.no_grad():
                yb, ym = bicubic(x).clamp(0, 1), model(x)
            # 8-bit images, as a user gets them
            q = lambda z: torch.round(z * 255) / 255
            yb, ym = q(yb), q(ym)
            acc["psnr_bicubic"].append(psnr(yb, t)); acc["psnr_model"].append(psnr(ym, t))
            acc["ssim_bicubic"].append(ssim(yb, t)); acc["ssim_model"].append(ssim(ym, t))
        for k, v in acc.items():
            res[f"{name}_{k}"] = round(float(torch.cat(v).mean()), 4)
        log(f"eval ({name} 64 px -> 256 vs real 256, {len(pick)} held-out images): PSNR bicubic "
            f"{res[f'{name}_psnr_bicubic']:.2f} dB, model {res[f'{name}_psnr_model']:.2f} dB; SSIM bicubic "
            f"{res[f'{name}_ssim_bicubic']:.4f}, model {res[f'{name}_ssim_model']:.4f}")
    met = os.path.join(OUT, "metrics.json")
    m = json.load(open(met)) if os.path.exists(met) else {}
    m.update(res)
    json.dump(m, open(met, "w"), indent=1)


STAGES = ["data", "train", "export", "eval"]


def main():
    global CACHE, CFG, OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--minutes", type=float, default=None, help="wall-time budget of the training stage")
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    CFG = dict(QUICK if a.quick else FULL)
    if a.minutes:
        CFG["minutes"] = a.minutes
    if a.steps:
        CFG["steps"] = a.steps
    OUT = os.path.abspath(a.out or os.path.join(ROOT, "models", "emoji-sr-256"))
    if a.quick:
        if a.out is None:
            sys.exit("--quick needs --out DIR (never overwrites the committed model)")
        CACHE = os.path.join(OUT, ".cache")
    else:
        CACHE = os.path.join(ROOT, "models", ".cache", "sr")
    os.makedirs(CACHE, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    for st in a.stages.split(","):
        t = time.time()
        globals()["stage_" + st](a)
        print(f"[stage {st}] {time.time() - t:.1f}s", flush=True)


if __name__ == "__main__":
    main()
