"""Constants, the log and the training device shared by the default-model modules."""
from __future__ import annotations

import time
from typing import Optional

import torch

CONTEXT_LENGTH = 16
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
IMAGE_SIZE = 32
LATENT_CHANNELS = 4
LATENT_SIZE = 8

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
