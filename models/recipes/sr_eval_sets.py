#!/usr/bin/python3
"""Writes the real 256-px image sets `bun run eval` measures the cascade (pipelines/emoji-256.json)
against, from the SR recipe's data cache (models/.cache/sr/data, made by `train_sr.py --stages data`):

    OUT/real/set.json + PNGs  100 training base emojis (distinct, one random style each) at 256 px,
                              captioned with their emoji-datasource name: [{file, caption}] for
                              --real-set (their captions are the prompt set)
    OUT/fdref/*.png           1,000 other training renders (256 px) for --reference-images

    /usr/bin/python3 models/recipes/sr_eval_sets.py OUT [--n 100] [--fd-n 1000] [--seed 21]

Held-out emojis are never drawn. The draw is seeded, so every pipeline meets the same images.
"""
import argparse, json, os

import numpy as np
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--n", type=int, default=100)
ap.add_argument("--fd-n", type=int, default=1000)
ap.add_argument("--seed", type=int, default=21)
ap.add_argument("--data", default=os.path.join(ROOT, "models", ".cache", "sr", "data"))
ap.add_argument("--npm", default=os.path.join(ROOT, "models", ".cache", "npm", "node_modules"))
a = ap.parse_args()

idx = json.load(open(os.path.join(a.data, "index.json")))
n, H = idx["n"], idx["hr"]
hr = np.memmap(os.path.join(a.data, "hr.u8"), np.uint8, "r", shape=(n, H, H, 3))
names = {e["unified"]: " ".join((e["name"] or e["short_name"]).lower().replace("_", " ").split())
         for e in json.load(open(os.path.join(a.npm, "emoji-datasource", "emoji.json")))}
items = idx["items"]
train = [i for i, it in enumerate(items) if not it["heldout"] and names.get(it["base"])]
rng = np.random.default_rng(a.seed)
order = [int(i) for i in rng.permutation(train)]

d = os.path.join(a.out, "real")
os.makedirs(d, exist_ok=True)
seen, real, used = set(), [], set()
for i in order:
    cap = names[items[i]["base"]]
    if cap in seen:
        continue
    seen.add(cap)
    fn = f"{len(real):03d}.png"
    Image.fromarray(np.asarray(hr[i])).save(os.path.join(d, fn))
    real.append({"file": fn, "caption": cap, "style": items[i]["style"]})
    used.add(items[i]["base"])
    if len(real) == a.n:
        break
json.dump(real, open(os.path.join(d, "set.json"), "w"), indent=1)

d = os.path.join(a.out, "fdref")
os.makedirs(d, exist_ok=True)
pool = [i for i in order if items[i]["base"] not in used][: a.fd_n]
for k, i in enumerate(pool):
    Image.fromarray(np.asarray(hr[i])).save(os.path.join(d, f"{k:04d}.png"))
print(f"wrote {a.out}: real/ ({len(real)}), fdref/ ({len(pool)})")
