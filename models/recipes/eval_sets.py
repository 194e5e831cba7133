#!/usr/bin/python3
"""Writes the real-image sets `bun run eval` measures the emoji model against, from the recipe's data
cache (models/.cache/data.npz, made by `train.py --stages data`):

    OUT/train/set.json + PNGs   100 training base emojis (no skin-tone variants), distinct CLDR labels,
                                one random style each: [{file, caption}] for --real-set
    OUT/heldout/set.json + PNGs the same over the held-out emojis
    OUT/fdref/*.png             1,000 other training images (any variant) for --reference-images
    OUT/captions.json           the hard-retrieval caption pool for --retrieval-pool: the sorted
                                distinct CLDR labels of all training base-emoji images (~1,715;
                                definition in caption_pool.py)
    OUT/samples/set.json + PNGs every base-emoji image (both styles) of the 16 fixed sample prompts
                                (sample_prompts.json): the real ceiling for --prompts
                                models/recipes/sample_prompts.json. "cat face" is a held-out emoji:
                                its images are here ("heldout": true) but its caption is not in
                                captions.json, so hard retrieval measures 15 of the 16 prompts

    /usr/bin/python3 models/recipes/eval_sets.py OUT [--n 100] [--fd-n 1000] [--seed 21]

The draw is seeded, so every model is measured against the same images. The train/ and heldout/ sets
keep their older base filter (a CLDR label without ":" or a flag; it leaves out keycaps, which
captions.json counts as base emojis) so that their draw, and the figures of earlier models, stay as
they were; captions.json and samples/ take no random draw.
"""
import argparse, json, os, sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from caption_pool import caption_pool, is_base_emoji  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--n", type=int, default=100)
ap.add_argument("--fd-n", type=int, default=1000)
ap.add_argument("--seed", type=int, default=21)
ap.add_argument("--cache", default=os.path.join(ROOT, "models", ".cache"))
a = ap.parse_args()

z = np.load(os.path.join(a.cache, "data.npz"))
cj = json.load(open(os.path.join(a.cache, "caps.json")))
caps, hexes = cj["caps"], cj["hexes"]
images, heldout = z["images"], z["heldout"]
rng = np.random.default_rng(a.seed)
is_base = np.array([":" not in c["label"] or "flag" in c["label"] for c in caps])


def write_set(name, mask):
    d = os.path.join(a.out, name)
    os.makedirs(d, exist_ok=True)
    seen, items, used = set(), [], []
    for i in rng.permutation(np.where(mask & is_base)[0]):
        if caps[i]["label"] in seen:
            continue
        seen.add(caps[i]["label"])
        fn = f"{len(items):03d}.png"
        Image.fromarray(images[i]).save(os.path.join(d, fn))
        items.append({"file": fn, "caption": caps[i]["label"]})
        used.append(int(i))
        if len(items) == a.n:
            break
    json.dump(items, open(os.path.join(d, "set.json"), "w"), indent=1)
    return used


used = set(write_set("train", ~heldout))
write_set("heldout", heldout)
d = os.path.join(a.out, "fdref")
os.makedirs(d, exist_ok=True)
pool = [i for i in rng.permutation(np.where(~heldout)[0]) if int(i) not in used][: a.fd_n]
for k, i in enumerate(pool):
    Image.fromarray(images[i]).save(os.path.join(d, f"{k:04d}.png"))

captions = caption_pool(caps, hexes, heldout)
json.dump(captions, open(os.path.join(a.out, "captions.json"), "w"), indent=0, ensure_ascii=False)

# The 16 fixed sample prompts' real images: every base-emoji image with that label (held-out ones marked).
prompts = json.load(open(os.path.join(HERE, "sample_prompts.json")))
d = os.path.join(a.out, "samples")
os.makedirs(d, exist_ok=True)
items = []
for p in prompts:
    found = [i for i, c in enumerate(caps) if c["label"] == p and is_base_emoji(hexes[i])]
    if not found:
        sys.exit(f"sample_prompts.json: {p!r} is the label of no base-emoji image")
    for i in found:
        fn = f"{len(items):03d}.png"
        Image.fromarray(images[i]).save(os.path.join(d, fn))
        items.append({"file": fn, "caption": p, "style": caps[i].get("style"), "heldout": bool(heldout[i])})
json.dump(items, open(os.path.join(d, "set.json"), "w"), indent=1)
print(f"wrote {a.out}: train/ and heldout/ ({a.n} each), fdref/ ({len(pool)}), captions.json ({len(captions)}), "
      f"samples/ ({len(items)} images of {len(prompts)} prompts)")
