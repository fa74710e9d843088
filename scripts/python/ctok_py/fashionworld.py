"""FashionWorld: the embedded default data set (specs/fashionworld.md).

Renders Fashion-MNIST garments (one source image = one identity = one ``pair_id``) in
``S`` (colour, pattern) styles as 64x64 shop and user images, in DeepFashion2's layout:

    <root>/<split>/image/000001.jpg     JPEG quality 95
    <root>/<split>/annos/000001.json
    <root>/<split>/captions.jsonl       {"image", "item", "caption"} per item with style > 0
    <root>/world.json                   written last: version, seed, options, counts, tables

Command line::

    PYTHONPATH=scripts/python python3 -m ctok_py.fashionworld --out data/fashionworld

Everything an identity's images depend on is drawn from an RNG seeded with
(seed, split, source index), so output bytes do not depend on worker count or order.

pair_id: ``train`` identity with Fashion-MNIST train index ``i`` has pair_id ``1 + i``
(1..60000); ``validation`` identity with test index ``i`` has ``100001 + i``
(100001..110000). They never collide, whatever the options.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

GENERATOR = "ctok-fashionworld"
VERSION = "1.0"

SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_SIZE = 64

# id, category_name, parent (specs/fashionworld.md "Vocabulary"); id = Fashion-MNIST label + 1.
CATEGORIES: List[Tuple[int, str, str]] = [
    (1, "t-shirt", "top"),
    (2, "trousers", "trousers"),
    (3, "pullover", "top"),
    (4, "dress", "dress"),
    (5, "coat", "top"),
    (6, "sandal", "shoe"),
    (7, "shirt", "top"),
    (8, "sneaker", "shoe"),
    (9, "bag", "bag"),
    (10, "ankle boot", "shoe"),
]
CATEGORY_BY_NAME = {name: (cid, parent) for cid, name, parent in CATEGORIES}
PARENTS: List[str] = ["top", "trousers", "dress", "shoe", "bag"]

COLORS: List[Tuple[str, Tuple[int, int, int]]] = [
    ("red", (205, 30, 35)),
    ("orange", (245, 130, 20)),
    ("yellow", (245, 215, 35)),
    ("green", (35, 150, 55)),
    ("blue", (35, 80, 215)),
    ("purple", (125, 45, 170)),
    ("pink", (250, 135, 190)),
    ("brown", (125, 70, 30)),
    ("grey", (140, 140, 140)),
    ("black", (28, 28, 28)),
]
PATTERNS: List[str] = ["plain", "striped", "dotted", "checked"]
PATTERN_NOUNS = {"striped": "stripes", "dotted": "dots", "checked": "checks"}

# Every whitespace-separated word any caption can contain (whatever --hidden says).
CAPTION_WORDS: Tuple[str, ...] = tuple(
    ["a", "an", "photo", "of", "with", "in"]
    + list(PATTERNS)
    + [PATTERN_NOUNS[p] for p in PATTERNS[1:]]
    + [c for c, _ in COLORS]
    + sorted({w for _, name, _ in CATEGORIES for w in name.split()})
    + [p for p in PARENTS if p not in {w for _, n, _ in CATEGORIES for w in n.split()}]
)

SPLIT_SOURCE = {"train": "train", "validation": "t10k"}
SPLIT_CODE = {"train": 1, "validation": 2}
PAIR_ID_BASE = {"train": 1, "validation": 100001}

# Rendering constants (pixels at 64x64).
SHOP_BG = (243, 243, 243)
SHOP_LONG_SIDE = 0.85
USER_SCALE = (0.45, 0.90)
DISTRACTOR_SCALE = (0.30, 0.45)
MAX_ANGLE = 15.0
MASK_THRESHOLD = 30.0  # grey level (0..255, after resizing) above which a pixel is garment
ALPHA_RAMP = (15.0, 45.0)  # grey levels mapped to alpha 0..1 (soft edges)
STRIPE_PERIOD = (9.0, 11.0)
DOT_PERIOD = (9.0, 10.5)
CHECK_CELL = (4.5, 5.5)

# ---------------------------------------------------------------------------------------
# Source data


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_source(kind: str, source_dir: str = SOURCE_DIR) -> Tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images [N,28,28] uint8 and labels [N] (0..9) of ``train`` or ``t10k``."""
    images = _read_idx(os.path.join(source_dir, f"{kind}-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(source_dir, f"{kind}-labels-idx1-ubyte.gz"))
    return images, labels


# ---------------------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(rng: np.random.Generator, color: str, pattern: str, category: str,
                 hidden: bool, parent_word_rate: float) -> str:
    """One caption; hidden categories are named by their parent's word only."""
    parent = CATEGORY_BY_NAME[category][1]
    noun = parent if (hidden or rng.random() < parent_word_rate) else category
    template = int(rng.integers(6))
    if pattern == "plain":
        adj = "plain" if rng.random() < 0.5 else ""
        post = ""
    else:
        adj = pattern
        post = "with " + PATTERN_NOUNS[pattern]
    if template == 0:
        body = [color, adj, noun]
        prefix = []
    elif template == 1:
        body = [color, adj, noun]
        prefix = ["a", "photo", "of"]
    elif template == 2:
        body = [color, noun, post] if post else [adj, color, noun]
        prefix = []
    elif template == 3:
        body = [color, noun, post] if post else [adj, color, noun]
        prefix = ["a", "photo", "of"]
    elif template == 4:
        body = [adj, noun, "in", color]
        prefix = []
    else:
        body = [adj, noun, "in", color]
        prefix = ["a", "photo", "of"]
    words = " ".join(w for w in body if w).split()
    return " ".join(prefix + [_article(words[0])] + words)


# ---------------------------------------------------------------------------------------
# Rendering


class Layer:
    """A coloured garment on its own tight canvas: rgb [h,w,3] float32, alpha, mask."""

    __slots__ = ("rgb", "alpha", "mask")

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray, mask: np.ndarray):
        self.rgb, self.alpha, self.mask = rgb, alpha, mask


