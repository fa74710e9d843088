"""Train, export and measure the default FashionWorld bundle (bundle.md).

    PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.train_default \\
        --data data/fashionworld --out models/default [--seed 0] [--work data/train-work]

Stages (each checkpointed in --work, so a rerun resumes): tokenizer, clip, vae, unet,
clip2, export, evaluate. ``--stages`` runs a subset; stages may run in parallel processes
on one --work (clip beside vae, unet beside clip2). Budgets are minutes of wall time: the
learning rate follows warm-up + cosine over the budget. ``--device cuda`` trains on a GPU
(scripts/train_default_gpu.sh); export must run under the torch the C++ side links.

This module is the command line only; the work lives in ctok_py.default_models: nets
(architectures), data (tokenizer, images, caches), training (the stages and their loop),
evaluation, export (the bundle, through ctok_py.bundle_writer) and model_card (--docs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from ctok_py.default_models import common
from ctok_py.default_models.common import log
from ctok_py.default_models.evaluation import stage_evaluate
from ctok_py.default_models.export import stage_export
from ctok_py.default_models.model_card import write_docs
from ctok_py.default_models.training import (Ctx, stage_clip, stage_clip2, stage_tokenizer,
                                             stage_unet, stage_vae)

STAGES = ["tokenizer", "clip", "vae", "unet", "clip2", "export", "evaluate"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m ctok_py.train_default",
                                description="Train, export and measure the default bundle.")
    p.add_argument("--data", required=True, help="FashionWorld root (train + validation)")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--work", default="data/train-work", help="checkpoints, caches, logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--redo", default="", help="stages to rerun even if done")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    p.add_argument("--clip-colour-groups", type=float, default=0.5,
                   help="share of CLIP batches drawn from two colours only")
    p.add_argument("--hidden", default="sneaker,shirt")
    p.add_argument("--max-steps", type=int, default=0, help="cap every stage (debugging)")
    p.add_argument("--clip-minutes", type=float, default=20.0)
    p.add_argument("--clip-batch", type=int, default=128)
    p.add_argument("--clip-lr", type=float, default=2e-3)
    p.add_argument("--clip2-minutes", type=float, default=22.0,
                   help="second CLIP phase, text transformer frozen (runs beside the UNet)")
    p.add_argument("--crop-rate", type=float, default=0.5, help="box crops vs full images")
    p.add_argument("--synth-rate", type=float, default=0.5, help="synthesised captions")
    p.add_argument("--vae-minutes", type=float, default=4.0)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--vae-kl", type=float, default=1e-3)
    p.add_argument("--unet-minutes", type=float, default=30.0)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-views", type=int, default=30000, help="images encoded for the UNet")
    p.add_argument("--unet-lr", type=float, default=2e-3)
    p.add_argument("--unet-init", default="",
                   help="unet.pt of an earlier run to continue from (raw and EMA weights)")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--render-prompts", type=int, default=96)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--docs", default="docs/default-models.md")
    a = p.parse_args(argv)
    a.hidden = [h for h in a.hidden.split(",") if h]
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = a.device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    common.DEV = torch.device(dev)
    if common.DEV.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    os.makedirs(a.work, exist_ok=True)
    log.path = os.path.join(a.work, "train.log")
    log("args:", vars(a))
    ctx = Ctx(a)
    res_path = ctx.path("results.json")
    results = {}
    if os.path.exists(res_path):
        with open(res_path) as f:
            results = json.load(f)
    for stage in STAGES:  # per-stage files win: stages may run in parallel processes
        p = ctx.path(f"result_{stage}.json")
        if os.path.exists(p):
            with open(p) as f:
                results[stage] = json.load(f)
    redo = set(s for s in a.redo.split(",") if s)
    for stage in [s for s in a.stages.split(",") if s]:
        if stage not in STAGES:
            raise SystemExit(f"unknown stage {stage} ({', '.join(STAGES)})")
        if stage in results and stage not in redo and stage not in ("export", "evaluate"):
            log(f"{stage}: done before, skipped")
            continue
        t0 = time.time()
        log(f"== stage {stage}")
        if stage == "tokenizer":
            r = stage_tokenizer(ctx)
        elif stage == "clip":
            r = stage_clip(ctx)
        elif stage == "vae":
            r = stage_vae(ctx)
        elif stage == "unet":
            r = stage_unet(ctx)
        elif stage == "clip2":
            r = stage_clip2(ctx)
        elif stage == "export":
            r = stage_export(ctx, results)
        else:
            r = stage_evaluate(ctx, results)
        r["wall_seconds"] = round(time.time() - t0, 1)
        results[stage] = r
        with open(ctx.path(f"result_{stage}.json"), "w") as f:
            json.dump(r, f, indent=1)
        with open(res_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(res_path + ".tmp", res_path)
        if stage == "evaluate" and a.docs:
            write_docs(a, results)
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
