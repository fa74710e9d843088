"""Tokenizer, image preprocessing and augmentation, FashionWorld caches and the caption space."""
from __future__ import annotations

import json
import os
import random
import time
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ctok_py.default_models.common import (BOS_ID, CATEGORIES, COLOURS, CONTEXT_LENGTH, EOS_ID,
                                           GENERIC_NOUN, IMAGE_SIZE, PAD_ID, PARENTS, PATTERNS,
                                           PATTERN_NOUNS, PREFIXES, UNK_ID, log)
from ctok_py.wrappers import TextEncoderWrapper, torch_load_cpu as tload

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