def _source_crop(img28: np.ndarray) -> Tuple[np.ndarray, float]:
    """Tight crop of the garment in a 28x28 source and its 95th-percentile grey level."""
    on = img28 > 10
    if not on.any():
        return img28.astype(np.float32), 255.0
    ys = np.flatnonzero(on.any(axis=1))
    xs = np.flatnonzero(on.any(axis=0))
    crop = img28[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1].astype(np.float32)
    p95 = float(np.percentile(img28[on], 95))
    return crop, max(p95, 40.0)


def _pattern_tone(rgb: Tuple[int, int, int]) -> np.ndarray:
    c = np.asarray(rgb, np.float32)
    lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    if lum > 115:
        return c * 0.35  # darker tone on light colours
    return c + 0.72 * (255.0 - c)  # lighter tone on dark colours


def style_params(rng: np.random.Generator, pattern: str) -> Dict[str, float]:
    """Per-style pattern geometry (fixed for all images of one (identity, style))."""
    if pattern == "striped":
        return {"period": float(rng.uniform(*STRIPE_PERIOD)),
                "orient": float(rng.choice([0.0, 90.0, 45.0, -45.0]))}
    if pattern == "dotted":
        return {"period": float(rng.uniform(*DOT_PERIOD))}
    if pattern == "checked":
        return {"cell": float(rng.uniform(*CHECK_CELL))}
    return {}


