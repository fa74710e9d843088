"""Exporting the default models as a bundle (bundle.md) through ctok_py.bundle_writer."""
from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, List, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ctok_py import bundle_writer
from ctok_py.ddim import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS
from ctok_py.default_models.common import (BOS_ID, CONTEXT_LENGTH, EOS_ID, IMAGE_SIZE,
                                           LATENT_CHANNELS, LATENT_SIZE, PAD_ID, log)
from ctok_py.default_models.data import Tokenizer, preprocess_pil, to_pixels
from ctok_py.default_models.nets import export_text_encoder
from ctok_py.wrappers import (TextEncoderWrapper, UNetWrapper, VaeDecoderWrapper, VaeEncoderWrapper,
                              save_safetensors)

if TYPE_CHECKING:
    from ctok_py.default_models.training import Ctx


def make_reference(text_ts, image_ts, unet_ts, vae_enc_ts, vae_dec_ts, tok: Tokenizer,
                   prompts: List[str], pixels_u8: Tensor, vae_u8: Tensor, raw_u8: np.ndarray,
                   seed: int = 1234) -> Tuple[dict, dict]:
    """Fixed inputs and the TorchScript modules' outputs for them (bundle.md)."""
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    ids, eos = tok.encode(prompts)
    embeds = text_ts.token_embedding[ids]
    with torch.no_grad():
        hidden, feats = text_ts(embeds, eos)
        pixels = to_pixels(pixels_u8)
        img_feats = image_ts(pixels)
        b = 2
        sample = torch.randn(b, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE, generator=g)
        timestep = torch.tensor([10, 500], dtype=torch.long)
        context = hidden[:b].clone()
        unet_out = unet_ts(sample, timestep, context)
        vimg = to_pixels(vae_u8)
        lat = vae_enc_ts(vimg)
        dec = vae_dec_ts(lat)
    raw = np.ascontiguousarray(raw_u8)
    pp = preprocess_pil(Image.fromarray(raw))
    pp_pixels = to_pixels(torch.from_numpy(np.array(pp))[None])[0]
    tensors = {"text.input_ids": ids, "text.eos_index": eos, "text.embeds": embeds,
               "text.hidden": hidden, "text.features": feats,
               "image.pixels": pixels, "image.features": img_feats,
               "unet.sample": sample, "unet.timestep": timestep, "unet.context": context,
               "unet.out": unet_out,
               "vae.images": vimg, "vae.latents": lat, "vae.decoded": dec,
               "preprocess.raw": torch.from_numpy(raw), "preprocess.pixels": pp_pixels}
    meta = {"text.prompts": json.dumps(prompts),
            "note": "text.embeds = token_embedding[text.input_ids]; ids are bos, pieces, eos, "
                    "then pad to context_length; pooling at text.eos_index; unet.context = "
                    "text.hidden[:2]; vae.decoded = decoder(vae.latents); preprocess: PIL "
                    "bicubic shorter side to size (long side int(size*long/short)), centre crop "
                    "at round((long-size)/2), (x/255-mean)/std"}
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def write_bundle(out: str, name: str, text_model: TextEncoderWrapper, image_model: nn.Module,
                 unet: nn.Module, vae_enc: nn.Module, vae_dec: nn.Module, latent_scale: float,
                 logit_scale: float, tokenizer_path: str, prompts: List[str],
                 pixels_u8: Tensor, vae_u8: Tensor, raw_u8: np.ndarray, card: dict) -> dict:
    """Script the models, write TorchScript files, tokenizer, reference and bundle.json
    (atomically, through bundle_writer: ``out`` is the whole bundle or untouched)."""
    with bundle_writer.staged(out) as tmp:
        return _write_bundle_files(tmp, name, text_model, image_model, unet, vae_enc, vae_dec,
                                   latent_scale, logit_scale, tokenizer_path, prompts,
                                   pixels_u8, vae_u8, raw_u8, card)


