#!/usr/bin/python3
"""What a user would otherwise write to embed a catalogue: a Python loop on the same bundle
(Debian python3-torch + PIL), decode -> resize shorter side (bicubic) -> centre crop ->
normalise -> batch 64 -> the TorchScript image encoder -> L2 normalise, under inference_mode.

    /usr/bin/python3 bench/bench_catalogue.py --bundle models/default --images DIR [--threads 1]

Prints images/s of the whole loop and of the encoder alone (same run).
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="models/default")
    ap.add_argument("--images", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = json.load(open(os.path.join(a.bundle, "bundle.json")))
    spec = m["image"]
    size = int(spec["size"])
    mean = np.array(spec["mean"], np.float32).reshape(3, 1, 1)
    std = np.array(spec["std"], np.float32).reshape(3, 1, 1)
    enc = torch.jit.load(os.path.join(a.bundle, spec["file"])).eval()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.images) for f in fs if f.endswith(".jpg"))
    t0 = time.perf_counter()
    t_enc = 0.0
    feats = []
    with torch.inference_mode():
        for b in range(0, len(files), a.batch):
            px = []
            for f in files[b:b + a.batch]:
                im = Image.open(f).convert("RGB")
                w, h = im.size
                s = size / min(w, h)
                im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
                w, h = im.size
                l, t = (w - size) // 2, (h - size) // 2
                im = im.crop((l, t, l + size, t + size))
                x = (np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std
                px.append(torch.from_numpy(x))
            te = time.perf_counter()
            f = enc(torch.stack(px))
            feats.append(torch.nn.functional.normalize(f, dim=-1))
            t_enc += time.perf_counter() - te
    wall = time.perf_counter() - t0
    n = len(files)
    print(f"python loop: {n} images in {wall:.2f} s ({n / wall:.0f} img/s); encoder alone {t_enc:.2f} s "
          f"({n / t_enc:.0f} img/s)")


if __name__ == "__main__":
    main()
