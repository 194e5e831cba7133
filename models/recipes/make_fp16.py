#!/usr/bin/env python3
"""emoji-64-fp16: emoji-64 with its weights stored as float16 and computed in float32.

Every float32 initializer of at least MIN_ELEMENTS values is stored as float16 and followed by a
Cast to float32 under its original name, so each graph's arithmetic, inputs and outputs are
unchanged (float32 throughout; only the stored weights are rounded to float16). Small tensors
(biases, norms, shape constants) stay float32. The CLIP evaluation models (clip_eval/, a metric,
not the generator) are copied unchanged so the quality numbers compare like with like.

  /usr/bin/python3 models/recipes/make_fp16.py [--src models/emoji-64] [--out models/emoji-64-fp16]

Deterministic: the same source bytes give the same output bytes.
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

MIN_ELEMENTS = 1024
CONVERT = ["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx"]
SKIP = {"README.md", "manifest.sha256.json", "samples.png", "metrics.json", "split.json"}


def fp16_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    g = model.graph
    casts = []
    kept = []
    converted = 0
    for init in g.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        if init.data_type != TensorProto.FLOAT or n < MIN_ELEMENTS:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if np.abs(arr).max(initial=0) > 65504:
            raise SystemExit(f"{init.name}: values beyond float16's range; cannot store it as float16")
        stored = numpy_helper.from_array(arr.astype(np.float16), name=f"{init.name}__fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT, name=f"{init.name}__cast"))
        converted += 1
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    return model, converted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default="models/emoji-64")
    ap.add_argument("--out", default="models/emoji-64-fp16")
    args = ap.parse_args()
    src, out = Path(args.src), Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f.relative_to(src).as_posix()
        if rel in SKIP or rel.startswith("eval/"):
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in CONVERT:
            model, n = fp16_weights(onnx.load(str(f)))
            onnx.checker.check_model(model)
            dst.write_bytes(model.SerializeToString(deterministic=True))
            print(f"{rel}: {n} weights as float16, {f.stat().st_size / 1e6:.2f} → {dst.stat().st_size / 1e6:.2f} MB")
        else:
            shutil.copyfile(f, dst)
    (out / "README.md").write_text(
        "# emoji-64-fp16\n\n"
        "[emoji-64](../emoji-64/README.md) with every float32 weight of ≥ 1024 values stored as float16 and cast\n"
        "back to float32 inside the graph (arithmetic, inputs and outputs stay float32). Made by\n"
        "`/usr/bin/python3 models/recipes/make_fp16.py` from the committed emoji-64 weights; `clip_eval/`\n"
        "is emoji-64's, unchanged. Size, speed and quality beside the float32 model: the README's\n"
        "\"A smaller download\" section.\n"
    )


if __name__ == "__main__":
    main()
