#!/usr/bin/python3
"""Makes the small SentencePiece fixture for tests/unit/test_text_spm.cpp.

Run with Debian's interpreter (python3-sentencepiece) from the repository root:
    /usr/bin/python3 tests/data/text/make_spm_fixture.py
Writes tests/data/text/spm-tiny.model (unigram, vocab 100; pad=0 bos=1 eos=2 unk=3),
trained on a few hundred synthetic captions, and tests/data/text/spm-tiny-expected.json:
ids and pieces that Python's sentencepiece gives for a few texts with the committed model,
which the C++ side must reproduce exactly.
"""
import io
import json
import os
import random

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "spm-tiny.model")
EXPECTED = os.path.join(HERE, "spm-tiny-expected.json")

COLOURS = ["red", "blue", "green", "black", "white", "pink", "beige", "navy", "teal", "purple"]
PATTERNS = ["striped", "floral", "plaid", "dotted", "plain", "checked", "leopard-print"]
ITEMS = ["dress", "skirt", "t-shirt", "pullover", "coat", "vest", "shorts", "trousers",
         "sandal", "sneaker", "bag", "ankle boot", "short sleeve top", "long sleeve outwear"]
TEMPLATES = ["a photo of a {}.", "a cropped photo of the {}", "a {} worn by a model",
             "the {} is for sale", "a close-up photo of my {}!", "a dark photo of the {}?",
             "{} on a white background", "a rendition of a {} (size 42)"]


def captions(n, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(COLOURS)]
        if rng.random() < 0.6:
            words.append(rng.choice(PATTERNS))
        words.append(rng.choice(ITEMS))
        text = rng.choice(TEMPLATES).format(" ".join(words))
        if rng.random() < 0.3:
            text = text.capitalize()
        out.append(text)
    return out


def train():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions(400)),
        model_writer=model,
        model_type="unigram",
        vocab_size=100,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    with open(MODEL, "wb") as f:
        f.write(model.getvalue())


TEXTS = [
    "a photo of a red dress",
    "A Cropped Photo Of The Blue Striped Skirt",
    "the leopard-print ankle boot is for sale",
    "  leading and   inner spaces  ",
    "",
    "a photo of a zebra",            # letters outside the training set
    "東京の赤いドレス 👗",              # unknown characters -> unk
    "a green plaid coat (size 42)!",
    "dress",
    "x",
]


def record():
    sp = spm.SentencePieceProcessor(model_file=MODEL)
    cases = []
    for text in TEXTS:
        cases.append({"text": text,
                      "ids": sp.encode(text),
                      "pieces": sp.encode(text, out_type=str)})
    out = {
        "model": "spm-tiny.model",
        "vocab_size": sp.get_piece_size(),
        "bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(), "unk": sp.unk_id(),
        "pieces": [sp.id_to_piece(i) for i in range(sp.get_piece_size())],
        "cases": cases,
    }
    with open(EXPECTED, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    train()
    record()
    print("wrote", MODEL, os.path.getsize(MODEL), "bytes and", EXPECTED)
