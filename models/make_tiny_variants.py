#!/usr/bin/env python3
"""Make the layout fixtures of issue 16: random-weight models with the exact tensor names, dtypes and
ranks of the exports people run, each a few KB to a few hundred KB, deterministic (torch.manual_seed).

    /usr/bin/python3 models/make_tiny_variants.py [--out models]

- tiny-sdxl/       Optimum's ORTStableDiffusionXLPipeline layout: text_encoder/ (input_ids int32 →
                   last_hidden_state, pooler_output, hidden_states.0..2) and text_encoder_2/
                   (→ text_embeds, last_hidden_state, hidden_states.0..2), tokenizer/ + tokenizer_2/
                   (pad "!"), unet/ (sample, timestep int64 [steps], encoder_hidden_states of both
                   towers' width, text_embeds [batch, E], time_ids [batch, 6] → out_sample), vae_decoder/
                   and vae_encoder/ with config.json (scaling_factor 0.13025), EulerDiscreteScheduler,
                   model_index.json listing "vae" and force_zeros_for_empty_prompt.
- tiny-sd-turbo/   SD-Turbo as the onnxruntime-web demo ships it: every shape fixed (batch 1, 8×8
                   latents, 77 tokens), timestep int64 [1], EulerDiscreteScheduler with trailing spacing.
- tiny-lcm/        an LCM-distilled SD 1.x UNet: timestep_cond float [batch, 8] (time_cond_proj_dim),
                   LCMScheduler config as LCM Dreamshaper v7 ships it.
- tiny-sd-inpaint/ SD inpainting: unet sample has 9 channels (latents, mask, masked-image latents),
                   out_sample 4; OnnxStableDiffusionInpaintPipeline, PNDMScheduler.
- tiny-sd-external/ tiny-sd with its UNet saved as model.onnx + model.onnx_data (ONNX external data,
                   the form every model over 2 GB must take).
"""
import argparse, json, os, shutil, sys
import torch, torch.nn as nn
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_sd import make_tokenizer, TextEncoder, UNet, VaeDecoder, VaeEncoder, export, MAX_LEN, LATENT_C, HIDDEN

H1, H2, POOL = 16, 24, 24   # SDXL: CLIP ViT-L (768) and OpenCLIP bigG (1280, projection 1280)

def dump(obj, *path):
    os.makedirs(os.path.dirname(os.path.join(*path)), exist_ok=True)
    json.dump(obj, open(os.path.join(*path), "w"), indent=2, ensure_ascii=False)

def write_tokenizer(d, sub="tokenizer", pad="<|endoftext|>"):
    tok, config, vocab = make_tokenizer()
    config = dict(config, pad_token=pad)
    dump(tok, d, sub, "tokenizer.json")
    dump(config, d, sub, "tokenizer_config.json")
    dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad, "unk_token": "<|endoftext|>"}, d, sub, "special_tokens_map.json")
    return vocab

class Tower(nn.Module):
    """A CLIP-like text tower with two layers; outputs as Optimum exports them with hidden states."""
    def __init__(self, vocab, hidden, projection=None):
        super().__init__()
        self.tok = nn.Embedding(vocab, hidden)
        self.pos = nn.Parameter(torch.randn(MAX_LEN, hidden) * 0.02)
        self.l1 = nn.Linear(hidden, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, projection, bias=False) if projection else None
    def forward(self, input_ids):
        h0 = self.tok(input_ids.long()) + self.pos[: input_ids.shape[1]]
        causal = h0.cumsum(1) / torch.arange(1, h0.shape[1] + 1).view(1, -1, 1)
        h1 = h0 + torch.tanh(self.l1(causal))
        h2 = h1 + torch.tanh(self.l2(h1.cumsum(1) / torch.arange(1, h0.shape[1] + 1).view(1, -1, 1)))
        last = self.norm(h2)
        pooled = last[torch.arange(last.shape[0]), input_ids.long().argmax(-1)]
        if self.proj is not None:
            return self.proj(pooled), last, h0, h1, h2
        return last, pooled, h0, h1, h2

class SdxlUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(LATENT_C, 16, 3, padding=1)
        self.time = nn.Linear(8, 16)
        self.ctx = nn.Linear(H1 + H2, 16)
        self.add = nn.Linear(POOL + 6 * 2, 16)   # text_time: pooled text + an embedding of the 6 size values
        self.conv_out = nn.Conv2d(16, LATENT_C, 3, padding=1)
    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        t = timestep.float().reshape(-1, 1).expand(sample.shape[0], 1)
        freqs = torch.exp(-torch.arange(4).float() * 2.0)
        emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], -1)
        ids = time_ids / 64.0
        add = self.add(torch.cat([text_embeds, torch.sin(ids), torch.cos(ids)], -1))
        h = torch.relu(self.conv_in(sample) + (self.time(emb) + add)[:, :, None, None] + self.ctx(encoder_hidden_states.mean(1))[:, :, None, None])
        return self.conv_out(h) * 0.5 + sample * 0.1

class LcmUNet(UNet):
    def __init__(self):
        super().__init__()
        self.cond = nn.Linear(8, 16)
    def forward(self, sample, timestep, encoder_hidden_states, timestep_cond):
        t = timestep.float().reshape(-1, 1).expand(sample.shape[0], 1)
        freqs = torch.exp(-torch.arange(4).float() * 2.0)
        emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], -1)
        h = torch.relu(self.conv_in(sample) + (self.time(emb) + self.cond(timestep_cond))[:, :, None, None] + self.ctx(encoder_hidden_states.mean(1))[:, :, None, None])
        return self.conv_out(h) * 0.5 + sample * 0.1

class InpaintUNet(UNet):
    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(2 * LATENT_C + 1, 16, 3, padding=1)
    def forward(self, sample, timestep, encoder_hidden_states):
        t = timestep.float().reshape(-1, 1).expand(sample.shape[0], 1)
        freqs = torch.exp(-torch.arange(4).float() * 2.0)
        emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], -1)
        h = torch.relu(self.conv_in(sample) + self.time(emb)[:, :, None, None] + self.ctx(encoder_hidden_states.mean(1))[:, :, None, None])
        return self.conv_out(h) * 0.5 + sample[:, :LATENT_C] * 0.1

