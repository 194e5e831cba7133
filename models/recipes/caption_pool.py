"""The caption pool of the hard-retrieval measure, and the measure itself, in numpy — the definitions
`bun run eval` implements in TypeScript (plugins/metrics/retrieval.ts; tested against this file by
test/metrics/retrieval.test.ts):

- a training image is a *base-emoji image* when its code points (caps.json `hexes`, e.g.
  "1F44D-1F3FD") contain no skin-tone modifier U+1F3FB..U+1F3FF (keycaps, flags, ZWJ sequences
  without a tone are base emojis);
- the **caption pool** is the sorted list of the distinct CLDR labels (`caps[i]["label"]`) of training
  (not held-out) base-emoji images;
- **hard retrieval** of an image with caption c: cosine of its evaluation-CLIP image embedding with
  every pool caption's text embedding (both L2-normalised); a hit iff c is in the pool and scores
  strictly higher than every other pool caption (a tie counts against c, as in R-precision). Images
  whose caption is not in the pool are left out of the measure and counted.

Usable as a module (`from caption_pool import caption_pool, hard_retrieval`) or as a script that
checks the TypeScript side's test vectors: `python3 caption_pool.py --check < request.json`.
"""
import json, sys

import numpy as np

SKIN_TONES = range(0x1F3FB, 0x1F3FF + 1)


def is_base_emoji(hexcode):
    """True when the code points ("1F44D-1F3FD", "0031-FE0F-20E3") hold no skin-tone modifier."""
    return not any(int(cp, 16) in SKIN_TONES for cp in hexcode.replace("_", "-").split("-") if cp)


def caption_pool(caps, hexes, heldout):
    """Sorted distinct CLDR labels of the training (heldout false) base-emoji images."""
    return sorted({c["label"] for c, h, out in zip(caps, hexes, heldout) if not bool(out) and is_base_emoji(h)})


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def hard_retrieval(image_embeds, pool_embeds, pool, captions):
    """(hits, measured, excluded) over the images; captions[i] is image i's caption."""
    sims = _unit(image_embeds) @ _unit(pool_embeds).T
    index = {c: k for k, c in enumerate(pool)}
    hits = measured = excluded = 0
    for i, c in enumerate(captions):
        t = index.get(c)
        if t is None:
            excluded += 1
            continue
        measured += 1
        others = np.delete(sims[i], t)
        hits += int(others.size == 0 or sims[i, t] > others.max())
    return hits, measured, excluded


if __name__ == "__main__" and sys.argv[1:] == ["--check"]:
    req = json.load(sys.stdin)
    h, m, e = hard_retrieval(req["image_embeds"], req["pool_embeds"], req["pool"], req["captions"])
    pool = caption_pool(req["caps"], req["hexes"], req["heldout"]) if "caps" in req else None
    json.dump({"hits": h, "measured": m, "excluded": e, "caption_pool": pool}, sys.stdout)
