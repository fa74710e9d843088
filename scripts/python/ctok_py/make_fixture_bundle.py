"""Write a tiny random bundle (same contract as the default one) for the C++ tests.

    PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.make_fixture_bundle \\
        [--out tests/data/tiny_bundle] [--seed 0]

Random small weights, a SentencePiece tokenizer trained on a few sentences (every word
below one piece), and reference.safetensors; well under 1 MB. Deterministic for a seed
(up to TorchScript archive details).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

from ctok_py import train_default as td

SENTENCES = [
    "a photo of a red striped dress", "a blue t-shirt with dots", "a photo of a plain shoe",
    "an orange ankle boot in black", "a green checked bag", "a photo of a grey top",
    "a pink pullover with stripes", "a purple coat", "a brown sandal in yellow",
    "a photo of a black dotted trousers",
]
PROMPTS = ["a photo of a red striped dress", "", "a blue shoe with dots"]


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colourful test image (gradients and a disc), uint8 [h, w, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        img[..., c] = 0.5 + 0.4 * np.sin(fx * x / w * 6.28 + fy * y / h * 6.28 + ph)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.25 * min(h, w)
    disc = ((y - cy) ** 2 + (x - cx) ** 2) < r * r
    img[disc] = rng.uniform(0, 1, 3)
    return (img.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def build(out: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    words = sorted({w for s in SENTENCES for w in s.split()})
    tmp = tempfile.mkdtemp()
    try:
        tok_path = os.path.join(tmp, "tokenizer.model")
        td.train_tokenizer(SENTENCES, words, tok_path)
        vocab = td.Tokenizer(tok_path).vocab_size
        text = td.make_text_encoder(vocab, width=24, layers=2, heads=2, feature_dim=16)
        image = td.make_image_encoder(feature_dim=16, widths=(4, 8, 8, 16))
        unet = td.LatentUNet(ch=(8, 16), context_width=24, temb=16)
        enc, dec = td.VaeEncoder(ch=4), td.VaeDecoder(ch=4)
        for m in (text, image, unet, enc, dec):
            m.eval()
        # BatchNorm running stats away from identity, so a wrong eval/train mode shows.
        for mod in image.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.8, 1.2)
        pixels = torch.from_numpy(np.stack([smooth_image(32, 32, seed + i) for i in range(3)]))
        vae_imgs = torch.from_numpy(np.stack([smooth_image(32, 32, seed + 10 + i)
                                              for i in range(2)]))
        raw = smooth_image(48, 40, seed + 20)
        card = {"source": "random weights from ctok_py.make_fixture_bundle (tests only)",
                "seed": seed, "metrics": {}}
        if os.path.isdir(out):
            shutil.rmtree(out)
        manifest = td.write_bundle(out, "fixture-tiny", text, image, unet, enc, dec,
                                   latent_scale=0.8, logit_scale=20.0, tokenizer_path=tok_path,
                                   prompts=PROMPTS, pixels_u8=pixels, vae_u8=vae_imgs,
                                   raw_u8=raw, card=card)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tests/data/tiny_bundle")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    build(a.out, a.seed)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"wrote {a.out} ({total} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
