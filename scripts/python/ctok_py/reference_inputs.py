"""Synthetic images for the reference.safetensors of every exporter (bundle.md).

    from ctok_py.reference_inputs import smooth_image
    u8 = smooth_image(48, 40, seed=20)   # uint8 [48, 40, 3], the same for a seed
"""
from __future__ import annotations

import numpy as np


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
