#!/usr/bin/python3
"""The loops of bench_model.cpp in Python (Debian python3-torch), on the same bundle.

    /usr/bin/python3 bench/bench_model.py [--bundle models/default] [--threads 2] [--reps 5]
                                          [--render-n 4] [--steps 50] [--json out.json]

Measures, like the C++ bench: image encoding images/s at batch 1/32/256 (the TorchScript
forward on ready pixels); text encodings/s at batch 1 and 32 from prompt strings
(SentencePiece tokenisation, bos/eos/pad, token_embedding lookup, forward); seconds per
rendered image (tokenise + encode prompt and empty prompt, DDIM 50 steps with classifier-
free guidance 5, VAE decode). Best and median of --reps after two warm-ups. Everything runs under
torch.inference_mode(), which is what a careful Python user would write.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

PROMPTS = ["a photo of a red striped dress", "a photo of a blue shoe", "a photo of a black bag with dots",
           "a close-up photo of a green top", "a photo of a yellow checked dress", "a photo of a grey trousers",
           "a picture of a purple top with stripes", "a photo of a pink shoe"]


def timeit(fn, reps):
    """(best, median) seconds of `reps` calls after two warm-ups, as bench_model.cpp."""
    fn()
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out), statistics.median(out)


class Tokenizer:
    def __init__(self, bundle_dir, manifest):
        tok = manifest["tokenizer"]
        if tok["type"] != "sentencepiece":
            raise SystemExit("bench_model.py tokenises SentencePiece bundles only")
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(bundle_dir, tok["file"]))
        t = manifest["text"]
        self.L, self.bos, self.eos, self.pad = t["context_length"], t["bos_id"], t["eos_id"], t["pad_id"]

    def __call__(self, prompts):
        ids = torch.full((len(prompts), self.L), self.pad, dtype=torch.long)
        eos = torch.empty(len(prompts), dtype=torch.long)
        for i, p in enumerate(prompts):
            body = self.sp.encode(p)[: self.L - 2]
            row = [self.bos] + body + [self.eos]
            ids[i, : len(row)] = torch.tensor(row)
            eos[i] = len(row) - 1
        return ids, eos


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--bundle", default=os.path.join(here, "..", "models", "default"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--render-n", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--skip-render", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = json.load(open(os.path.join(a.bundle, "bundle.json")))
    load = lambda f: torch.jit.load(os.path.join(a.bundle, f)).eval()
    text = load(m["text"]["file"])
    image = load(m["image"]["file"])
    table = text.token_embedding
    tok = Tokenizer(a.bundle, m)
    S = m["image"]["size"]
    results = []
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, threads {torch.get_num_threads()}, reps {a.reps}")

    def report(what, unit, work, t, rate=True):
        best, med = (work / t[0], work / t[1]) if rate else (t[0] / work, t[1] / work)
        print(f"{'python':<12} {what:<38} {best:11.4g} {unit:<4}   median {med:.4g}")
        results.append({"measure": what, "unit": unit, "python": best, "python_median": med})

    with torch.inference_mode():
        for B in (1, 32, 256):
            px = torch.randn(B, 3, S, S)
            t = timeit(lambda: image(px), max(3, a.reps // 2) if B >= 256 else a.reps)
            report(f"image enc batch {B}", "im/s", B, t)
        for B in (1, 32):
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(B)]

            def encode():
                ids, eos = tok(prompts)
                return text(table[ids], eos)
            t = timeit(encode, a.reps * 4)
            report(f"text enc batch {B} (from strings)", "tx/s", B, t)
        if not a.skip_render and m.get("diffusion"):
            d = m["diffusion"]
            unet = load(d["unet"])
            dec = load(d["vae_decoder"]) if d.get("vae_decoder") else None
            T = d["num_train_timesteps"]
            if d["beta_schedule"] == "linear":
                betas = torch.linspace(d["beta_start"], d["beta_end"], T, dtype=torch.float64)
            else:
                betas = torch.linspace(d["beta_start"] ** 0.5, d["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
            acp = torch.cumprod(1.0 - betas, 0).tolist()
            steps, n, g = a.steps, a.render_n, 5.0
            ts = [round(T - i * T / steps) - 1 for i in range(steps)]  # trailing, as ctok-render
            C, h = d["latent_channels"], d["latent_size"]

            def render():
                ids, eos = tok([PROMPTS[0], ""])
                hidden, _ = text(table[ids], eos)
                ctx = torch.cat([hidden[1:2].expand(n, -1, -1), hidden[0:1].expand(n, -1, -1)])
                gen = [torch.Generator().manual_seed(i) for i in range(n)]
                x = torch.stack([torch.randn((C, h, h), generator=gi) for gi in gen])
                for i, t in enumerate(ts):
                    at, ap_ = acp[t], (acp[ts[i + 1]] if i + 1 < len(ts) else 1.0)
                    eu, ec = unet(torch.cat([x, x]), torch.full((2 * n,), t, dtype=torch.long), ctx).chunk(2)
                    eps = eu + g * (ec - eu)
                    x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
                    x = math.sqrt(ap_) * x0 + math.sqrt(1 - ap_) * eps
                img = dec(x) if dec is not None else x
                return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            t = timeit(render, max(2, a.reps // 2))
            report(f"render ({steps} DDIM, cfg, n={n})", "s/im", n, t, rate=False)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "reps": a.reps, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