def _write_bundle_files(out: str, name: str, text_model: TextEncoderWrapper,
                        image_model: nn.Module, unet: nn.Module, vae_enc: nn.Module,
                        vae_dec: nn.Module, latent_scale: float, logit_scale: float,
                        tokenizer_path: str, prompts: List[str], pixels_u8: Tensor,
                        vae_u8: Tensor, raw_u8: np.ndarray, card: dict) -> dict:
    text_w = export_text_encoder(text_model)
    image_w = image_model.eval()
    unet_w = UNetWrapper(unet).eval()
    enc_w = VaeEncoderWrapper(vae_enc, latent_scale).eval()
    dec_w = VaeDecoderWrapper(vae_dec, latent_scale).eval()
    files = {"text_encoder.pt": text_w, "image_encoder.pt": image_w, "unet.pt": unet_w,
             "vae_encoder.pt": enc_w, "vae_decoder.pt": dec_w}
    for fname, mod in files.items():
        mod = mod.cpu().float()
        for p in mod.parameters():
            p.requires_grad_(False)
        # Not frozen: frozen constants would not follow module.to(device, dtype) in C++.
        scripted = torch.jit.script(mod)
        scripted.save(os.path.join(out, fname))
    shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.model"))
    loaded = {k: torch.jit.load(os.path.join(out, k)) for k in files}
    tok = Tokenizer(os.path.join(out, "tokenizer.model"))
    tensors, meta = make_reference(loaded["text_encoder.pt"], loaded["image_encoder.pt"],
                                   loaded["unet.pt"], loaded["vae_encoder.pt"],
                                   loaded["vae_decoder.pt"], tok, prompts, pixels_u8, vae_u8,
                                   raw_u8)
    save_safetensors(os.path.join(out, "reference.safetensors"), tensors, meta)
    width = int(text_model.token_embedding.shape[1])
    feat_dim = int(tensors["text.features"].shape[1])
    manifest = {
        "format": "ctok-bundle", "version": 1, "name": name,
        "tokenizer": {"type": "sentencepiece", "file": "tokenizer.model"},
        "text": {"file": "text_encoder.pt", "context_length": CONTEXT_LENGTH, "width": width,
                 "feature_dim": feat_dim, "vocab_size": int(text_model.token_embedding.shape[0]),
                 "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID},
        "image": {"file": "image_encoder.pt", "size": IMAGE_SIZE, "resize": "bicubic",
                  "crop": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                  "feature_dim": int(tensors["image.features"].shape[1])},
        "logit_scale": float(logit_scale),
        "diffusion": {"unet": "unet.pt", "vae_encoder": "vae_encoder.pt",
                      "vae_decoder": "vae_decoder.pt", "image_size": IMAGE_SIZE,
                      "latent_channels": LATENT_CHANNELS, "latent_size": LATENT_SIZE,
                      "latent_scale": float(latent_scale),
                      "num_train_timesteps": NUM_TRAIN_TIMESTEPS,
                      "beta_schedule": "scaled_linear", "beta_start": BETA_START,
                      "beta_end": BETA_END, "prediction": "epsilon"},
        "reference": "reference.safetensors",
        "sha256": {},
        "card": card,
    }
    return bundle_writer.write_manifest(
        out, manifest, list(files) + ["tokenizer.model", "reference.safetensors"])


# ---------------------------------------------------------------------------------------
def stage_export(ctx: Ctx, results: dict) -> dict:
    a = ctx.args
    text, image, logit_scale = ctx.clip()
    enc, dec, latent_scale = ctx.vae()
    unet = ctx.unet()
    val = ctx.val
    # Reference inputs: fixed validation images.
    crops = val["crops"][torch.tensor([0, 1, 2])]
    fulls = val["full"][torch.tensor([0, 5])]
    from PIL import Image
    first = os.path.join(a.data, "validation", "image", sorted(
        os.listdir(os.path.join(a.data, "validation", "image")))[0])
    raw = np.asarray(Image.open(first).convert("RGB"))[8:56, 12:52].copy()  # 48x40
    prompts = ["a photo of a red striped dress", "", "an ankle boot in blue with dots"]
    card = {"source": "trained from scratch on the FashionWorld train split by "
                      "scripts/python/ctok_py/train_default.py",
            "seed": a.seed, "options": {k: v for k, v in vars(a).items() if k != "stages"},
            "training": {k: v for k, v in results.items() if k in
                         ("tokenizer", "clip", "clip2", "vae", "unet")},
            "metrics": results.get("evaluate", {}).get("metrics", {})}
    write_bundle(a.out, "fashionworld-default", text, image, unet, enc, dec, latent_scale,
                     logit_scale, ctx.path("tokenizer.model"), prompts, crops, fulls, raw, card)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    res = {"bytes": total, "files": {f: os.path.getsize(os.path.join(a.out, f))
                                     for f in sorted(os.listdir(a.out))}}
    log("export:", res)
    if total > 40 * 2 ** 20:
        raise RuntimeError(f"bundle is {total} bytes, over 40 MB")
    return res
