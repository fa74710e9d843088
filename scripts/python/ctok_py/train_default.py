"""Train, export and measure the default FashionWorld bundle (bundle.md).

    PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.train_default \\
        --data data/fashionworld --out models/default [--seed 0] [--work data/train-work]

Stages (each checkpointed in --work, so a rerun resumes): tokenizer, clip, vae, unet,
clip2, export, evaluate. ``--stages`` runs a subset; stages may run in parallel processes
on one --work (clip beside vae, unet beside clip2). Budgets are minutes of wall time: the
learning rate follows warm-up + cosine over the budget. ``--device cuda`` trains on a GPU
(scripts/train_default_gpu.sh); export must run under the torch the C++ side links.
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
                              save_safetensors, torch_load_cpu as tload)

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

# The device the training stages run on (--device). Caches, checkpoints and the exported
# bundle always live on the CPU; stages move what they use.
DEV = torch.device("cpu")


def model_device(m) -> torch.device:
    for p in m.parameters():
        return p.device
    return torch.device("cpu")


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

    def __init__(self, widths: Tuple[int, ...] = (24, 48, 96, 192)):
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


def make_image_encoder(feature_dim: int = 128, widths=(24, 48, 96, 192)) -> ImageEncoderWrapper:
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

    def __init__(self, ch: int = 16, zc: int = LATENT_CHANNELS):
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
    def __init__(self, ch: int = 16, zc: int = LATENT_CHANNELS):
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

    def __init__(self, zc: int = LATENT_CHANNELS, ch: Tuple[int, int] = (40, 80),
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
    u = lambda *s: torch.rand(*s, generator=gen).to(x.device)
    scale = 1.0 - 0.3 * strength * u(b) + 0.1 * strength * u(b)   # zoom in/out
    tx = (u(b) - 0.5) * 0.3 * strength
    ty = (u(b) - 0.5) * 0.3 * strength
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
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
        return tload(path)
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
    """Runs ``step_fn(step) -> loss`` for ``budget_min`` minutes of (resumable) wall time.

    The machine is shared, so the schedule follows time, not steps: the learning rate is a
    warm-up then cosine in the fraction of the budget spent; checkpoints to
    work/<name>.ckpt every ``ckpt_every_s``.
    """
    ck = os.path.join(work, name + ".ckpt")
    if os.path.exists(ck):
        saved = tload(ck)
        for k, m in modules.items():
            m.load_state_dict(saved["modules"][k])
        opt.load_state_dict(saved["opt"])
        state.update(saved["state"])
        torch.set_rng_state(saved["rng"])
        log(f"{name}: resumed at step {state['step']}, {state['seconds']:.0f}s spent")
    state.setdefault("step", 0)
    state.setdefault("seconds", 0.0)
    state.setdefault("losses", [])
    budget = budget_min * 60.0
    last_ck = time.time()
    t_start = time.time()
    s0 = state["seconds"]
    run_loss = state.get("run_loss")
    while state["seconds"] < budget and not (max_steps and state["step"] >= max_steps):
        step = state["step"]
        p = state["seconds"] / budget
        warm = 0.05
        if p < warm:
            lr = base_lr * max(0.02, p / warm)
        else:
            q = (p - warm) / (1 - warm)
            lr = base_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * q)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step_fn(step)
        run_loss = loss if run_loss is None else 0.98 * run_loss + 0.02 * loss
        state["run_loss"] = run_loss
        state["step"] = step + 1
        state["seconds"] = s0 + time.time() - t_start
        if step % log_every == 0:
            state["losses"].append((step, round(run_loss, 5)))
            log(f"{name} step {step} ({100 * p:.0f}% of {budget_min} min) loss {loss:.4f} "
                f"(avg {run_loss:.4f}) lr {lr:.2e} {step / max(1e-6, state['seconds']):.2f} steps/s")
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


# ---------------------------------------------------------------------------------------
# stages

class Ctx:
    """Shared state of a run: paths, options, lazily loaded caches and models."""

    def __init__(self, args):
        self.args = args
        self.work = args.work
        self._train = None
        self._val = None
        self.space = CaptionSpace(args.hidden)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    @property
    def train(self) -> dict:
        if self._train is None:
            self._train = build_cache(self.args.data, "train", self.path("cache_train.pt"))
        return self._train

    @property
    def val(self) -> dict:
        if self._val is None:
            self._val = build_cache(self.args.data, "validation", self.path("cache_val.pt"))
        return self._val

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.path("tokenizer.model"))

    def clip(self, base_only: bool = False) -> Tuple[TextEncoderWrapper, ImageEncoderWrapper, float]:
        tok = self.tokenizer()
        text = make_text_encoder(tok.vocab_size)
        image = make_image_encoder()
        d = tload(self.path("clip.pt"))
        text.load_state_dict(d["text"])
        image.load_state_dict(d["image"])
        scale = float(d["logit_scale"])
        if base_only or not os.path.exists(self.path("clip2.pt")):
            return text.eval(), image.eval(), scale
        d2 = tload(self.path("clip2.pt"))
        text.projection = make_text_head(text.token_embedding.shape[1], d2["feature_dim"])
        text.projection.load_state_dict(d2["head"])
        image.load_state_dict(d2["image"])
        return text.eval(), image.eval(), float(d2["logit_scale"])

    def vae(self) -> Tuple[VaeEncoder, VaeDecoder, float]:
        enc, dec = VaeEncoder(), VaeDecoder()
        d = tload(self.path("vae.pt"))
        enc.load_state_dict(d["enc"])
        dec.load_state_dict(d["dec"])
        return enc.eval(), dec.eval(), float(d["latent_scale"])

    def unet(self) -> LatentUNet:
        u = LatentUNet()
        u.load_state_dict(tload(self.path("unet.pt"))["unet"])
        return u.eval()


def stage_tokenizer(ctx: Ctx) -> dict:
    out = ctx.path("tokenizer.model")
    try:
        from ctok_py.fashionworld import CAPTION_WORDS
        words = list(CAPTION_WORDS)
    except ImportError:
        words = []
    words += CATEGORIES + list(PARENTS.values()) + COLOURS + PATTERNS + EXTRA_WORDS
    caps = ctx.train["cap_text"]
    rng = random.Random(ctx.args.seed)
    sample = rng.sample(caps, min(20000, len(caps)))
    train_tokenizer(sample, words, out)
    tok = Tokenizer(out)
    bad = [w for w in sorted(set(" ".join(words).split())) if len(tok.sp.encode(w)) != 1]
    if bad:
        raise RuntimeError(f"words not single pieces: {bad}")
    log(f"tokenizer: {tok.vocab_size} pieces; e.g. {tok.sp.encode(caps[0], out_type=str)}")
    return {"vocab_size": tok.vocab_size}


def _text_batch(tok: Tokenizer, texts: List[str], cache: dict) -> Tuple[Tensor, Tensor]:
    rows = []
    for t in texts:
        r = cache.get(t)
        if r is None:
            ids, eos = tok.encode([t])
            r = cache[t] = (ids[0], int(eos[0]))
        rows.append(r)
    ids = torch.stack([r[0] for r in rows])
    eos = torch.tensor([r[1] for r in rows])
    return ids, eos


def stage_clip(ctx: Ctx) -> dict:
    a = ctx.args
    tr = ctx.train
    tok = ctx.tokenizer()
    seed_all(a.seed)
    text = make_text_encoder(tok.vocab_size).to(DEV)
    image = make_image_encoder().to(DEV)
    scale = nn.Parameter(torch.tensor(math.log(10.0), device=DEV))
    log(f"clip: text {n_params(text)} params, image {n_params(image)} params")
    decay, no_decay = [], []
    for m in (text, image):
        for n, p in m.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay + [scale], "weight_decay": 0.0}],
                            lr=a.clip_lr, betas=(0.9, 0.98))
    caps = tr["cap_text"]
    parsed = torch.tensor([ctx.space.parse(c) for c in caps])
    cap_full, cap_crop, cap_attr = tr["cap_full"], tr["cap_crop"], tr["cap_attr"]
    usable = torch.nonzero((cap_full >= 0) | (cap_crop >= 0)).flatten()
    # Colour-grouped batches: every image of such a batch has one of two colours, so the
    # colour word cannot tell the captions apart and category and pattern must.
    by_colour = [usable[cap_attr[usable, 1] == c] for c in range(len(COLOURS))]
    full_d, crops_d = tr["full"].to(DEV), tr["crops"].to(DEV)
    gen = torch.Generator().manual_seed(a.seed + 1)
    rng = random.Random(a.seed + 2)
    tcache: dict = {}
    B = a.clip_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.text, self.image, self.scale = text, image, scale

    holder = Holder()

    def step_fn(step: int) -> float:
        text.train()
        image.train()
        idx = sample_batch(usable, by_colour, B, a.clip_colour_groups, gen)
        x = augment(to_pixels(image_batch(idx, cap_crop, cap_full, crops_d, full_d,
                                          a.crop_rate, gen)), gen)
        texts, desc = [], []
        for j in idx.tolist():
            if rng.random() < a.synth_rate:
                t, d = ctx.space.synth(tuple(cap_attr[j].tolist()), rng)
            else:
                t, d = caps[j], tuple(parsed[j].tolist())
            texts.append(t)
            desc.append(d)
        ids, eos = _text_batch(tok, texts, tcache)
        L = int(eos.max()) + 1  # causal: positions after the last eos change nothing pooled
        ids, eos = ids[:, :L].to(DEV), eos.to(DEV)
        _, tf = text(text.token_embedding[ids], eos)
        imf = image(x)
        tf = F.normalize(tf, dim=-1)
        imf = F.normalize(imf, dim=-1)
        loss = soft_clip_loss(imf, tf, scale, ctx.space.match(torch.tensor(desc), cap_attr[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(text.parameters()) + list(image.parameters()), 2.0)
        opt.step()
        return float(loss)

    st = timed_training("clip", ctx.work, a.clip_minutes, step_fn, {}, {"m": holder}, opt,
                        a.clip_lr, max_steps=a.max_steps)
    save_ckpt(ctx.path("clip.pt"), {"text": text.state_dict(), "image": image.state_dict(),
                                    "logit_scale": float(scale.exp().clamp(max=100.0))})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4),
           "logit_scale": round(float(scale.exp().clamp(max=100.0)), 3)}
    text.eval(), image.eval()
    res.update(quick_zero_shot(ctx, text, image, n=2000))
    log("clip:", res)
    return res


def sample_batch(usable: Tensor, by_colour: List[Tensor], b: int, grouped_rate: float,
                 gen: torch.Generator) -> Tensor:
    """Caption rows for one batch: uniform over ``usable``, or (with ``grouped_rate``) half
    from each of two random colours."""
    if grouped_rate <= 0 or float(torch.rand(1, generator=gen)) >= grouped_rate:
        return usable[torch.randint(len(usable), (b,), generator=gen)]
    cols = torch.randperm(len(by_colour), generator=gen)[:2].tolist()
    parts = []
    for k, c in enumerate(cols):
        pool = by_colour[c]
        n = b // 2 if k == 0 else b - b // 2
        parts.append(pool[torch.randint(len(pool), (n,), generator=gen)])
    return torch.cat(parts)


def image_batch(idx: Tensor, cap_crop: Tensor, cap_full: Tensor, crops: Tensor, full: Tensor,
                crop_rate: float, gen: torch.Generator) -> Tensor:
    """uint8 images of caption rows ``idx``: the item's box crop (rate ``crop_rate``, or
    when the caption has no whole image) else the whole image; on ``crops``' device."""
    dev = crops.device
    use_crop = torch.rand(len(idx), generator=gen) < crop_rate
    use_crop = (use_crop & (cap_crop[idx] >= 0)) | (cap_full[idx] < 0)
    return torch.where(use_crop[:, None, None, None].to(dev),
                       crops[cap_crop[idx].clamp(min=0).to(dev)],
                       full[cap_full[idx].clamp(min=0).to(dev)])


