#!/usr/bin/env python3
"""Make the tiny-sd fixture: random-weight models in the diffusers ONNX layout with Stable Diffusion
1.x's exact tensor names, dtypes and ranks, plus CLIP-style BPE tokenizer files.

    /usr/bin/python3 models/make_tiny_sd.py [--out models/tiny-sd]

Writes `<out>/` (float32; UNet timestep float [batch], input_ids int32 as diffusers' exporter does)
and `<out>-fp16/` (float16 inputs, outputs and weights; UNet timestep int64 [1] as older exporters
did), each a few hundred KB. The networks are tiny but wired like the real ones: the UNet output
depends on the sample, the timestep and the text states, so guidance, seeds and schedulers all
change the result. Deterministic: torch.manual_seed(0).
"""
import argparse, json, os, shutil
import torch, torch.nn as nn
import onnx
from onnx import numpy_helper, helper, TensorProto

HIDDEN = 32          # CLIP ViT-L/14 has 768; names, dtypes and ranks are what matter here
MAX_LEN = 77         # SD 1.x tokenizer model_max_length
LATENT_C = 4
VAE_FACTOR = 8

# ---------------------------------------------------------------- tokenizer (CLIP byte-level BPE)
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, [chr(c) for c in cs]))

WORDS = ("a photo of an the cat dog red heart blue green sun rocket pizza face smiling grinning "
         "thumbs up star fire ghost rainbow banana emoji painting astronaut horse riding on mars").split()

def make_tokenizer():
    byte_chars = list(bytes_to_unicode().values())
    vocab = {}
    for c in byte_chars: vocab.setdefault(c, len(vocab))
    for c in byte_chars: vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in WORDS:
        syms = list(w[:-1]) + [w[-1] + "</w>"]
        while len(syms) > 1:
            pair = (syms[0], syms[1])
            if " ".join(pair) not in merges:
                merges.append(" ".join(pair))
            syms = [syms[0] + syms[1]] + syms[2:]
            vocab.setdefault(syms[0], len(vocab))
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"] = bos
    vocab["<|endoftext|>"] = eos
    added = [
        {"id": bos, "content": "<|startoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": True},
        {"id": eos, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": True, "special": True},
    ]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", eos], "cls": ["<|startoftext|>", bos],
                           "trim_offsets": False, "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": merges},
    }
    config = {"add_prefix_space": False, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "model_max_length": MAX_LEN,
              "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"}
    return tok, config, len(vocab)

# ---------------------------------------------------------------- networks
class TextEncoder(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.tok = nn.Embedding(vocab, HIDDEN)
        self.pos = nn.Parameter(torch.randn(MAX_LEN, HIDDEN) * 0.02)
        self.mix = nn.Linear(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
    def forward(self, input_ids):
        x = self.tok(input_ids.long()) + self.pos[: input_ids.shape[1]]
        h = self.norm(x + torch.tanh(self.mix(x.cumsum(1) / torch.arange(1, x.shape[1] + 1).view(1, -1, 1))))
        # CLIP pools at the eos token (the highest id in each row)
        pooled = h[torch.arange(h.shape[0]), input_ids.long().argmax(-1)]
        return h, pooled

class UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(LATENT_C, 16, 3, padding=1)
        self.time = nn.Linear(8, 16)
        self.ctx = nn.Linear(HIDDEN, 16)
        self.conv_out = nn.Conv2d(16, LATENT_C, 3, padding=1)
    def forward(self, sample, timestep, encoder_hidden_states):
        t = timestep.float().reshape(-1, 1).expand(sample.shape[0], 1)
        freqs = torch.exp(-torch.arange(4).float() * 2.0)
        emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], -1)
        h = torch.relu(self.conv_in(sample) + self.time(emb)[:, :, None, None] + self.ctx(encoder_hidden_states.mean(1))[:, :, None, None])
        return self.conv_out(h) * 0.5 + sample * 0.1

class VaeDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(LATENT_C, 3 * VAE_FACTOR * VAE_FACTOR, 3, padding=1)
        self.shuffle = nn.PixelShuffle(VAE_FACTOR)
    def forward(self, latent_sample):
        return torch.tanh(self.shuffle(self.conv(latent_sample)))

class VaeEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, LATENT_C, VAE_FACTOR, stride=VAE_FACTOR)
    def forward(self, sample):
        return self.conv(sample)

def export(module, args, path, inputs, outputs, axes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=14)