SD_SCHED = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None}
ONNX = ["diffusers", "OnnxRuntimeModel"]
TXT_AXES = {"input_ids": {0: "batch_size", 1: "sequence_length"}}
UNET_AXES = {"sample": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"}}

def vae(d, scaling=None, axes=True):
    dec, enc = VaeDecoder().eval(), VaeEncoder().eval()
    export(dec, (torch.randn(1, LATENT_C, 8, 8),), f"{d}/vae_decoder/model.onnx", ["latent_sample"], ["sample"],
           {"latent_sample": {0: "batch_size", 1: "num_channels_latent", 2: "height_latent", 3: "width_latent"}} if axes else None)
    export(enc, (torch.randn(1, 3, 64, 64),), f"{d}/vae_encoder/model.onnx", ["sample"], ["latent_sample"],
           {"sample": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"}} if axes else None)
    if scaling is not None:
        for part in ("vae_decoder", "vae_encoder"):
            dump({"_class_name": "AutoencoderKL", "latent_channels": LATENT_C, "sample_size": 64, "scaling_factor": scaling,
                  "block_out_channels": [32, 32, 32, 32], "force_upcast": True}, d, part, "config.json")

def sdxl(d):
    vocab = write_tokenizer(d)
    write_tokenizer(d, "tokenizer_2", pad="!")
    te1, te2, unet = Tower(vocab, H1).eval(), Tower(vocab, H2, POOL).eval(), SdxlUNet().eval()
    ids = torch.zeros(1, MAX_LEN, dtype=torch.int32)
    hs = ["hidden_states.0", "hidden_states.1", "hidden_states.2"]
    seq = {0: "batch_size", 1: "sequence_length"}
    export(te1, (ids,), f"{d}/text_encoder/model.onnx", ["input_ids"], ["last_hidden_state", "pooler_output", *hs],
           {**TXT_AXES, "last_hidden_state": seq, "pooler_output": {0: "batch_size"}, **{h: seq for h in hs}})
    export(te2, (ids,), f"{d}/text_encoder_2/model.onnx", ["input_ids"], ["text_embeds", "last_hidden_state", *hs],
           {**TXT_AXES, "text_embeds": {0: "batch_size"}, "last_hidden_state": seq, **{h: seq for h in hs}})
    export(unet, (torch.randn(2, LATENT_C, 8, 8), torch.tensor([999, 999], dtype=torch.int64), torch.randn(2, MAX_LEN, H1 + H2), torch.randn(2, POOL), torch.randn(2, 6)),
           f"{d}/unet/model.onnx", ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], ["out_sample"],
           {**UNET_AXES, "timestep": {0: "steps"}, "text_embeds": {0: "batch_size"}, "time_ids": {0: "batch_size"}})
    vae(d, scaling=0.13025)
    dump({"_class_name": "UNet2DConditionModel", "in_channels": LATENT_C, "out_channels": LATENT_C, "sample_size": 8,
          "cross_attention_dim": H1 + H2, "addition_embed_type": "text_time", "projection_class_embeddings_input_dim": POOL + 6 * 256,
          "block_out_channels": [16]}, d, "unet", "config.json")
    dump({"_class_name": "CLIPTextModel", "hidden_size": H1, "vocab_size": vocab, "max_position_embeddings": MAX_LEN}, d, "text_encoder", "config.json")
    dump({"_class_name": "CLIPTextModelWithProjection", "hidden_size": H2, "projection_dim": POOL, "vocab_size": vocab, "max_position_embeddings": MAX_LEN}, d, "text_encoder_2", "config.json")
    dump({"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", **SD_SCHED, "interpolation_type": "linear",
          "prediction_type": "epsilon", "sample_max_value": 1.0, "timestep_spacing": "leading", "use_karras_sigmas": False}, d, "scheduler", "scheduler_config.json")
    dump({"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0", "force_zeros_for_empty_prompt": True,
          "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
          "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
          "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
         d, "model_index.json")

def turbo(d):
    vocab = write_tokenizer(d)
    te, unet = TextEncoder(vocab).eval(), UNet().eval()
    export(te, (torch.zeros(1, MAX_LEN, dtype=torch.int32),), f"{d}/text_encoder/model.onnx", ["input_ids"], ["last_hidden_state", "pooler_output"], None)
    export(unet, (torch.randn(1, LATENT_C, 8, 8), torch.tensor([999], dtype=torch.int64), torch.randn(1, MAX_LEN, HIDDEN)), f"{d}/unet/model.onnx",
           ["sample", "timestep", "encoder_hidden_states"], ["out_sample"], None)
    vae(d, axes=False)
    dump({"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.24.0.dev0", **SD_SCHED, "interpolation_type": "linear",
          "prediction_type": "epsilon", "sample_max_value": 1.0, "timestep_spacing": "trailing", "timestep_type": "discrete",
          "use_karras_sigmas": False, "rescale_betas_zero_snr": False}, d, "scheduler", "scheduler_config.json")
    dump({"_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.24.0.dev0", "requires_safety_checker": False,
          "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ONNX, "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ONNX, "vae_decoder": ONNX, "vae_encoder": ONNX}, d, "model_index.json")

def lcm(d):
    vocab = write_tokenizer(d)
    te, unet = TextEncoder(vocab).eval(), LcmUNet().eval()
    export(te, (torch.zeros(1, MAX_LEN, dtype=torch.int32),), f"{d}/text_encoder/model.onnx", ["input_ids"], ["last_hidden_state", "pooler_output"],
           {**TXT_AXES, "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}})
    export(unet, (torch.randn(1, LATENT_C, 8, 8), torch.tensor([999], dtype=torch.int64), torch.randn(1, MAX_LEN, HIDDEN), torch.randn(1, 8)), f"{d}/unet/model.onnx",
           ["sample", "timestep", "encoder_hidden_states", "timestep_cond"], ["out_sample"], {**UNET_AXES, "timestep": {0: "steps"}, "timestep_cond": {0: "batch_size"}})
    vae(d)
    dump({"_class_name": "UNet2DConditionModel", "in_channels": LATENT_C, "out_channels": LATENT_C, "sample_size": 8, "time_cond_proj_dim": 8,
          "block_out_channels": [16]}, d, "unet", "config.json")
    dump({"_class_name": "LCMScheduler", "_diffusers_version": "0.22.0.dev0", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
          "clip_sample": False, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995, "num_train_timesteps": 1000, "original_inference_steps": 50,
          "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "sample_max_value": 1.0, "set_alpha_to_one": True, "steps_offset": 1,
          "thresholding": False, "timestep_scaling": 10.0, "timestep_spacing": "leading", "trained_betas": None}, d, "scheduler", "scheduler_config.json")
    dump({"_class_name": "OnnxStableDiffusionPipeline", "_diffusers_version": "0.22.0.dev0", "requires_safety_checker": False,
          "scheduler": ["diffusers", "LCMScheduler"], "text_encoder": ONNX, "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ONNX, "vae_decoder": ONNX, "vae_encoder": ONNX}, d, "model_index.json")

def inpaint(d):
    vocab = write_tokenizer(d)
    te, unet = TextEncoder(vocab).eval(), InpaintUNet().eval()
    export(te, (torch.zeros(1, MAX_LEN, dtype=torch.int32),), f"{d}/text_encoder/model.onnx", ["input_ids"], ["last_hidden_state", "pooler_output"],
           {**TXT_AXES, "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}})
    export(unet, (torch.randn(2, 2 * LATENT_C + 1, 8, 8), torch.randn(2), torch.randn(2, MAX_LEN, HIDDEN)), f"{d}/unet/model.onnx",
           ["sample", "timestep", "encoder_hidden_states"], ["out_sample"], {**UNET_AXES, "timestep": {0: "batch_size"}})
    vae(d)
    dump({"_class_name": "UNet2DConditionModel", "in_channels": 2 * LATENT_C + 1, "out_channels": LATENT_C, "sample_size": 8, "block_out_channels": [16]}, d, "unet", "config.json")
    dump({"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD_SCHED}, d, "scheduler", "scheduler_config.json")
    dump({"_class_name": "OnnxStableDiffusionInpaintPipeline", "_diffusers_version": "0.6.0", "requires_safety_checker": False,
          "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ONNX, "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ONNX, "vae_decoder": ONNX, "vae_encoder": ONNX}, d, "model_index.json")

def external(d, src):
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("manifest.sha256.json"))
    m = onnx.load(f"{d}/unet/model.onnx")
    onnx.save_model(m, f"{d}/unet/model.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=0)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    out = ap.parse_args().out.rstrip("/")
    for name, make in [("tiny-sdxl", sdxl), ("tiny-sd-turbo", turbo), ("tiny-lcm", lcm), ("tiny-sd-inpaint", inpaint)]:
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        torch.manual_seed(0)
        with torch.no_grad():
            make(d)
    d = os.path.join(out, "tiny-sd-external")
    shutil.rmtree(d, ignore_errors=True)
    external(d, os.path.join(out, "tiny-sd"))
    for name in ("tiny-sdxl", "tiny-sd-turbo", "tiny-lcm", "tiny-sd-inpaint", "tiny-sd-external"):
        d = os.path.join(out, name)
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"wrote {d} ({total / 1024:.0f} KB)")

if __name__ == "__main__":
    main()
