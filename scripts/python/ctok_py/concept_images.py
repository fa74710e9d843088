"""Write a folder of photos of a concept from a DeepFashion2-layout data set (FashionWorld).

    PYTHONPATH=scripts/python python3 -m ctok_py.concept_images --root data/fashionworld \\
        --split train --category sneaker --n 5 --seed 0 --out runs/demo/sneaker-photos

The concept is a category (items of distinct identities, e.g. the hidden category
``sneaker``) or, with --pair-id and --style, one garment in one style. The chosen items'
boxes are cropped with a margin and saved as PNG files, the folder ``ctok-learn --images``
takes. Only items with style > 0 (not distractors) of the chosen source are used. The
folder is written whole or not at all (a temporary folder renamed at the end).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from typing import List, Optional, Sequence

from ctok_py.fashionworld import items, load_split


def crop_box(box, w: int, h: int, margin: float):
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return (max(0, int(round(x1 - mx))), max(0, int(round(y1 - my))),
            min(w, int(round(x2 + mx))), min(h, int(round(y2 + my))))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m ctok_py.concept_images", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="data set root (DeepFashion2 layout)")
    p.add_argument("--split", default="train")
    p.add_argument("--category", help="category_name, e.g. sneaker")
    p.add_argument("--pair-id", type=int, help="one garment (with --style)")
    p.add_argument("--style", type=int, default=1)
    p.add_argument("--source", default="user", choices=["user", "shop", "any"])
    p.add_argument("--n", type=int, default=5, help="number of photos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--margin", type=float, default=0.1, help="box margin, share of its size")
    p.add_argument("--out", required=True, help="folder to write (must not exist, or --force)")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    if not a.category and a.pair_id is None:
        p.error("give --category or --pair-id")
    if a.n < 1:
        p.error("--n must be at least 1")
    if not os.path.isdir(os.path.join(a.root, a.split, "annos")):
        print(f"error: --root {a.root}: no {a.split}/annos folder", file=sys.stderr)
        return 2
    if os.path.exists(a.out) and not a.force:
        print(f"error: --out {a.out} exists (use --force to replace it)", file=sys.stderr)
        return 2

    cands: List[tuple] = []
    for anno in load_split(a.root, a.split):
        if a.source != "any" and anno.get("source") != a.source:
            continue
        for key, it in items(anno):
            if int(it.get("style", 0)) <= 0:
                continue
            if a.category and it.get("category_name") != a.category:
                continue
            if a.pair_id is not None and (anno.get("pair_id") != a.pair_id
                                          or int(it["style"]) != a.style):
                continue
            cands.append((anno, key, it))
    rng = random.Random(a.seed)
    rng.shuffle(cands)
    chosen, seen = [], set()
    for anno, key, it in cands:  # distinct identities when the concept is a category
        ident = (anno.get("pair_id"), it.get("style"))
        if a.pair_id is None and ident in seen:
            continue
        seen.add(ident)
        chosen.append((anno, key, it))
        if len(chosen) == a.n:
            break
    if len(chosen) < a.n:
        print(f"error: only {len(chosen)} matching items in {a.root}/{a.split} "
              f"(asked for --n {a.n})", file=sys.stderr)
        return 2

    from PIL import Image
    tmp = a.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for anno, key, it in chosen:
        with Image.open(anno["image_path"]) as im:
            im = im.convert("RGB")
            box = crop_box(it["bounding_box"], im.width, im.height, a.margin)
            name = f"{anno['image'][:-4]}-{key}.png"
            im.crop(box).save(os.path.join(tmp, name))
        print(f"{name}: pair_id {anno.get('pair_id')} style {it['style']} "
              f"{it.get('color')} {it.get('pattern')} {it.get('category_name')}")
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.rename(tmp, a.out)
    print(f"wrote {len(chosen)} photos to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
