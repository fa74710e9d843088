"""Move training checkpoints between machines with different torch versions.

The default bundle's stages may train on a GPU machine whose torch is newer than the one
that exports the bundle (TorchScript files must be written by the torch the C++ side
links, Debian's). Pickled checkpoints are not guaranteed to load across versions; a
safetensors file is. ``pack`` flattens a checkpoint (nested dicts of tensors and plain
values) into safetensors with the plain values as JSON metadata; ``unpack`` rebuilds it.

    python3 -m ctok_py.portable pack WORK/clip.pt clip.safetensors
    python3 -m ctok_py.portable unpack clip.safetensors WORK/clip.pt
"""
from __future__ import annotations

import json
import os
import sys

import torch

from ctok_py.wrappers import load_safetensors, save_safetensors, torch_load_cpu

SEP = "/"


def _flatten(obj, prefix: str, tensors: dict, plain: dict) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if SEP in str(k):
                raise ValueError(f"key {k!r} contains {SEP!r}")
            _flatten(v, f"{prefix}{k}{SEP}", tensors, plain)
    elif isinstance(obj, torch.Tensor):
        tensors[prefix[:-1]] = obj.detach().cpu()
    else:
        plain[prefix[:-1]] = obj


def pack(src: str, dst: str) -> None:
    obj = torch_load_cpu(src)
    tensors, plain = {}, {}
    _flatten(obj, "", tensors, plain)
    save_safetensors(dst, tensors, {"ctok.portable": json.dumps(plain)})


def unpack(src: str, dst: str) -> None:
    tensors, meta = load_safetensors(src)
    if "ctok.portable" not in meta:
        raise ValueError(f"{src}: not written by ctok_py.portable pack")
    obj: dict = {}
    items = list(tensors.items()) + list(json.loads(meta["ctok.portable"]).items())
    for key, value in items:
        parts = key.split(SEP)
        d = obj
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    torch.save(obj, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        print(__doc__, file=sys.stderr)
        return 2
    (pack if argv[0] == "pack" else unpack)(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