def soft_clip_loss(imf: Tensor, tf: Tensor, log_scale: Tensor, match: Tensor) -> Tensor:
    """Symmetric contrastive loss with soft targets: ``match`` [image, caption] marks every
    caption that fits an image (repeated captions are not negatives)."""
    logits = log_scale.exp().clamp(max=100.0) * imf @ tf.t()
    match = match.float().to(logits.device)
    t_i = match / match.sum(1, keepdim=True)
    t_t = match.t() / match.t().sum(1, keepdim=True)
    return 0.5 * (-(t_i * logits.log_softmax(1)).sum(1).mean()
                  - (t_t * logits.t().log_softmax(1)).sum(1).mean())


def make_text_head(width: int, feature_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, feature_dim))


def stage_clip2(ctx: Ctx) -> dict:
    """Second CLIP phase with the text transformer frozen: a new MLP projection head on the
    pooled hidden state, and the image encoder, keep training contrastively.

    The text hidden states (the UNet's conditioning) stay exactly those of the first phase,
    so this can run while the UNet trains; and with the transformer frozen, every caption's
    pooled state is computed once, which makes a step about twice as cheap.
    """
    a = ctx.args
    tr = ctx.train
    tok = ctx.tokenizer()
    text, image, scale0 = ctx.clip(base_only=True)
    text.requires_grad_(False)
    text.to(DEV)
    image.to(DEV)
    seed_all(a.seed + 30)
    width = int(text.token_embedding.shape[1])
    head = make_text_head(width, 128).to(DEV)
    scale = nn.Parameter(torch.tensor(math.log(max(scale0, 10.0)), device=DEV))
    rng = random.Random(a.seed + 31)
    caps = tr["cap_text"]
    uniq = sorted(set(caps))
    cap_row = {c: i for i, c in enumerate(uniq)}
    parsed_u = [ctx.space.parse(c) for c in uniq]
    # synthesised captions: 24 per (category, colour, pattern)
    per = 24
    synth, synth_desc = [], []
    for cat in range(len(CATEGORIES)):
        for col in range(len(COLOURS)):
            for pat in range(len(PATTERNS)):
                for _ in range(per):
                    t, d = ctx.space.synth((cat, col, pat), rng)
                    synth.append(t)
                    synth_desc.append(d)
    texts = uniq + synth
    desc_all = torch.tensor(parsed_u + synth_desc)
    t0 = time.time()
    pooled = []
    with torch.no_grad():
        for i in range(0, len(texts), 512):
            ids, eos = tok.encode(texts[i:i + 512])
            ids, eos = ids.to(DEV), eos.to(DEV)
            h, _ = text(text.token_embedding[ids], eos)
            pooled.append(h[torch.arange(len(eos), device=DEV), eos])
    pooled = torch.cat(pooled)
    log(f"clip2: {len(texts)} captions pooled in {time.time() - t0:.0f}s")
    cap_rows = torch.tensor([cap_row[c] for c in caps])
    opt = torch.optim.AdamW([{"params": list(head.parameters()), "lr": a.clip_lr},
                             {"params": list(image.parameters()), "lr": a.clip_lr},
                             {"params": [scale], "lr": a.clip_lr, "weight_decay": 0.0}],
                            lr=a.clip_lr, weight_decay=0.01)
    cap_full, cap_crop, cap_attr = tr["cap_full"], tr["cap_crop"], tr["cap_attr"]
    usable = torch.nonzero((cap_full >= 0) | (cap_crop >= 0)).flatten()
    by_colour = [usable[cap_attr[usable, 1] == c] for c in range(len(COLOURS))]
    full_d, crops_d = tr["full"].to(DEV), tr["crops"].to(DEV)
    gen = torch.Generator().manual_seed(a.seed + 32)
    B = a.clip_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.image, self.scale = head, image, scale

    def step_fn(step: int) -> float:
        image.train()
        idx = sample_batch(usable, by_colour, B, a.clip_colour_groups, gen)
        x = augment(to_pixels(image_batch(idx, cap_crop, cap_full, crops_d, full_d,
                                          a.crop_rate, gen)), gen)
        attr = cap_attr[idx]
        combo = (attr[:, 0] * len(COLOURS) + attr[:, 1]) * len(PATTERNS) + attr[:, 2]
        srow = len(uniq) + combo * per + torch.randint(per, (B,), generator=gen)
        use_synth = torch.rand(B, generator=gen) < a.synth_rate
        rows = torch.where(use_synth, srow, cap_rows[idx])
        tf = F.normalize(head(pooled[rows.to(DEV)]), dim=-1)
        imf = F.normalize(image(x), dim=-1)
        loss = soft_clip_loss(imf, tf, scale, ctx.space.match(desc_all[rows], attr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(head.parameters()) + list(image.parameters()), 2.0)
        opt.step()
        return float(loss)

    st = timed_training("clip2", ctx.work, a.clip2_minutes, step_fn, {}, {"m": Holder()}, opt,
                        a.clip_lr, max_steps=a.max_steps)
    ls = float(scale.exp().clamp(max=100.0))
    save_ckpt(ctx.path("clip2.pt"), {"head": head.state_dict(), "image": image.state_dict(),
                                     "logit_scale": ls, "feature_dim": 128})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "logit_scale": round(ls, 3),
           "frozen": "text transformer (token/position tables, blocks, final LN)"}
    t2, i2, _ = ctx.clip()
    res.update(quick_zero_shot(ctx, t2, i2, n=2000))
    log("clip2:", res)
    return res