def render_layer(crop: np.ndarray, p95: float, long_side: float, angle: float,
                 color: Tuple[int, int, int], pattern: str, params: Dict[str, float],
                 rng: np.random.Generator) -> Layer:
    h0, w0 = crop.shape
    k = long_side / max(h0, w0)
    nw, nh = max(2, int(round(w0 * k))), max(2, int(round(h0 * k)))
    g = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_LINEAR)
    d = int(math.ceil(math.hypot(nw, nh))) + 2
    pad = np.zeros((d, d), np.float32)
    oy, ox = (d - nh) // 2, (d - nw) // 2
    pad[oy:oy + nh, ox:ox + nw] = g
    centre = (d / 2.0, d / 2.0)
    if angle != 0.0:
        m = cv2.getRotationMatrix2D(centre, angle, 1.0)
        v = cv2.warpAffine(pad, m, (d, d), flags=cv2.INTER_LINEAR, borderValue=0)
    else:
        v = pad
    mask = v > MASK_THRESHOLD
    if not mask.any():
        mask = v >= v.max()
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n > 2:
        keep = stats[:, cv2.CC_STAT_AREA] >= 4
        keep[0] = False
        if keep.any():
            mask = keep[lab]
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    y0, y1 = max(ys[0] - 1, 0), min(ys[-1] + 2, d)
    x0, x1 = max(xs[0] - 1, 0), min(xs[-1] + 2, d)
    v = v[y0:y1, x0:x1]
    mask = mask[y0:y1, x0:x1]
    near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    alpha = np.clip((v - ALPHA_RAMP[0]) / (ALPHA_RAMP[1] - ALPHA_RAMP[0]), 0.0, 1.0) * near
    shade = 0.55 + 0.45 * np.clip(v / p95, 0.0, 1.0)

    base = np.asarray(color, np.float32)
    if pattern == "plain":
        rgb = np.broadcast_to(base, v.shape + (3,)) * shade[..., None]
    else:
        hh, ww = v.shape
        # Pattern coordinates in the garment's own (unrotated) frame, so it turns with it.
        yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
        xx += x0 - centre[0]
        yy += y0 - centre[1]
        a = math.radians(angle)
        ca, sa = math.cos(a), math.sin(a)
        u = ca * xx - sa * yy
        w = sa * xx + ca * yy
        phase = rng.uniform(0.0, 1.0, size=2).astype(np.float32)
        if pattern == "striped":
            period = params["period"]
            o = math.radians(params["orient"])
            t = (math.cos(o) * u + math.sin(o) * w) / period + phase[0]
            on = (t - np.floor(t)) < 0.5
        elif pattern == "dotted":
            period = params["period"]
            fu = (u / period + phase[0]) % 1.0 - 0.5
            fw = (w / period + phase[1]) % 1.0 - 0.5
            on = (fu * fu + fw * fw) < 0.30 ** 2
        else:  # checked
            cell = params["cell"]
            on = ((np.floor(u / cell + 2 * phase[0]) + np.floor(w / cell + 2 * phase[1])) % 2) == 0
        tone = _pattern_tone(color)
        rgb = np.where(on[..., None], tone, base) * shade[..., None]
    return Layer(rgb.astype(np.float32), alpha.astype(np.float32), mask)


def _paste(img: np.ndarray, layer: Layer, x: int, y: int) -> np.ndarray:
    """Alpha-blend layer at (x, y) into img (in place); returns the layer's full-frame mask."""
    h, w = layer.mask.shape
    a = layer.alpha[..., None]
    region = img[y:y + h, x:x + w]
    region *= 1.0 - a
    region += a * layer.rgb
    full = np.zeros(img.shape[:2], bool)
    full[y:y + h, x:x + w] = layer.mask
    return full


def _lum(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _bg_color(rng: np.random.Generator, garment: np.ndarray) -> np.ndarray:
    """A half-desaturated random colour far enough from the garment colour."""
    best, best_d = None, -1.0
    for _ in range(24):
        c = rng.uniform(0, 255, 3).astype(np.float32)
        c = 0.5 * c + 0.5 * c.mean()
        d = float(np.linalg.norm(c - garment)) + 1.5 * abs(_lum(c) - _lum(garment))
        if d > 190:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def user_background(rng: np.random.Generator, garment: np.ndarray) -> np.ndarray:
    s = IMAGE_SIZE
    kind = int(rng.integers(3))
    c1 = _bg_color(rng, garment)
    if kind == 0:  # solid
        return np.broadcast_to(c1, (s, s, 3)).copy()
    if kind == 1:  # gradient
        c2 = _bg_color(rng, garment)
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / (s - 1)
        t = math.cos(a) * xx + math.sin(a) * yy
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return c1 * (1.0 - t[..., None]) + c2 * t[..., None]
    # noise texture: low-frequency blobs plus fine grain
    coarse = rng.normal(0.0, 28.0, (int(rng.integers(3, 9)),) * 2 + (3,)).astype(np.float32)
    low = cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 7.0, (s, s, 1)).astype(np.float32)
    return np.clip(c1 + low + fine, 0, 255)


