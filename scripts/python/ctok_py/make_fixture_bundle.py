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

from ctok_py.default_models.data import Tokenizer, train_tokenizer
from ctok_py.default_models.export import write_bundle
from ctok_py.default_models.nets import (LatentUNet, VaeDecoder, VaeEncoder, make_image_encoder,
                                        make_text_encoder)
from ctok_py.reference_inputs import smooth_image

SENTENCES = [
    "a photo of a red striped dress", "a blue t-shirt with dots", "a photo of a plain shoe",
    "an orange ankle boot in black", "a green checked bag", "a photo of a grey top",
    "a pink pullover with stripes", "a purple coat", "a brown sandal in yellow",
    "a photo of a black dotted trousers",
]
PROMPTS = ["a photo of a red striped dress", "", "a blue shoe with dots"]


def build(out: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    words = sorted({w for s in SENTENCES for w in s.split()})
    tmp = tempfile.mkdtemp()
    try:
        tok_path = os.path.join(tmp, "tokenizer.model")
        train_tokenizer(SENTENCES, words, tok_path)
        vocab = Tokenizer(tok_path).vocab_size
        text = make_text_encoder(vocab, width=24, layers=2, heads=2, feature_dim=16)
        image = make_image_encoder(feature_dim=16, widths=(4, 8, 8, 16))
        unet = LatentUNet(ch=(8, 16), context_width=24, temb=16)
        enc, dec = VaeEncoder(ch=4), VaeDecoder(ch=4)
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
        # Replaces a bundle at ``out`` whole, atomically (ctok_py.bundle_writer).
        manifest = write_bundle(out, "fixture-tiny", text, image, unet, enc, dec,
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