def stage_vae(ctx: Ctx) -> dict:
    a = ctx.args
    tr = ctx.train
    seed_all(a.seed + 10)
    enc, dec = VaeEncoder().to(DEV), VaeDecoder().to(DEV)
    log(f"vae: encoder {n_params(enc)}, decoder {n_params(dec)} params")
    opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=a.vae_lr,
                            weight_decay=0.0)
    pool = torch.cat([tr["full"], tr["crops"]]).to(DEV)
    gen = torch.Generator().manual_seed(a.seed + 11)
    B = a.vae_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = enc, dec

    def step_fn(step: int) -> float:
        x = to_pixels(pool[torch.randint(len(pool), (B,), generator=gen).to(DEV)])
        flip = (torch.rand(B, generator=gen) < 0.5).to(DEV)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        mean, logvar = enc.posterior(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(DEV)
        rec = dec(z)
        l_rec = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l_rec + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    st = timed_training("vae", ctx.work, a.vae_minutes, step_fn, {}, {"m": Holder()}, opt,
                        a.vae_lr, max_steps=a.max_steps)
    enc.eval(), dec.eval()
    with torch.no_grad():
        sel = torch.randperm(len(pool), generator=gen)[:2048]
        x = to_pixels(pool[sel.to(DEV)])
        m = torch.cat([enc(x[i:i + 256]) for i in range(0, len(x), 256)])
        std = float(m.std())
        rec = torch.cat([dec(m[i:i + 256]) for i in range(0, len(m), 256)])
        mse = float((rec.clamp(-1, 1) - x).pow(2).mean())
    latent_scale = 1.0 / std
    save_ckpt(ctx.path("vae.pt"), {"enc": enc.state_dict(), "dec": dec.state_dict(),
                                   "latent_scale": latent_scale})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "latent_std": round(std, 4),
           "latent_scale": round(latent_scale, 5), "recon_mse_[-1,1]": round(mse, 5),
           "recon_psnr_db": round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)}
    log("vae:", res)
    return res