def mask_annotation(mask: np.ndarray) -> Tuple[List[int], List[List[int]]]:
    """Tight box [x1,y1,x2,y2] (x2,y2 exclusive) and outer polygons of a mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    box = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        pts = c.reshape(-1, 2)
        if len(pts) < 3:  # a 1- or 2-pixel-wide sliver: its (degenerate) bounding rectangle
            (ax, ay), (bx, by) = pts.min(axis=0), pts.max(axis=0)
            pts = np.array([[ax, ay], [bx, ay], [bx, by], [ax, by]])
        polys.append([int(v) for v in pts.reshape(-1)])
    if not polys:
        x1, y1, x2, y2 = box
        polys = [[x1, y1, x2 - 1, y1, x2 - 1, y2 - 1, x1, y2 - 1]]
    polys.sort(key=lambda p: (p[1], p[0], len(p)))
    return box, polys


def _scale_level(box: List[int]) -> int:
    long_side = max(box[2] - box[0], box[3] - box[1]) / IMAGE_SIZE
    return 1 if long_side < 0.5 else (2 if long_side < 0.75 else 3)


def _occlusion_level(hidden_fraction: float) -> int:
    return 1 if hidden_fraction < 0.05 else (2 if hidden_fraction < 0.25 else 3)


def _item(category: str, style: int, mask: np.ndarray, hidden_fraction: float,
          color: str, pattern: str) -> Dict:
    cid, parent = CATEGORY_BY_NAME[category]
    box, polys = mask_annotation(mask)
    return {
        "category_id": cid,
        "category_name": category,
        "style": style,
        "bounding_box": box,
        "segmentation": polys,
        "scale": _scale_level(box),
        "occlusion": _occlusion_level(hidden_fraction),
        "zoom_in": 1,
        "viewpoint": 1,
        "landmarks": [],
        "parent": parent,
        "color": color,
        "pattern": pattern,
    }


def _encode_jpeg(img: np.ndarray) -> bytes:
    u8 = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------
# Per-identity generation (runs in workers)

_G: Dict = {}


def _init_worker(state: Dict) -> None:
    _G.clear()
    _G.update(state)


def _rng(seed: int, split: str, source_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODE[split], source_index])


def _place_user(rng: np.random.Generator, crop: np.ndarray, p95: float, frac: float,
                color, pattern, params) -> Layer:
    angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
    long_side = frac * IMAGE_SIZE
    layer = render_layer(crop, p95, long_side, angle, color, pattern, params, rng)
    for _ in range(4):
        h, w = layer.mask.shape
        if h <= IMAGE_SIZE - 2 and w <= IMAGE_SIZE - 2:
            break
        long_side *= (IMAGE_SIZE - 3) / max(h, w)
        layer = render_layer(crop, p95, long_side, angle, color, pattern, params, rng)
    return layer


def generate_identity(pos: int) -> Tuple[List[str], Dict[str, int]]:
    """Render and write every image of the identity at position ``pos`` of the split."""
    g = _G
    split, seed = g["split"], g["seed"]
    S, U = g["styles"], g["user"]
    n_ids, offset = g["n_ids"], g["offset"]
    images, labels = g["images"], g["labels"]
    hidden = g["hidden"]
    src = offset + pos
    pair_id = PAIR_ID_BASE[split] + src
    rng = _rng(seed, split, src)
    category = CATEGORIES[int(labels[src])][1]
    crop, p95 = _source_crop(images[src])

    combos = rng.choice(len(COLORS) * len(PATTERNS), size=S, replace=False)
    per_id = S * (1 + U)
    captions: List[str] = []
    stats = {"shop": 0, "user": 0, "distractors": 0, "captions": 0}
    for si, combo in enumerate(combos):
        style = si + 1
        cname, crgb = COLORS[int(combo) // len(PATTERNS)]
        pattern = PATTERNS[int(combo) % len(PATTERNS)]
        params = style_params(rng, pattern)
        garment = np.asarray(crgb, np.float32)
        for k in range(1 + U):
            number = pos * per_id + si * (1 + U) + k + 1
            name = f"{number:06d}"
            if k == 0:
                source = "shop"
                img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
                img[:] = SHOP_BG
                layer = render_layer(crop, p95, SHOP_LONG_SIDE * IMAGE_SIZE, 0.0, crgb,
                                     pattern, params, rng)
                h, w = layer.mask.shape
                mask = _paste(img, layer, (IMAGE_SIZE - w) // 2, (IMAGE_SIZE - h) // 2)
                items = [_item(category, style, mask, 0.0, cname, pattern)]
            else:
                source = "user"
                img = user_background(rng, garment)
                frac = float(rng.uniform(*USER_SCALE))
                layer = _place_user(rng, crop, p95, frac, crgb, pattern, params)
                h, w = layer.mask.shape
                x = int(rng.integers(0, IMAGE_SIZE - w + 1))
                y = int(rng.integers(0, IMAGE_SIZE - h + 1))
                dist = None
                if n_ids > 1 and rng.random() < g["distractor_rate"]:
                    dpos = int(rng.integers(n_ids - 1))
                    dpos += dpos >= pos
                    dsrc = offset + dpos
                    dcat = CATEGORIES[int(labels[dsrc])][1]
                    dcrop, dp95 = _source_crop(images[dsrc])
                    dcombo = int(rng.integers(len(COLORS) * len(PATTERNS)))
                    dcname, dcrgb = COLORS[dcombo // len(PATTERNS)]
                    dpattern = PATTERNS[dcombo % len(PATTERNS)]
                    dparams = style_params(rng, dpattern)
                    dfrac = float(rng.uniform(*DISTRACTOR_SCALE))
                    dlayer = _place_user(rng, dcrop, dp95, dfrac, dcrgb, dpattern, dparams)
                    front = bool(rng.random() < 0.5)
                    main_full = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
                    main_full[y:y + h, x:x + w] = layer.mask
                    dh, dw = dlayer.mask.shape
                    best = None
                    for _ in range(12):
                        dx = int(rng.integers(0, IMAGE_SIZE - dw + 1))
                        dy = int(rng.integers(0, IMAGE_SIZE - dh + 1))
                        dfull = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
                        dfull[dy:dy + dh, dx:dx + dw] = dlayer.mask
                        overlap = int(np.count_nonzero(dfull & main_full))
                        # the covered garment's hidden fraction
                        under = dfull if not front else main_full
                        frac_hidden = overlap / max(int(np.count_nonzero(under)), 1)
                        if best is None or frac_hidden < best[0]:
                            best = (frac_hidden, dx, dy, dfull)
                        if frac_hidden <= 0.3:
                            break
                    if best[0] <= 0.5:
                        dist = (dlayer, best[1], best[2], front, dcat, dcname, dpattern,
                                PAIR_ID_BASE[split] + dsrc)
                if dist is None:
                    mask = _paste(img, layer, x, y)
                    items = [_item(category, style, mask, 0.0, cname, pattern)]
                else:
                    dlayer, dx, dy, front, dcat, dcname, dpattern, dpair = dist
                    if front:
                        mask = _paste(img, layer, x, y)
                        dmask = _paste(img, dlayer, dx, dy)
                    else:
                        dmask = _paste(img, dlayer, dx, dy)
                        mask = _paste(img, layer, x, y)
                    ov = np.count_nonzero(mask & dmask)
                    main_hidden = ov / np.count_nonzero(mask) if front else 0.0
                    d_hidden = 0.0 if front else ov / np.count_nonzero(dmask)
                    d_item = _item(dcat, 0, dmask, d_hidden, dcname, dpattern)
                    d_item["own_pair_id"] = dpair
                    items = [_item(category, style, mask, main_hidden, cname, pattern), d_item]
                    stats["distractors"] += 1
                img *= float(rng.uniform(0.85, 1.15))
            anno: Dict = {"source": source, "pair_id": pair_id}
            for i, it in enumerate(items):
                anno[f"item{i + 1}"] = it
            with open(os.path.join(g["dir"], "image", name + ".jpg"), "wb") as f:
                f.write(_encode_jpeg(img))
            with open(os.path.join(g["dir"], "annos", name + ".json"), "w") as f:
                f.write(json.dumps(anno))
            stats[source] += 1
            cap = make_caption(rng, cname, pattern, category, category in hidden,
                               g["parent_word_rate"])
            captions.append(json.dumps({"image": name + ".jpg", "item": "item1",
                                        "caption": cap}))
            stats["captions"] += 1
    return captions, stats


# ---------------------------------------------------------------------------------------
# Driver


def _generate_split(args, split: str, n_ids: int, offset: int, root: str) -> Dict:
    images, labels = load_source(SPLIT_SOURCE[split], args.source_dir)
    if offset < 0 or offset + n_ids > len(images):
        raise SystemExit(f"{split}: identities {offset}..{offset + n_ids - 1} outside the "
                         f"{len(images)} Fashion-MNIST '{SPLIT_SOURCE[split]}' images")
    tmp = os.path.join(root, f".{split}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "image"))
    os.makedirs(os.path.join(tmp, "annos"))
    state = {
        "split": split, "seed": args.seed, "styles": args.styles, "user": args.user,
        "n_ids": n_ids, "offset": offset, "images": images, "labels": labels,
        "hidden": set(args.hidden), "distractor_rate": args.distractor_rate,
        "parent_word_rate": args.parent_word_rate, "dir": tmp,
    }
    t0 = time.time()
    totals = {"shop": 0, "user": 0, "distractors": 0, "captions": 0}
    step = max(1, n_ids // 10)
    with open(os.path.join(tmp, "captions.jsonl"), "w") as cap_file:
        def consume(result, done):
            caps, st = result
            for line in caps:
                cap_file.write(line + "\n")
            for key in totals:
                totals[key] += st[key]
            if done % step == 0 or done == n_ids:
                print(f"[fashionworld] {split}: {done}/{n_ids} identities, "
                      f"{totals['shop'] + totals['user']} images, {time.time() - t0:.1f}s",
                      flush=True)

        if args.workers <= 1:
            _init_worker(state)
            for i in range(n_ids):
                consume(generate_identity(i), i + 1)
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(args.workers, initializer=_init_worker, initargs=(state,)) as pool:
                chunk = max(1, min(64, n_ids // (args.workers * 8) or 1))
                for i, res in enumerate(pool.imap(generate_identity, range(n_ids), chunk)):
                    consume(res, i + 1)
    final = os.path.join(root, split)
    if os.path.exists(final):
        old = os.path.join(root, f".{split}.old{os.getpid()}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    label_counts = np.bincount(labels[offset:offset + n_ids], minlength=10)
    return {
        "identities": n_ids,
        "source": SPLIT_SOURCE[split],
        "source_offset": offset,
        "pair_id_range": [PAIR_ID_BASE[split] + offset, PAIR_ID_BASE[split] + offset + n_ids - 1],
        "shop_images": totals["shop"],
        "user_images": totals["user"],
        "images": totals["shop"] + totals["user"],
        "items": totals["shop"] + totals["user"] + totals["distractors"],
        "distractor_items": totals["distractors"],
        "captions": totals["captions"],
        "identities_per_category": {CATEGORIES[i][1]: int(c) for i, c in enumerate(label_counts)},
    }


def world_options(args) -> Dict:
    return {
        "styles": args.styles, "user": args.user, "hidden": list(args.hidden),
        "parent_word_rate": args.parent_word_rate, "distractor_rate": args.distractor_rate,
        "image_size": IMAGE_SIZE, "jpeg_quality": 95,
    }


def parse_args(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(prog="python3 -m ctok_py.fashionworld",
                                description="Generate the FashionWorld data set "
                                            "(specs/fashionworld.md).")
    p.add_argument("--out", required=True, help="output root, e.g. data/fashionworld")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--splits", default="train,validation")
    p.add_argument("--train-ids", type=int, default=6000)
    p.add_argument("--val-ids", type=int, default=1000)
    p.add_argument("--id-offset-train", type=int, default=0,
                   help="first Fashion-MNIST train index used by the train split")
    p.add_argument("--id-offset-val", type=int, default=0,
                   help="first Fashion-MNIST test index used by the validation split")
    p.add_argument("--styles", type=int, default=3, help="styles per identity (S)")
    p.add_argument("--user", type=int, default=3, help="user images per (identity, style) (U)")
    p.add_argument("--hidden", default="sneaker,shirt",
                   help="comma-separated hidden categories ('' for none)")
    p.add_argument("--parent-word-rate", type=float, default=0.3)
    p.add_argument("--distractor-rate", type=float, default=0.3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--source-dir", default=SOURCE_DIR)
    args = p.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    for s in args.splits:
        if s not in SPLIT_SOURCE:
            p.error(f"unknown split '{s}' (train, validation)")
    args.hidden = [h.strip() for h in args.hidden.split(",") if h.strip()]
    for h in args.hidden:
        if h not in CATEGORY_BY_NAME:
            p.error(f"unknown hidden category '{h}'")
    if args.seed < 0:
        p.error("--seed must be >= 0")
    if not 1 <= args.styles <= len(COLORS) * len(PATTERNS):
        p.error("--styles must be in 1..40")
    if args.user < 0:
        p.error("--user must be >= 0")
    return args


def generate(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    root = args.out
    os.makedirs(root, exist_ok=True)
    world_path = os.path.join(root, "world.json")
    previous = None
    if os.path.exists(world_path):
        try:
            with open(world_path) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None
        os.remove(world_path)  # world.json present = world complete
    t0 = time.time()
    splits: Dict[str, Dict] = {}
    for split in args.splits:
        n = args.train_ids if split == "train" else args.val_ids
        off = args.id_offset_train if split == "train" else args.id_offset_val
        splits[split] = _generate_split(args, split, n, off, root)
    # Keep other splits of a compatible earlier run (same seed and world options).
    if (previous and previous.get("version") == VERSION and previous.get("seed") == args.seed
            and previous.get("options") == world_options(args)):
        for name, info in previous.get("splits", {}).items():
            if name not in splits and os.path.isdir(os.path.join(root, name)):
                splits[name] = info
    elapsed = time.time() - t0
    world = {
        "generator": GENERATOR,
        "version": VERSION,
        "seed": args.seed,
        "options": world_options(args),
        "splits": {k: splits[k] for k in sorted(splits)},
        "categories": [{"id": cid, "name": name, "parent": parent, "hidden": name in args.hidden}
                       for cid, name, parent in CATEGORIES],
        "parents": PARENTS,
        "colors": [{"name": n, "rgb": list(rgb)} for n, rgb in COLORS],
        "patterns": PATTERNS,
        "caption_words": list(CAPTION_WORDS),
        "pair_id_base": PAIR_ID_BASE,
        "source": "Fashion-MNIST (Zalando, MIT licence), " + args.source_dir,
    }
    tmp = world_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(world, f, indent=1)
        f.write("\n")
    os.replace(tmp, world_path)
    n_img = sum(splits[s]["images"] for s in args.splits)
    print(f"[fashionworld] wrote {n_img} images in {elapsed:.1f}s "
          f"({n_img / max(elapsed, 1e-9):.0f} images/s, {args.workers} workers) -> {root}",
          flush=True)
    return world


# ---------------------------------------------------------------------------------------
# Readers


def load_split(root: str, split: str) -> List[Dict]:
    """Annotations of a split, sorted by image name.

    Each dict is the annotation JSON (``source``, ``pair_id``, ``item1``...) plus
    ``image`` (file name, e.g. ``"000001.jpg"``), ``image_path`` and ``anno_path``.
    """
    anno_dir = os.path.join(root, split, "annos")
    out = []
    for fn in sorted(os.listdir(anno_dir)):
        if not fn.endswith(".json"):
            continue
        path = os.path.join(anno_dir, fn)
        with open(path) as f:
            anno = json.load(f)
        stem = fn[:-5]
        anno["image"] = stem + ".jpg"
        anno["image_path"] = os.path.join(root, split, "image", stem + ".jpg")
        anno["anno_path"] = path
        out.append(anno)
    return out


def load_captions(root: str, split: str) -> List[Dict]:
    """captions.jsonl of a split as a list of {"image", "item", "caption"} dicts."""
    with open(os.path.join(root, split, "captions.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_world(root: str) -> Dict:
    with open(os.path.join(root, "world.json")) as f:
        return json.load(f)


def items(anno: Dict) -> List[Tuple[str, Dict]]:
    """(key, item) pairs of an annotation in order: item1, item2, ..."""
    out = []
    i = 1
    while f"item{i}" in anno:
        out.append((f"item{i}", anno[f"item{i}"]))
        i += 1
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    generate(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
