"""Train, export and measure the default FashionWorld bundle (bundle.md).

    PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.train_default \\
        --data data/fashionworld --out models/default [--seed 0] [--work data/train-work]

Stages (each checkpointed in --work, so a rerun resumes): tokenizer, clip, vae, unet,
export, evaluate. ``--stages`` runs a subset. Budgets are in minutes of wall time: each
stage measures its speed on its first steps and fixes its step count from the budget.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctok_py.wrappers import (ImageEncoderWrapper, TextEncoderWrapper, UNetWrapper,
                              VaeDecoderWrapper, VaeEncoderWrapper, load_safetensors,
                              save_safetensors)

CONTEXT_LENGTH = 16
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
IMAGE_SIZE = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8
BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS = 0.00085, 0.012, 1000

CATEGORIES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt",
              "sneaker", "bag", "ankle boot"]
PARENTS = {"t-shirt": "top", "trousers": "trousers", "pullover": "top", "dress": "dress",
           "coat": "top", "sandal": "shoe", "shirt": "top", "sneaker": "shoe", "bag": "bag",
           "ankle boot": "shoe"}
COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey",
           "black"]
PATTERNS = ["plain", "striped", "dotted", "checked"]
PATTERN_NOUNS = ["", "stripes", "dots", "checks"]
DEFAULT_HIDDEN = ["sneaker", "shirt"]
# Prompt prefixes seen in training, so the templates other tools use are in distribution.
PREFIXES = ["a photo of a", "a photo of a", "a photo of a", "a photo of the", "the photo of a",
            "a close-up photo of a", "a cropped photo of a", "a good photo of a",
            "a bright photo of a", "a dark photo of a", "a rendering of a", "a photo of my",
            "a photo of one", "a picture of a", "an image of a", "a"]
GENERIC_NOUN = "garment"  # matches any item: "a photo of a red garment"
EXTRA_WORDS = ["a", "an", "the", "photo", "of", "in", "close-up", "cropped", "good", "bright",
               "dark", "rendering", "my", "one", "picture", "image", "with", "and", "on", "stripes",
               "dots", "checks",
               GENERIC_NOUN, "item", "clothing"]


# ---------------------------------------------------------------------------------------
# logging

class Log:
    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.t0 = time.time()

    def __call__(self, *args):
        msg = "[%7.1fs] " % (time.time() - self.t0) + " ".join(str(a) for a in args)
        print(msg, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(msg + "\n")


log = Log()


# ---------------------------------------------------------------------------------------
# models (all scriptable)

class Attention(nn.Module):
    """Multi-head attention; keys/values from ``context`` (cross) or from ``x`` (self)."""

    def __init__(self, width: int, heads: int, context_width: int = 0):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        kv_in = context_width if context_width > 0 else width
        self.kv = nn.Linear(kv_in, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        b, n, w = x.shape
        src = x if context is None else context
        m = src.shape[1]
        d = w // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).transpose(1, 2)
        kv = self.kv(src).reshape(b, m, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(d))
        if mask is not None:
            att = att + mask
        att = att.softmax(dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(b, n, w)
        return self.out(o)


class TextBlock(nn.Module):
    """Pre-LN transformer block with the common block call ``(x, mask) -> x``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x), None, mask)
        return x + self.mlp(self.ln2(x))


def make_text_encoder(vocab_size: int, width: int = 128, layers: int = 4, heads: int = 4,
                      feature_dim: int = 128, context_length: int = CONTEXT_LENGTH
                      ) -> TextEncoderWrapper:
    """The default text encoder: the shared wrapper with trainable tables."""
    tok = torch.randn(vocab_size, width) * 0.02
    pos = torch.randn(context_length, width) * 0.01
    blocks = [TextBlock(width, heads) for _ in range(layers)]
    return TextEncoderWrapper(tok, pos, blocks, nn.LayerNorm(width),
                              nn.Linear(width, feature_dim, bias=False), trainable=True)