def _hidden_for(ctx: Ctx, text: TextEncoderWrapper, tok: Tokenizer, texts: List[str]) -> Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 512):
            ids, eos = tok.encode(texts[i:i + 512])
            dev = text.token_embedding.device
            h, _ = encode_text(text, ids.to(dev), eos.to(dev))
            out.append(h.cpu())
    return torch.cat(out)


def stage_unet(ctx: Ctx) -> dict:
    a = ctx.args
    # Latents of the UNet's training views (both flips), and text states of each caption.
    lat_path = ctx.path("unet_latents.pt")
    if os.path.exists(lat_path):
        d = tload(lat_path)
    else:
        tr = ctx.train
        tok = ctx.tokenizer()
        text, _, _ = ctx.clip(base_only=True)
        enc, _, latent_scale = ctx.vae()
        text.to(DEV)
        enc.to(DEV)
        t0 = time.time()
        caps = tr["cap_text"]
        uniq = sorted(set(caps))
        cap_id = {c: i for i, c in enumerate(uniq)}
        hidden = _hidden_for(ctx, text, tok, [""] + uniq)   # row 0: the empty prompt
        # Views: shop images (the garment alone) and box crops of user images (the garment
        # on a background), half each; whole user scenes are left out: on this compute
        # budget they cost capacity that the asked garment needs.
        shop_views, user_views = [], []
        for j in range(len(caps)):
            f, c = int(tr["cap_full"][j]), int(tr["cap_crop"][j])
            ci = cap_id[caps[j]] + 1
            if c < 0:
                continue
            if bool(tr["crop_shop"][c]):
                if f >= 0:
                    shop_views.append((("f", f), ci))
            else:
                user_views.append((("c", c), ci))
        g = torch.Generator().manual_seed(a.seed)
        half = a.unet_views // 2
        pick = [shop_views[i] for i in torch.randperm(len(shop_views), generator=g)[:half]]
        pick += [user_views[i] for i in torch.randperm(len(user_views), generator=g)[:half]]
        views = [v for v, _ in pick]
        view_cap = [ci for _, ci in pick]
        u8 = torch.stack([tr["full"][i] if k == "f" else tr["crops"][i] for k, i in views])
        lat = []
        with torch.no_grad():
            for i in range(0, len(u8), 512):
                lat.append((enc(to_pixels(u8[i:i + 512].to(DEV))) * latent_scale).cpu())
        d = {"latents": torch.cat(lat).half(), "view_cap": torch.tensor(view_cap),
             "hidden": hidden.half()}
        save_ckpt(lat_path, d)
        log(f"unet: {len(views)} views encoded, {len(uniq)} distinct captions, "
            f"{time.time() - t0:.0f}s")
    latents, view_cap, hidden = d["latents"].to(DEV), d["view_cap"], d["hidden"].float().to(DEV)
    seed_all(a.seed + 20)
    unet = LatentUNet().to(DEV)
    log(f"unet: {n_params(unet)} params")
    opt = torch.optim.AdamW(unet.parameters(), lr=a.unet_lr, weight_decay=0.0)
    ac = alphas_cumprod().to(DEV)
    gen = torch.Generator().manual_seed(a.seed + 21)
    B = a.unet_batch
    ema_unet = LatentUNet().to(DEV)
    if a.unet_init:  # continue from an earlier run's weights (its "raw" and EMA copies)
        init = tload(a.unet_init)
        unet.load_state_dict(init.get("raw", init["unet"]))
        ema_unet.load_state_dict(init["unet"])
        log(f"unet: initialised from {a.unet_init}")
    else:
        ema_unet.load_state_dict(unet.state_dict())
    ema_unet.requires_grad_(False)

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

    def step_fn(step: int) -> float:
        unet.train()
        vi = torch.randint(len(latents), (B,), generator=gen)
        z0 = latents[vi.to(DEV)].float()
        flip = (torch.rand(B, generator=gen) < 0.5).to(DEV)  # latent flip ~ image flip
        z0 = torch.where(flip[:, None, None, None], z0.flip(3), z0)
        ci = view_cap[vi].clone()
        ci[torch.rand(B, generator=gen) < a.cond_drop] = 0
        ctxt = hidden[ci.to(DEV)]
        t = torch.randint(NUM_TRAIN_TIMESTEPS, (B,), generator=gen).to(DEV)
        noise = torch.randn(z0.shape, generator=gen).to(DEV)
        at = ac[t][:, None, None, None]
        zt = at.sqrt() * z0 + (1 - at).sqrt() * noise
        loss = (unet(zt, t, ctxt) - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(a.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema_unet.parameters(), unet.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        return float(loss)

    st = timed_training("unet", ctx.work, a.unet_minutes, step_fn, {},
                        {"m": Holder(), "ema": ema_unet}, opt, a.unet_lr,
                        max_steps=a.max_steps)
    save_ckpt(ctx.path("unet.pt"), {"unet": ema_unet.state_dict(),
                                    "raw": unet.state_dict()})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "params": n_params(unet),
           "ema": a.ema, "cond_drop": a.cond_drop}
    log("unet:", res)
    return res


# ---------------------------------------------------------------------------------------
# measuring

def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@torch.no_grad()
def text_features(text, tok: Tokenizer, prompts: List[str]) -> Tensor:
    out = []
    dev = text.token_embedding.device
    for i in range(0, len(prompts), 256):
        ids, eos = tok.encode(prompts[i:i + 256])
        _, f = text(text.token_embedding[ids.to(dev)], eos.to(dev))
        out.append(F.normalize(f, dim=-1).cpu())
    return torch.cat(out)


@torch.no_grad()
def class_features(text, tok: Tokenizer, groups: List[List[str]]) -> Tensor:
    """Prompt ensembles: mean of the normalised features of each class's prompts."""
    feats = [F.normalize(text_features(text, tok, g).mean(0), dim=-1) for g in groups]
    return torch.stack(feats)


@torch.no_grad()
def image_features(image, u8: Tensor) -> Tensor:
    out = []
    dev = model_device(image)
    for i in range(0, len(u8), 512):
        out.append(F.normalize(image(to_pixels(u8[i:i + 512].to(dev))), dim=-1).cpu())
    return torch.cat(out)


def classifier_prompts(hidden: List[str]) -> Dict[str, Tuple[List[str], List[List[str]]]]:
    visible = [c for c in CATEGORIES if c not in hidden]
    nouns = visible + sorted(set(PARENTS.values()))
    return {
        "category": (visible, [[f"a photo of {article(c)} {c}"] for c in visible]),
        "colour": (COLOURS, [[f"a photo of {article(c)} {c} {n}" for n in nouns] for c in COLOURS]),
        "pattern": (PATTERNS, [[f"a photo of {article(p)} {p} {n}" for n in nouns]
                               for p in PATTERNS]),
    }


@torch.no_grad()
def zero_shot(text, image, tok: Tokenizer, cache: dict, hidden: List[str], n: int = 0,
              seed: int = 0) -> dict:
    """Zero-shot accuracy on box crops (user + shop, style > 0) of a split."""
    attr = cache["crop_attr"]
    sel = torch.arange(len(attr))
    if n and n < len(sel):
        sel = sel[torch.randperm(len(sel), generator=torch.Generator().manual_seed(seed))[:n]]
    feats = image_features(image, cache["crops"][sel])
    a = attr[sel]
    res = {}
    for key, (names, groups) in classifier_prompts(hidden).items():
        cf = class_features(text, tok, groups)
        pred = (feats @ cf.t()).argmax(1)
        if key == "category":
            truth_names = [CATEGORIES[i] for i in a[:, 0].tolist()]
            keep = torch.tensor([t in names for t in truth_names])
            truth = torch.tensor([names.index(t) if t in names else -1 for t in truth_names])
            acc = float((pred[keep] == truth[keep]).float().mean())
            shop = cache["crop_shop"][sel]
            res["zero_shot_category_user"] = round(float((pred[keep & ~shop] == truth[keep & ~shop]).float().mean()), 4)
            res["zero_shot_category_shop"] = round(float((pred[keep & shop] == truth[keep & shop]).float().mean()), 4)
        else:
            col = 1 if key == "colour" else 2
            acc = float((pred == a[:, col]).float().mean())
        res[f"zero_shot_{key}"] = round(acc, 4)
    res["zero_shot_items"] = int(len(sel))
    return res


def quick_zero_shot(ctx: Ctx, text, image, n: int = 2000) -> dict:
    return {"val_" + k: v for k, v in zero_shot(text, image, ctx.tokenizer(), ctx.val,
                                                ctx.args.hidden, n=n).items()}


@torch.no_grad()
def caption_recall(text, image, tok: Tokenizer, cache: dict, space: CaptionSpace,
                   n: int = 1000, seed: int = 0) -> dict:
    ok = torch.nonzero(cache["cap_full"] >= 0).flatten()
    sel = ok[torch.randperm(len(ok), generator=torch.Generator().manual_seed(seed))[:n]]
    caps = [cache["cap_text"][i] for i in sel.tolist()]
    tf = text_features(text, tok, caps)
    imf = image_features(image, cache["full"][cache["cap_full"][sel]])
    top = (tf @ imf.t()).argmax(1)
    exact = float((top == torch.arange(len(sel))).float().mean())
    desc = torch.tensor([space.parse(c) for c in caps])
    match = space.match(desc, cache["cap_attr"][sel])  # [image, caption]
    fits = float(match[top, torch.arange(len(sel))].float().mean())
    return {"caption_to_image_recall@1": round(exact, 4),
            "caption_to_image_top1_fits_caption": round(fits, 4), "captions": len(sel)}


def save_grid(u8: Tensor, path: str, cols: int = 12, scale: int = 2) -> None:
    from PIL import Image
    n, h, w, _ = u8.shape
    rows = (n + cols - 1) // cols
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = u8[i].numpy()
    img = Image.fromarray(grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)


@torch.no_grad()
def render_eval(text, image, unet, vae_dec, tok: Tokenizer, hidden: List[str], n: int,
                seed: int, steps: int, guidance: float, grid_path: str) -> dict:
    visible = [c for c in CATEGORIES if c not in hidden]
    combos = [(c, col, p) for c in visible for col in COLOURS for p in PATTERNS]
    rng = random.Random(seed)
    combos = rng.sample(combos, min(n, len(combos)))
    prompts = [f"a photo of {article(col)} {col} {p} {c}" for c, col, p in combos]
    ids, eos = tok.encode(prompts)
    cond, _ = text(text.token_embedding[ids], eos)
    uids, ueos = tok.encode([""])
    uncond, _ = text(text.token_embedding[uids], ueos)
    gen = torch.Generator().manual_seed(seed)
    lat = torch.cat([ddim_sample(unet, cond[i:i + 64], uncond, steps, guidance, gen)
                     for i in range(0, len(prompts), 64)])
    imgs = vae_dec(lat).clamp(-1, 1)
    u8 = ((imgs + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    save_grid(u8, grid_path)
    feats = image_features(image, u8)
    res = {}
    for key, (names, groups) in classifier_prompts(hidden).items():
        cf = class_features(text, tok, groups)
        pred = (feats @ cf.t()).argmax(1).tolist()
        k = {"category": 0, "colour": 1, "pattern": 2}[key]
        hits = [names[pr] == combo[k] for pr, combo in zip(pred, combos)]
        res[f"render_{key}"] = round(sum(hits) / len(hits), 4)
    res.update({"render_prompts": len(prompts), "render_sampler": f"DDIM {steps} steps, eta 0",
                "render_guidance": guidance})
    return res, prompts


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
    m = write_bundle(a.out, "fashionworld-default", text, image, unet, enc, dec, latent_scale,
                     logit_scale, ctx.path("tokenizer.model"), prompts, crops, fulls, raw, card)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    res = {"bytes": total, "files": {f: os.path.getsize(os.path.join(a.out, f))
                                     for f in sorted(os.listdir(a.out))}}
    log("export:", res)
    if total > 40 * 2 ** 20:
        raise RuntimeError(f"bundle is {total} bytes, over 40 MB")
    return res


def stage_evaluate(ctx: Ctx, results: dict) -> dict:
    a = ctx.args
    out = a.out
    with open(os.path.join(out, "bundle.json")) as f:
        manifest = json.load(f)
    text = torch.jit.load(os.path.join(out, "text_encoder.pt"))
    image = torch.jit.load(os.path.join(out, "image_encoder.pt"))
    unet = torch.jit.load(os.path.join(out, "unet.pt"))
    dec = torch.jit.load(os.path.join(out, "vae_decoder.pt"))
    tok = Tokenizer(os.path.join(out, "tokenizer.model"))
    t0 = time.time()
    metrics = {}
    metrics.update(zero_shot(text, image, tok, ctx.val, a.hidden))
    metrics.update(caption_recall(text, image, tok, ctx.val, ctx.space, n=1000, seed=a.seed))
    log("evaluate: retrieval", metrics, f"{time.time() - t0:.0f}s")
    r, prompts = render_eval(text, image, unet, dec, tok, a.hidden, a.render_prompts, a.seed,
                             50, a.guidance, ctx.path("renders.png"))
    metrics.update(r)
    metrics["split"] = "validation"
    floors = {"zero_shot_category": 0.85, "zero_shot_colour": 0.90, "zero_shot_pattern": 0.85,
              "render_category": 0.70, "render_colour": 0.70}
    metrics["floors"] = floors
    metrics["floors_met"] = {k: metrics[k] >= v for k, v in floors.items()}
    log("evaluate:", metrics, f"{time.time() - t0:.0f}s")
    manifest["card"]["metrics"] = metrics
    manifest["card"]["training"] = {k: v for k, v in results.items()
                                    if k in ("tokenizer", "clip", "clip2", "vae", "unet")}
    tmp = os.path.join(out, "bundle.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "bundle.json"))
    return {"metrics": metrics, "render_prompts_sample": prompts[:12]}


# ---------------------------------------------------------------------------------------
# main

STAGES = ["tokenizer", "clip", "vae", "unet", "clip2", "export", "evaluate"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m ctok_py.train_default",
                                description="Train, export and measure the default bundle.")
    p.add_argument("--data", required=True, help="FashionWorld root (train + validation)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--work", default="data/train-work", help="checkpoints, caches, logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--redo", default="", help="stages to rerun even if done")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    p.add_argument("--clip-colour-groups", type=float, default=0.5,
                   help="share of CLIP batches drawn from two colours only")
    p.add_argument("--hidden", default="sneaker,shirt")
    p.add_argument("--max-steps", type=int, default=0, help="cap every stage (debugging)")
    p.add_argument("--clip-minutes", type=float, default=20.0)
    p.add_argument("--clip-batch", type=int, default=128)
    p.add_argument("--clip-lr", type=float, default=2e-3)
    p.add_argument("--clip2-minutes", type=float, default=22.0,
                   help="second CLIP phase, text transformer frozen (runs beside the UNet)")
    p.add_argument("--crop-rate", type=float, default=0.5, help="box crops vs full images")
    p.add_argument("--synth-rate", type=float, default=0.5, help="synthesised captions")
    p.add_argument("--vae-minutes", type=float, default=4.0)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-kl", type=float, default=1e-3)
    p.add_argument("--unet-minutes", type=float, default=30.0)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-views", type=int, default=30000, help="images encoded for the UNet")
    p.add_argument("--unet-lr", type=float, default=2e-3)
    p.add_argument("--unet-init", default="",
                   help="unet.pt of an earlier run to continue from (raw and EMA weights)")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--render-prompts", type=int, default=96)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--docs", default="docs/default-models.md")
    a = p.parse_args(argv)
    a.hidden = [h for h in a.hidden.split(",") if h]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    global DEV
    dev = a.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    DEV = torch.device(dev)
    if DEV.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    os.makedirs(a.work, exist_ok=True)
    log.path = os.path.join(a.work, "train.log")
    log("args:", vars(a))
    ctx = Ctx(a)
    res_path = ctx.path("results.json")
    results = {}
    if os.path.exists(res_path):
        with open(res_path) as f:
            results = json.load(f)
    for stage in STAGES:  # per-stage files win: stages may run in parallel processes
        p = ctx.path(f"result_{stage}.json")
        if os.path.exists(p):
            with open(p) as f:
                results[stage] = json.load(f)
    redo = set(s for s in a.redo.split(",") if s)
    for stage in [s for s in a.stages.split(",") if s]:
        if stage not in STAGES:
            raise SystemExit(f"unknown stage {stage} ({', '.join(STAGES)})")
        if stage in results and stage not in redo and stage not in ("export", "evaluate"):
            log(f"{stage}: done before, skipped")
            continue
        t0 = time.time()
        log(f"== stage {stage}")
        if stage == "tokenizer":
            r = stage_tokenizer(ctx)
        elif stage == "clip":
            r = stage_clip(ctx)
        elif stage == "vae":
            r = stage_vae(ctx)
        elif stage == "unet":
            r = stage_unet(ctx)
        elif stage == "clip2":
            r = stage_clip2(ctx)
        elif stage == "export":
            r = stage_export(ctx, results)
        else:
            r = stage_evaluate(ctx, results)
        r["wall_seconds"] = round(time.time() - t0, 1)
        results[stage] = r
        with open(ctx.path(f"result_{stage}.json"), "w") as f:
            json.dump(r, f, indent=1)
        with open(res_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(res_path + ".tmp", res_path)
        if stage == "evaluate" and a.docs:
            write_docs(a, results)
    log("done")
    return 0


def write_docs(a, results: dict) -> None:
    m = results["evaluate"]["metrics"]
    tr = {k: results.get(k, {}) for k in ("tokenizer", "clip", "vae", "unet", "export",
                                             "evaluate")}
    lines = ["# The default models (models/default)", "",
             "Trained from scratch on the FashionWorld **train** split and measured on its "
             "**validation** split by",
             "", "```",
             "PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.train_default \\",
             f"    --data {a.data} --out {a.out} --seed {a.seed} --work {a.work}", "```", "",
             "Stages (each checkpointed in `--work`, a rerun resumes; `--stages`, `--redo`): "
             "tokenizer, clip, vae, unet, export, evaluate. Step counts are fixed from the "
             "speed measured on each stage's first 30 steps and its minutes budget "
             "(`--clip-minutes`, `--vae-minutes`, `--unet-minutes`), so they depend on the "
             "machine; the numbers below are this run's.", "",
             "## Models", "",
             "| part | what |", "| --- | --- |",
             f"| tokenizer | SentencePiece unigram, {tr['tokenizer'].get('vocab_size')} pieces, "
             "every caption and prompt word one piece (`▁word` user symbols), pad 0 bos 1 eos 2 "
             "unk 3, context 16 |",
             "| text encoder | causal transformer, width 128, 4 layers, 4 heads, final LN "
             "(`hidden`); `features` = MLP head (128-256-128, GELU) on the state at the eos "
             "index |",
             "| image encoder | 7-layer conv net (24-48-96-192, BN) on 32x32, mean+max pool, MLP "
             "to 128 |",
             "| VAE | conv, 32x32x3 -> 8x8x4, latents scaled to unit variance "
             f"(latent_scale {tr['vae'].get('latent_scale')}) |",
             f"| UNet | {tr['unet'].get('params')} parameters, 48/96 channels, one down/up level, "
             "self- and cross-attention on the text hidden states in every block, sinusoidal "
             "timestep embedding, 10% caption dropout to the empty prompt, EMA weights; "
             "scaled-linear betas 0.00085-0.012, 1000 steps, epsilon |", "",
             "CLIP training: contrastive with a learned logit scale, batch "
             f"{tr['clip'].get('batch')}; images are shop and user images, whole and as box "
             "crops (half each), with random scale/shift, flips and brightness/contrast; "
             "captions are the data set's (half) and captions synthesised from the item's "
             "attributes with prompt templates (`a photo of a`, `a close-up photo of a`, "
             "`... in {colour}`, `... with stripes`, the generic noun `garment`). Hidden "
             "categories are only ever named by their parent word. A caption counts as a "
             "positive for every image in the batch whose attributes it fits (soft targets), "
             "so repeated captions are not negatives.", "",
             "CLIP was trained in two phases. Phase 1 (`clip`) trains both towers from "
             "scratch. Phase 2 (`clip2`) freezes the text transformer (token and position "
             "tables, blocks, final layer norm), puts a fresh MLP head on the pooled state and "
             "keeps training it with the image encoder, beside the UNet in a second process: "
             "the UNet's conditioning (`hidden`) is unchanged by phase 2, every caption's "
             "pooled state is computed once, and a step costs about half. On the shared "
             "2-core machine phase 1 alone learned colour but not yet category in its "
             "budget (see its validation numbers in the card, `card.training.clip`).", "",
             "## Training (this run)", "",
             "| stage | steps | batch | seconds | final loss |", "| --- | --- | --- | --- | --- |"]
    for k in ("clip", "clip2", "vae", "unet"):
        r = results.get(k, {})
        lines.append(f"| {k} | {r.get('steps')} | {r.get('batch')} | {r.get('wall_seconds')} | "
                     f"{r.get('final_loss')} |")
    lines += ["", f"Bundle size: {tr['export'].get('bytes')} bytes.", "",
              "## Metrics (validation split)", "",
              "| metric | value | floor |", "| --- | --- | --- |"]
    for k, v in m.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"| {k} | {v} | {m['floors'].get(k, '')} |")
    lines += ["",
              "- zero-shot: box crops of every validation item with style > 0 (user and shop); "
              "category over the visible categories with `a photo of a {category}`; colour and "
              "pattern with prompt ensembles `a photo of a {colour} {noun}` over the visible "
              "category and parent words;",
              "- caption->image: 1000 validation captions against their 1000 whole images; "
              "`recall@1` counts only the caption's own image, `top1_fits_caption` counts a top "
              "image whose attributes the caption describes (many images share a caption);",
              "- renders: `a photo of a {colour} {pattern} {category}` over visible category x "
              "colour x pattern (a fixed sample), DDIM 50 steps, eta 0, guidance "
              f"{m.get('render_guidance')}, empty prompt as unconditional; share that the "
              "CLIP classifies back to the asked category/colour/pattern with the zero-shot "
              "classifiers above.", ""]
    os.makedirs(os.path.dirname(a.docs) or ".", exist_ok=True)
    with open(a.docs, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
