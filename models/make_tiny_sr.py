#!/usr/bin/python3
"""Make the tiny-sr fixture: a random-weight super-resolution model with the architecture and the
ONNX contract of `models/emoji-sr-256` (input `images` float32 [batch, 3, 64, 64] in [0, 1] ->
`upscaled` float32 [batch, 3, 256, 256] in [0, 1]), a few KB, for the cascade pipeline's tests.

    /usr/bin/python3 models/make_tiny_sr.py [--out models/tiny-sr]

The network is the recipe's own (`models/recipes/train_sr.py`: residual conv blocks, two
pixel-shuffle x2 steps, residual over bicubic) at 4 channels and one block, with weights drawn by
torch.manual_seed(0) and scaled so that the residual is visible next to bicubic.
Writes `reference.json` too, and `manifest.sha256.json` (bun api/cli/manifest.ts): torch's output of the model and of the recipe's bicubic on a fixed
input ((3c + 5y + 7x) mod 17 / 16), at 128 fixed positions, for checks without torch.
"""
import argparse, json, os, subprocess, sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes"))
import train_sr  # noqa: E402  (the recipe's model definition: one architecture, one bicubic)

ARCH = dict(channels=4, blocks=1, mid=4)


def fixed_input():
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(64), torch.arange(64), indexing="ij")
    return (((3 * c + 5 * y + 7 * x) % 17).float() / 16).unsqueeze(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-sr"))
    a = ap.parse_args()
    torch.manual_seed(0)
    model = train_sr.SR(**ARCH)
    with torch.no_grad():  # the recipe zero-initialises the last layer; a fixture needs a residual
        model.up2.weight.normal_(0, 0.1)
        model.up2.bias.normal_(0, 0.05)
    model.eval()
    os.makedirs(os.path.join(a.out, "sr"), exist_ok=True)
    path = os.path.join(a.out, "sr", "model.onnx")
    x = fixed_input()
    torch.onnx.export(model, (x,), path, input_names=["images"], output_names=["upscaled"],
                      dynamic_axes={"images": {0: "batch"}, "upscaled": {0: "batch"}}, opset_version=14,
                      do_constant_folding=True)
    import onnx
    onnx.checker.check_model(onnx.load(path))
    with torch.no_grad():
        y = model(x).flatten()
        b = train_sr.bicubic(x).clamp(0, 1).flatten()
    picks = [int(i) for i in torch.linspace(0, y.numel() - 1, 128).round().long()]
    json.dump({"_class_name": "DiffgraphSuperResolution", "sr": ["diffusers", "OnnxRuntimeModel"]},
              open(os.path.join(a.out, "model_index.json"), "w"), indent=1)
    json.dump({"architecture": "tiny-sr fixture (random weights) of models/recipes/train_sr.py", **ARCH,
               "scale_factor": train_sr.FACTOR, "sample_size": 64, "out_sample_size": 256},
              open(os.path.join(a.out, "sr", "config.json"), "w"), indent=1)
    json.dump({"input": "(3c + 5y + 7x) mod 17 / 16, [1, 3, 64, 64]", "indices": picks,
               "model": [round(float(y[i]), 7) for i in picks], "bicubic": [round(float(b[i]), 7) for i in picks],
               "residual_mean_abs": round(float((y - b).abs().mean()), 5)},
              open(os.path.join(a.out, "reference.json"), "w"))
    # The folder's SHA-256 manifest (core/manifest.ts) must describe these bytes, not the previous ones.
    root = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    subprocess.run([os.path.join(root, "node_modules", ".bin", "bun"), os.path.join(root, "api", "cli", "manifest.ts"), a.out], check=True)
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(a.out) for f in fs)
    print(f"wrote {a.out} ({size / 1e3:.1f} kB; mean |model - bicubic| {float((y - b).abs().mean()):.4f})")


if __name__ == "__main__":
    main()