# ---------------------------------------------------------------- float16 variant
def to_float16(src, dst, int64_timestep=False):
    """Float16 at every boundary and in every weight, compute kept in float32 through Cast nodes
    (ORT's CPU provider lacks float16 kernels for several ops; the I/O contract is what we test)."""
    m = onnx.load(src)
    g = m.graph
    new_nodes = []
    for init in list(g.initializer):
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype("float16")
            name = init.name
            init.CopyFrom(numpy_helper.from_array(arr, name + "_fp16"))
            new_nodes.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT))
    for inp in g.input:
        if inp.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        if int64_timestep and inp.name == "timestep":
            inp.type.tensor_type.elem_type = TensorProto.INT64
            del inp.type.tensor_type.shape.dim[:]
            inp.type.tensor_type.shape.dim.add().dim_value = 1
        else:
            inp.type.tensor_type.elem_type = TensorProto.FLOAT16
        old = inp.name
        inp.name = old + "_in"
        new_nodes.append(helper.make_node("Cast", [inp.name], [old], to=TensorProto.FLOAT))
        for n in g.node:
            pass
        # rename the graph input back so the public name is unchanged
        inp.name, nm = old, inp.name
        new_nodes[-1].input[0] = old
        for n in g.node:
            for i, x in enumerate(n.input):
                if x == old: n.input[i] = nm
        new_nodes[-1].output[0] = nm
    for out in g.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        old = out.name
        for n in g.node:
            for i, x in enumerate(n.output):
                if x == old: n.output[i] = old + "_f32"
            for i, x in enumerate(n.input):
                if x == old: n.input[i] = old + "_f32"
        g.node.append(helper.make_node("Cast", [old + "_f32"], [old], to=TensorProto.FLOAT16))
        out.type.tensor_type.elem_type = TensorProto.FLOAT16
    for n in reversed(new_nodes):
        g.node.insert(0, n)
    del g.value_info[:]
    onnx.checker.check_model(m)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    onnx.save(m, dst)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-sd"))
    out = ap.parse_args().out.rstrip("/")
    torch.manual_seed(0)
    tok, tok_config, vocab = make_tokenizer()
    for d in (out, out + "-fp16"):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "tokenizer"))
        json.dump(tok, open(os.path.join(d, "tokenizer", "tokenizer.json"), "w"), ensure_ascii=False)
        json.dump(tok_config, open(os.path.join(d, "tokenizer", "tokenizer_config.json"), "w"), indent=2)
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"},
                  open(os.path.join(d, "tokenizer", "special_tokens_map.json"), "w"), indent=2)
        os.makedirs(os.path.join(d, "scheduler"))
        json.dump({"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                   "steps_offset": 1, "clip_sample": False, "trained_betas": None},
                  open(os.path.join(d, "scheduler", "scheduler_config.json"), "w"), indent=2)
        json.dump({"_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.6.0",
                   "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
                   "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
                   "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "OnnxRuntimeModel"],
                   "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "vae_encoder": ["diffusers", "OnnxRuntimeModel"]},
                  open(os.path.join(d, "model_index.json"), "w"), indent=2)
    te, unet, dec, enc = TextEncoder(vocab).eval(), UNet().eval(), VaeDecoder().eval(), VaeEncoder().eval()
    with torch.no_grad():
        export(te, (torch.zeros(1, MAX_LEN, dtype=torch.int32),), f"{out}/text_encoder/model.onnx", ["input_ids"],
               ["last_hidden_state", "pooler_output"], {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"}, "pooler_output": {0: "batch"}})
        export(unet, (torch.randn(2, LATENT_C, 8, 8), torch.randn(2), torch.randn(2, MAX_LEN, HIDDEN)), f"{out}/unet/model.onnx",
               ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
               {"sample": {0: "batch", 1: "channels", 2: "height", 3: "width"}, "timestep": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "sequence"}})
        export(dec, (torch.randn(1, LATENT_C, 8, 8),), f"{out}/vae_decoder/model.onnx", ["latent_sample"], ["sample"],
               {"latent_sample": {0: "batch", 1: "channels", 2: "height", 3: "width"}})
        export(enc, (torch.randn(1, 3, 64, 64),), f"{out}/vae_encoder/model.onnx", ["sample"], ["latent_sample"],
               {"sample": {0: "batch", 1: "channels", 2: "height", 3: "width"}})
    for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        to_float16(f"{out}/{part}/model.onnx", f"{out}-fp16/{part}/model.onnx", int64_timestep=(part == "unet"))
    total = sum(os.path.getsize(os.path.join(r, f)) for d in (out, out + "-fp16") for r, _, fs in os.walk(d) for f in fs)
    print(f"wrote {out} and {out}-fp16 ({total / 1024:.0f} KB)")

if __name__ == "__main__":
    main()
