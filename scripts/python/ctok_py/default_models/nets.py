"""Architectures of the default models (all scriptable): text and image encoders, VAE, UNet."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctok_py.default_models.common import CONTEXT_LENGTH, LATENT_CHANNELS
from ctok_py.wrappers import ImageEncoderWrapper, TextEncoderWrapper

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


def make_text_head(width: int, feature_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, feature_dim))
