#!/usr/bin/python3
"""A tiny random "evaluation CLIP" for the metric plugin tests, and its numpy reference.

    /usr/bin/python3 test/metrics/make_clip_eval.py            # (re)write test/metrics/fixtures/clip-eval/
    /usr/bin/python3 test/metrics/make_clip_eval.py --reference < request.json > answer.json

The models have the emoji model's clip_eval names and ranks (pixel_values float [B,3,64,64] →
image_embeds [B,16]; input_ids int64 [B,77] → text_embeds [B,16]); the tokenizer is tiny-sd's.
--reference recomputes features, CLIP scores and ranks with numpy from the ONNX initializers
(no onnxruntime), as the independent check of the TypeScript plugins (preprocessing, towers' I/O,
cosine, ranking). Deterministic: numpy seed 0. Needs python3-onnx, python3-numpy.
"""
import json, os, shutil, sys
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "clip-eval")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
EMBED, HIDDEN, LEN = 16, 24, 77


def build():
    import onnx
    from onnx import helper, numpy_helper, TensorProto
    rng = np.random.default_rng(0)
    src_tok = os.path.join(HERE, "..", "..", "models", "tiny-sd", "tokenizer")
    vocab = len(json.load(open(os.path.join(src_tok, "tokenizer.json")))["model"]["vocab"])
    w1 = (rng.standard_normal((192, HIDDEN)) / np.sqrt(192)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, EMBED)) / np.sqrt(HIDDEN)).astype(np.float32)
    emb = rng.standard_normal((vocab, EMBED)).astype(np.float32)
    proj = (rng.standard_normal((EMBED, EMBED)) / 4).astype(np.float32)

    img = helper.make_graph(
        [
            helper.make_node("AveragePool", ["pixel_values"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Tanh", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["image_embeds"]),
        ],
        "clip_eval_image",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", EMBED])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    txt = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "input_ids"], ["tokens"], axis=0),
            helper.make_node("ReduceMean", ["tokens"], ["mean"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["mean", "proj"], ["text_embeds"]),
        ],
        "clip_eval_text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", LEN])],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", EMBED])],
        [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(proj, "proj")],
    )
    d = os.path.join(OUT, "clip_eval")
    os.makedirs(d, exist_ok=True)
    for graph, name in [(img, "image_model.onnx"), (txt, "text_model.onnx")]:
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="diffgraph-test")
        m.ir_version = 8
        onnx.checker.check_model(m)
        onnx.save(m, os.path.join(d, name))
    shutil.copytree(src_tok, os.path.join(d, "tokenizer"), dirs_exist_ok=True)
    json.dump({"do_resize": True, "size": {"shortest_edge": 64}, "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
               "do_normalize": True, "image_mean": MEAN, "image_std": STD, "do_convert_rgb": True, "resample": 3,
               "image_processor_type": "CLIPImageProcessor"}, open(os.path.join(d, "preprocessor_config.json"), "w"), indent=2)
    json.dump(["red heart", "blue heart", "green heart", "cat face", "dog face", "pizza", "rocket", "sun", "star", "fire",
               "ghost", "rainbow", "banana", "thumbs up", "grinning face", "smiling face", "horse", "astronaut"],
              open(os.path.join(d, "captions.json"), "w"), indent=0)
    # Reference statistics for the frechet-distance node: features of 40 random images.
    imgs = rng.random((40, 3, 64, 64)).astype(np.float32)
    f = image_features(imgs)
    json.dump({"n": 40, "mu": f.mean(0).tolist(), "sigma": np.cov(f, rowvar=False).tolist(), "ddof": 1,
               "source": "test fixture: 40 uniform-noise images"}, open(os.path.join(d, "reference_stats.json"), "w"))
    print("wrote", OUT)


def weights(name):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(os.path.join(OUT, "clip_eval", name))
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}


def image_features(images):
    w = weights("image_model.onnx")
    x = (np.asarray(images, np.float64) - np.array(MEAN)[None, :, None, None]) / np.array(STD)[None, :, None, None]
    b = x.shape[0]
    pooled = x.reshape(b, 3, 8, 8, 8, 8).mean(axis=(3, 5))
    return np.tanh(pooled.reshape(b, -1) @ w["w1"] + w["b1"]) @ w["w2"]


def text_features(ids):
    w = weights("text_model.onnx")
    return w["emb"][np.asarray(ids)].mean(axis=1) @ w["proj"]


def cosine(a, b):
    return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def reference():
    """stdin: {"images": [B*3*64*64], "ids": [[B][77]], "candidates": [[K][77]] per image (optional), "stats": bool}."""
    req = json.load(sys.stdin)
    ids = np.asarray(req["ids"])
    imgs = np.asarray(req["images"], np.float64).reshape(ids.shape[0], 3, 64, 64)
    fi, ft = image_features(imgs), text_features(ids)
    out = {"image_features": fi.tolist(), "text_features": ft.tolist(),
           "clip_scores": np.maximum(100 * cosine(fi, ft), 0).tolist(), "cosines": cosine(fi, ft).tolist()}
    if "candidates" in req:
        ranks = []
        for i, cand in enumerate(req["candidates"]):
            c = text_features(np.asarray(cand))
            s = cosine(fi[i][None, :], c)
            ranks.append(int(1 + (s[1:] >= s[0]).sum()))
        out["ranks"] = ranks
    if req.get("fd"):
        from scipy import linalg
        ref = json.load(open(os.path.join(OUT, "clip_eval", "reference_stats.json")))
        mu2, s2 = np.asarray(ref["mu"]), np.asarray(ref["sigma"])
        mu1 = fi.mean(0)
        s1 = np.cov(fi, rowvar=False) if fi.shape[0] > 1 else np.zeros_like(s2)
        # symmetric form Tr((S1^1/2 S2 S1^1/2)^1/2) with an eigh square root (S1 is rank deficient here,
        # where sqrtm of a singular matrix loses half the digits)
        ev, vec = linalg.eigh(s1)
        r = (vec * np.sqrt(np.clip(ev, 0, None))) @ vec.T
        w = linalg.eigvalsh(r @ s2 @ r)
        out["fd"] = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(w, 0, None)).sum())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    reference() if "--reference" in sys.argv else build()