def export_text_encoder(model: TextEncoderWrapper) -> TextEncoderWrapper:
    """Same wrapper, tables as buffers, modules shared; for torch.jit.script."""
    return TextEncoderWrapper(model.token_embedding.data, model.position_embedding.data,
                              list(model.blocks), model.final_ln, model.projection,
                              trainable=False).eval()


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ConvBackbone(nn.Module):
    """32x32 -> pooled [B, C]."""

    def __init__(self, widths: Tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        c0, c1, c2, c3 = widths
        self.net = nn.Sequential(
            conv_bn(3, c0), conv_bn(c0, c0, 2),       # 16
            conv_bn(c0, c1), conv_bn(c1, c1, 2),      # 8
            conv_bn(c1, c2), conv_bn(c2, c2, 2),      # 4
            conv_bn(c2, c3))
        self.out_dim = c3

    def forward(self, x: Tensor) -> Tensor:
        h = self.net(x)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)


def make_image_encoder(feature_dim: int = 128, widths=(32, 64, 128, 256)) -> ImageEncoderWrapper:
    bb = ConvBackbone(tuple(widths))
    proj = nn.Sequential(nn.Linear(2 * bb.out_dim, 2 * bb.out_dim), nn.ReLU(),
                         nn.Linear(2 * bb.out_dim, feature_dim))
    return ImageEncoderWrapper(bb, proj)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int = 0, groups: int = 8):
        super().__init__()
        self.n1 = nn.GroupNorm(math.gcd(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.n2 = nn.GroupNorm(math.gcd(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.t = nn.Linear(temb, cout) if temb > 0 else nn.Identity()
        self.use_t = temb > 0
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, t: Optional[Tensor] = None) -> Tensor:
        h = self.c1(F.silu(self.n1(x)))
        if self.use_t and t is not None:
            h = h + self.t(t)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class VaeEncoder(nn.Module):
    """32x32x3 -> posterior mean 8x8xC (the variance head is used in training only)."""

    def __init__(self, ch: int = 32, zc: int = LATENT_CHANNELS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ch, 3, 1, 1), ResBlock(ch, ch),
            nn.Conv2d(ch, 2 * ch, 3, 2, 1), ResBlock(2 * ch, 2 * ch),            # 16
            nn.Conv2d(2 * ch, 4 * ch, 3, 2, 1), ResBlock(4 * ch, 4 * ch),        # 8
            ResBlock(4 * ch, 4 * ch), nn.GroupNorm(math.gcd(8, 4 * ch), 4 * ch), nn.SiLU())
        self.mean = nn.Conv2d(4 * ch, zc, 3, 1, 1)
        self.logvar = nn.Conv2d(4 * ch, zc, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.mean(self.net(x))

    def posterior(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.net(x)
        return self.mean(h), self.logvar(h).clamp(-20.0, 5.0)


class VaeDecoder(nn.Module):
    def __init__(self, ch: int = 32, zc: int = LATENT_CHANNELS):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(zc, 4 * ch, 3, 1, 1), ResBlock(4 * ch, 4 * ch), ResBlock(4 * ch, 4 * ch),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(4 * ch, 2 * ch, 3, 1, 1),
            ResBlock(2 * ch, 2 * ch),
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(2 * ch, ch, 3, 1, 1),
            ResBlock(ch, ch), nn.GroupNorm(math.gcd(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class SpatialTransformer(nn.Module):
    """Self-attention, cross-attention on the text hidden states, feed-forward."""

    def __init__(self, ch: int, context_width: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(8, ch), ch)
        self.ln1 = nn.LayerNorm(ch)
        self.self_attn = Attention(ch, heads)
        self.ln2 = nn.LayerNorm(ch)
        self.cross = Attention(ch, heads, context_width)
        self.ln3 = nn.LayerNorm(ch)
        self.ff = nn.Sequential(nn.Linear(ch, 2 * ch), nn.GELU(), nn.Linear(2 * ch, ch))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        t = t + self.self_attn(self.ln1(t), None, None)
        t = t + self.cross(self.ln2(t), context, None)
        t = t + self.ff(self.ln3(t))
        return x + t.transpose(1, 2).reshape(b, c, h, w)


class LatentUNet(nn.Module):
    """Small UNet on 8x8 latents, one down/up level, cross-attention in every block."""

    def __init__(self, zc: int = LATENT_CHANNELS, ch: Tuple[int, int] = (64, 128),
                 context_width: int = 128, temb: int = 256):
        super().__init__()
        c1, c2 = ch
        self.temb_dim = temb
        self.time = nn.Sequential(nn.Linear(c1, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.freq_dim = c1
        self.conv_in = nn.Conv2d(zc, c1, 3, 1, 1)
        self.d1 = ResBlock(c1, c1, temb)
        self.a1 = SpatialTransformer(c1, context_width)
        self.down = nn.Conv2d(c1, c1, 3, 2, 1)
        self.d2 = ResBlock(c1, c2, temb)
        self.a2 = SpatialTransformer(c2, context_width)
        self.m = ResBlock(c2, c2, temb)
        self.am = SpatialTransformer(c2, context_width)
        self.u2 = ResBlock(2 * c2, c2, temb)
        self.au2 = SpatialTransformer(c2, context_width)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.up_conv = nn.Conv2d(c2, c1, 3, 1, 1)
        self.u1 = ResBlock(2 * c1, c1, temb)
        self.au1 = SpatialTransformer(c1, context_width)
        self.out_norm = nn.GroupNorm(math.gcd(8, c1), c1)
        self.conv_out = nn.Conv2d(c1, zc, 3, 1, 1)

    def timestep_embedding(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device,
                                                             dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)

    def forward(self, sample: Tensor, timestep: Tensor, context: Tensor) -> Tensor:
        temb = self.time(self.timestep_embedding(timestep).to(sample.dtype))
        h0 = self.conv_in(sample)
        h1 = self.a1(self.d1(h0, temb), context)
        h = self.down(h1)
        h2 = self.a2(self.d2(h, temb), context)
        h = self.am(self.m(h2, temb), context)
        h = self.au2(self.u2(torch.cat([h, h2], dim=1), temb), context)
        h = self.up_conv(self.up(h))
        h = self.au1(self.u1(torch.cat([h, h1], dim=1), temb), context)
        return self.conv_out(F.silu(self.out_norm(h)))


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------------
# diffusion schedule and DDIM

def alphas_cumprod(beta_start: float = BETA_START, beta_end: float = BETA_END,
                   n: int = NUM_TRAIN_TIMESTEPS) -> Tensor:
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@torch.no_grad()
def ddim_sample(unet, cond: Tensor, uncond: Tensor, steps: int = 50, guidance: float = 4.0,
                generator: Optional[torch.Generator] = None, eta: float = 0.0,
                shape: Tuple[int, int, int] = (LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
                ) -> Tensor:
    """DDIM with classifier-free guidance; timesteps 'leading' spaced like diffusers."""
    ac = alphas_cumprod()
    b = cond.shape[0]
    x = torch.randn((b,) + tuple(shape), generator=generator)
    ratio = NUM_TRAIN_TIMESTEPS // steps
    ts = list(range(0, NUM_TRAIN_TIMESTEPS, ratio))[:steps][::-1]
    ctx = torch.cat([uncond.expand(b, -1, -1), cond], dim=0)
    for t in ts:
        tt = torch.full((2 * b,), t, dtype=torch.long)
        eps_u, eps_c = unet(torch.cat([x, x], 0), tt, ctx).chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        a_t = ac[t]
        a_prev = ac[t - ratio] if t - ratio >= 0 else torch.tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        dir_xt = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        x = a_prev.sqrt() * x0 + dir_xt
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator)
    return x


# ---------------------------------------------------------------------------------------
# tokenizer

def train_tokenizer(sentences: List[str], words: List[str], out_path: str) -> None:
    """SentencePiece unigram model in which every given word is one piece (``▁word``)."""
    import io

    import sentencepiece as spm
    symbols = []
    for w in words:
        for part in w.split():
            p = "\u2581" + part
            if p not in symbols:
                symbols.append(p)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789-'"
    corpus = list(sentences) + [" ".join(chars)] * 4
    buf = io.BytesIO()
    kwargs = dict(sentence_iterator=iter(corpus), model_writer=buf, model_type="unigram",
                  vocab_size=len(symbols) + 4 + len(chars) + 8, hard_vocab_limit=False,
                  pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
                  user_defined_symbols=symbols, character_coverage=1.0,
                  required_chars=chars, num_threads=1, minloglevel=2,
                  normalization_rule_name="identity")  # no 240 KB NFKC table
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except (TypeError, RuntimeError, ValueError):
        kwargs.pop("minloglevel")
        spm.SentencePieceTrainer.train(**kwargs)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, out_path)


class Tokenizer:
    def __init__(self, path: str, context_length: int = CONTEXT_LENGTH):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.context_length = context_length
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, texts: List[str]) -> Tuple[Tensor, Tensor]:
        """-> ids [B, L] (bos, pieces, eos, pad...), eos_index [B]."""
        ids = torch.full((len(texts), self.context_length), PAD_ID, dtype=torch.long)
        eos = torch.zeros(len(texts), dtype=torch.long)
        for i, t in enumerate(texts):
            p = self.sp.encode(t)[: self.context_length - 2] if t else []
            seq = [BOS_ID] + p + [EOS_ID]
            ids[i, : len(seq)] = torch.tensor(seq)
            eos[i] = len(seq) - 1
        return ids, eos


def encode_text(text_model: TextEncoderWrapper, ids: Tensor, eos: Tensor) -> Tuple[Tensor, Tensor]:
    return text_model(text_model.token_embedding[ids], eos)


# ---------------------------------------------------------------------------------------
# images

def preprocess_pil(img, size: int = IMAGE_SIZE) -> np.ndarray:
    """CLIP preprocessing: PIL bicubic shorter side to ``size`` (long side int(size*l/s)),
    centre crop (offset round((L - size) / 2)). Returns uint8 [size, size, 3]."""
    from PIL import Image
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left = int(round((nw - size) / 2.0))
    top = int(round((nh - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def to_pixels(u8: Tensor) -> Tensor:
    """uint8 [B,H,W,3] -> float [B,3,H,W] normalised with mean/std 0.5 (= [-1,1])."""
    return u8.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def augment(x: Tensor, gen: torch.Generator, strength: float = 1.0) -> Tensor:
    """Random scale/shift (affine resample), flip, brightness/contrast on [-1,1] batches."""
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)
    scale = 1.0 - 0.3 * strength * u(b) + 0.1 * strength * u(b)   # zoom in/out
    tx = (u(b) - 0.5) * 0.3 * strength
    ty = (u(b) - 0.5) * 0.3 * strength
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    bright = (u(b, 1, 1, 1) - 0.5) * 0.3 * strength
    contrast = 1.0 + (u(b, 1, 1, 1) - 0.5) * 0.3 * strength
    return ((x - x.mean(dim=(1, 2, 3), keepdim=True)) * contrast
            + x.mean(dim=(1, 2, 3), keepdim=True) + bright).clamp(-1, 1)


# ---------------------------------------------------------------------------------------
# data

def _read_split(root: str, split: str) -> Tuple[list, list]:
    """-> (images: [{file, source, pair_id, items: {name: anno}}], captions)."""
    sd = os.path.join(root, split)
    annos = sorted(os.listdir(os.path.join(sd, "annos")))
    images = []
    for a in annos:
        with open(os.path.join(sd, "annos", a)) as f:
            d = json.load(f)
        items = {k: v for k, v in d.items() if k.startswith("item")}
        images.append({"file": a[:-5] + ".jpg", "source": d.get("source", ""),
                       "pair_id": d.get("pair_id", -1), "items": items})
    caps = []
    with open(os.path.join(sd, "captions.jsonl")) as f:
        for line in f:
            if line.strip():
                caps.append(json.loads(line))
    return images, caps


def build_cache(root: str, split: str, path: str) -> dict:
    """Preload a split at 32x32: full images and box crops of items with style > 0."""
    if os.path.exists(path):
        return torch.load(path)
    from PIL import Image
    images, caps = _read_split(root, split)
    index = {im["file"]: i for i, im in enumerate(images)}
    full = np.zeros((len(images), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    crops, crop_meta = [], []
    t0 = time.time()
    for i, im in enumerate(images):
        with Image.open(os.path.join(root, split, "image", im["file"])) as pil:
            pil = pil.convert("RGB")
            full[i] = preprocess_pil(pil)
            for name, it in sorted(im["items"].items()):
                if int(it.get("style", 0)) <= 0:
                    continue
                x1, y1, x2, y2 = [int(round(v)) for v in it["bounding_box"]]
                x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
                crops.append(preprocess_pil(pil.crop((x1, y1, x2, y2))))
                crop_meta.append((i, name))
        if i % 10000 == 0:
            log(f"cache {split}: {i}/{len(images)} images, {time.time() - t0:.0f}s")
    crop_index = {m: j for j, m in enumerate(crop_meta)}
    cat_id = {c: k for k, c in enumerate(CATEGORIES)}

    def attrs(it):
        return (cat_id[it["category_name"]], COLOURS.index(it["color"]),
                PATTERNS.index(it["pattern"]))

    crop_attr = np.array([attrs(images[i]["items"][n]) for i, n in crop_meta], np.int64)
    crop_src = np.array([images[i]["source"] == "shop" for i, _ in crop_meta], np.bool_)
    crop_img = np.array([i for i, _ in crop_meta], np.int64)
    cap_full, cap_crop, cap_text, cap_attr = [], [], [], []
    for c in caps:
        i = index[c["image"]]
        it = images[i]["items"][c["item"]]
        cap_full.append(i if c["item"] == "item1" or len(images[i]["items"]) == 1 else -1)
        cap_crop.append(crop_index.get((i, c["item"]), -1))
        cap_text.append(c["caption"])
        cap_attr.append(attrs(it))
    cache = {"full": torch.from_numpy(full), "crops": torch.from_numpy(np.stack(crops)),
             "crop_attr": torch.from_numpy(crop_attr), "crop_shop": torch.from_numpy(crop_src),
             "crop_img": torch.from_numpy(crop_img),
             "cap_full": torch.tensor(cap_full), "cap_crop": torch.tensor(cap_crop),
             "cap_text": cap_text, "cap_attr": torch.tensor(cap_attr)}
    torch.save(cache, path + ".tmp")
    os.replace(path + ".tmp", path)
    log(f"cache {split}: {len(images)} images, {len(crops)} crops, {len(caps)} captions, "
        f"{time.time() - t0:.0f}s")
    return cache


class CaptionSpace:
    """Synthesises captions from attributes and decides which caption fits which item.

    A caption is described by (noun, colour, pattern): noun = a category index (0..9),
    a parent word (100 + parent index) or -1 (generic noun); colour/pattern -1 = unsaid.
    """

    def __init__(self, hidden: List[str]):
        self.hidden = set(hidden)
        self.parents = sorted(set(PARENTS.values()))
        self.parent_of = torch.tensor([self.parents.index(PARENTS[c]) for c in CATEGORIES])

    def noun_word(self, noun: int) -> str:
        if noun < 0:
            return GENERIC_NOUN
        if noun >= 100:
            return self.parents[noun - 100]
        return CATEGORIES[noun]

    def parse(self, caption: str) -> Tuple[int, int, int]:
        words = caption.lower().replace(",", " ").split()
        text = " " + " ".join(words) + " "
        noun = -1
        for k, c in enumerate(CATEGORIES):
            if " " + c + " " in text:
                noun = k
        if noun < 0:
            for k, p in enumerate(self.parents):
                if " " + p + " " in text:
                    noun = 100 + k
        colour = next((k for k, c in enumerate(COLOURS) if c in words), -1)
        pattern = next((k for k, p in enumerate(PATTERNS) if p in words), -1)
        if pattern < 0:
            pattern = next((k for k, p in enumerate(PATTERN_NOUNS) if p and p in words), -1)
        return noun, colour, pattern

    def synth(self, attr: Tuple[int, int, int], rng: random.Random) -> Tuple[str, Tuple[int, int, int]]:
        cat, col, pat = attr
        cname = CATEGORIES[cat]
        r = rng.random()
        if cname in self.hidden or r < 0.3:
            noun = 100 + self.parents.index(PARENTS[cname])
        elif r < 0.93:
            noun = cat
        else:
            noun = -1
        say_col = rng.random() < 0.6
        say_pat = rng.random() < 0.5
        n = self.noun_word(noun)
        c = COLOURS[col] if say_col else None
        p = PATTERNS[pat] if say_pat else None
        form = rng.random()
        adj = " ".join(x for x in (c, p) if x)
        if c and form < 0.3:
            body = (p + " " if p else "") + n + " in " + c
        elif p and pat > 0 and form < 0.5:
            body = ((c + " ") if c else "") + n + " with " + PATTERN_NOUNS[pat]
        else:
            body = (adj + " " if adj else "") + n
        pre = rng.choice(PREFIXES)
        if pre.endswith(" a") and body[0] in "aeiou" and rng.random() < 0.5:
            pre = pre[:-1] + "an"
        return pre + " " + body, (noun, col if say_col else -1, pat if say_pat else -1)

    def match(self, cap: Tensor, item: Tensor) -> Tensor:
        """cap [C,3] (noun, colour, pattern), item [I,3] (cat, colour, pattern) -> [I,C] bool."""
        noun, col, pat = cap[:, 0][None], cap[:, 1][None], cap[:, 2][None]
        cat, icol, ipat = item[:, 0][:, None], item[:, 1][:, None], item[:, 2][:, None]
        iparent = self.parent_of[item[:, 0]][:, None] + 100
        ok_noun = (noun < 0) | (noun == cat) | (noun == iparent)
        return ok_noun & ((col < 0) | (col == icol)) & ((pat < 0) | (pat == ipat))


# ---------------------------------------------------------------------------------------
# checkpoints

def save_ckpt(path: str, obj: dict) -> None:
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def timed_training(name: str, work: str, budget_min: float, step_fn, state: dict,
                   modules: Dict[str, nn.Module], opt, base_lr: float, max_steps: int = 0,
                   ckpt_every_s: float = 120.0, log_every: int = 50) -> dict:
    """Runs ``step_fn(step) -> loss`` with a cosine schedule; total steps fixed from the
    speed of the first steps and the budget; checkpoints to work/<name>.ckpt."""
    ck = os.path.join(work, name + ".ckpt")
    if os.path.exists(ck):
        saved = torch.load(ck)
        for k, m in modules.items():
            m.load_state_dict(saved["modules"][k])
        opt.load_state_dict(saved["opt"])
        state.update(saved["state"])
        torch.set_rng_state(saved["rng"])
        log(f"{name}: resumed at step {state['step']}/{state.get('total')}")
    state.setdefault("step", 0)
    state.setdefault("seconds", 0.0)
    state.setdefault("losses", [])
    last_ck = time.time()
    t_start = time.time()
    s0 = state["seconds"]
    run_loss = None
    calib = 30
    while True:
        step = state["step"]
        total = state.get("total")
        if total is not None and step >= total:
            break
        if total is None and step == calib:
            rate = step / max(1e-6, state["seconds"])
            total = int(rate * budget_min * 60)
            if max_steps:
                total = min(total, max_steps)
            total = max(total, calib + 1)
            state["total"] = total
            log(f"{name}: {rate:.2f} steps/s -> {total} steps for {budget_min} min")
        lr = cosine_lr(step, total or 10 ** 9, base_lr, warmup=min(200, (total or 2000) // 10))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step_fn(step)
        run_loss = loss if run_loss is None else 0.98 * run_loss + 0.02 * loss
        state["step"] = step + 1
        state["seconds"] = s0 + time.time() - t_start
        if step % log_every == 0:
            state["losses"].append((step, run_loss))
            log(f"{name} step {step}/{total} loss {loss:.4f} (avg {run_loss:.4f}) lr {lr:.2e}")
        if time.time() - last_ck > ckpt_every_s:
            save_ckpt(ck, {"modules": {k: m.state_dict() for k, m in modules.items()},
                           "opt": opt.state_dict(), "state": state, "rng": torch.get_rng_state()})
            last_ck = time.time()
    state["final_loss"] = run_loss
    save_ckpt(ck, {"modules": {k: m.state_dict() for k, m in modules.items()},
                   "opt": opt.state_dict(), "state": state, "rng": torch.get_rng_state()})
    return state


# ---------------------------------------------------------------------------------------
# export (shared with make_fixture_bundle.py)

def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    """Script the models, write TorchScript files, tokenizer, reference and bundle.json."""
    import shutil
    os.makedirs(out, exist_ok=True)
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
    for f in sorted(list(files) + ["tokenizer.model", "reference.safetensors"]):
        manifest["sha256"][f] = sha256_file(os.path.join(out, f))
    with open(os.path.join(out, "bundle.json.tmp"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(out, "bundle.json.tmp"), os.path.join(out, "bundle.json"))
    return manifest
