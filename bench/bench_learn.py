#!/usr/bin/env python3
"""The Python loop equivalent to one ctok-learn step, on the same bundle, for timing.

    OMP_NUM_THREADS=2 /usr/bin/python3 bench/bench_learn.py [--bundle models/default]
        [--steps 30] [--batch 4] [--threads 2] [--json out.json]

What one step does (as the C++ learner with its defaults): B prompts from the template list
with the token's vector in place -> text encoder (hidden, features); inversion loss: UNet on
cached latents + noise at a uniform timestep, MSE to the noise; text-side classification:
cross-entropy over [token prompt, parent + sibling prompts] with the bundle's logit_scale on
cached image features; backward to the vector only; torch.optim.AdamW step. Latents and
image features are computed once before timing (random pixels: the timing does not depend on
the values). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

TEMPLATES = ["a photo of a {} {}", "a rendering of a {} {}", "a cropped photo of the {} {}",
             "a photo of my {} {}", "a close-up photo of a {} {}", "a bright photo of a {} {}",
             "a dark photo of a {} {}", "a good photo of a {} {}"]


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=os.path.join(root, "models", "default"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--lambda-inv", type=float, default=1.0)
    p.add_argument("--lambda-cls", type=float, default=0.1)
    p.add_argument("--parent", default="shoe")
    p.add_argument("--siblings", default="sandal,ankle boot")
    p.add_argument("--json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    import sentencepiece as spm

    m = json.load(open(os.path.join(a.bundle, "bundle.json")))
    text = torch.jit.load(os.path.join(a.bundle, m["text"]["file"])).eval()
    image = torch.jit.load(os.path.join(a.bundle, m["image"]["file"])).eval()
    d = m["diffusion"]
    unet = torch.jit.load(os.path.join(a.bundle, d["unet"])).eval()
    vae = torch.jit.load(os.path.join(a.bundle, d["vae_encoder"])).eval()
    for mod in (text, image, unet, vae):
        for q in mod.parameters():
            q.requires_grad_(False)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(a.bundle, m["tokenizer"]["file"]))
    L, bos, eos, pad = (m["text"][k] for k in ("context_length", "bos_id", "eos_id", "pad_id"))
    table = text.token_embedding.detach()
    T = d["num_train_timesteps"]
    betas = torch.linspace(d["beta_start"] ** 0.5, d["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0).float()

    def tokenize(prompt: str):
        """ids [L], eos index, and the position of the token ('{}' slot) or -1."""
        ids, slot = [bos], -1
        before, sep, after = prompt.partition("\x00")
        ids += sp.encode(before)
        if sep:
            slot = len(ids)
            ids.append(pad)
            ids += sp.encode(after)
        ids = ids[: L - 1] + [eos]
        e = len(ids) - 1
        return ids + [pad] * (L - len(ids)), e, slot

    parent = a.parent
    tok_prompts = [tokenize(t.format("\x00", parent)) for t in TEMPLATES]
    keep = [i for i, r in enumerate(tok_prompts) if 0 < r[2] < L - 1]  # the token must fit
    tok_prompts = [tok_prompts[i] for i in keep]
    TEMPLATES[:] = [TEMPLATES[i] for i in keep]
    negs = [parent] + [s for s in a.siblings.split(",") if s]
    with torch.no_grad():
        n_ids = []
        for t in TEMPLATES:
            for w in negs:
                words = t.format("", w).split()
                for i in range(len(words) - 1):  # "a ankle boot" -> "an ankle boot"
                    if words[i] == "a" and words[i + 1][0] in "aeiou":
                        words[i] = "an"
                n_ids.append(tokenize(" ".join(words))[:2])
        ids = torch.tensor([x[0] for x in n_ids])
        _, nf = text(table[ids], torch.tensor([x[1] for x in n_ids]))
        neg_feats = torch.nn.functional.normalize(nf, dim=-1).reshape(len(TEMPLATES), len(negs), -1)
        S, V = m["image"]["size"], 8
        pix = torch.rand(a.images * V, 3, S, S) * 2 - 1
        feats = torch.nn.functional.normalize(image(pix), dim=-1)
        lat = vae(torch.rand(a.images * V, 3, d["image_size"], d["image_size"]) * 2 - 1)

    v = table[sp.encode(parent)].mean(0, keepdim=True).clone().requires_grad_(True)
    opt = torch.optim.AdamW([v], lr=5e-3, weight_decay=0.0)
    scale = float(m["logit_scale"])
    gen = torch.Generator().manual_seed(0)

    def step():
        B = a.batch
        idx = torch.randint(0, a.images * V, (B,), generator=gen)
        tp = torch.randint(0, len(TEMPLATES), (B,), generator=gen)
        rows = [tok_prompts[int(i)] for i in tp]
        ids = torch.tensor([r[0] for r in rows])
        emb = table[ids].clone()
        emb[torch.arange(B), torch.tensor([r[2] for r in rows])] = v[0]
        hidden, f = text(emb, torch.tensor([r[1] for r in rows]))
        loss = torch.zeros(())
        if a.lambda_inv > 0:
            z0 = lat[idx]
            noise = torch.randn(z0.shape, generator=gen)
            t = torch.randint(0, T, (B,), generator=gen)
            ab = acp[t].view(-1, 1, 1, 1)
            zt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
            loss = loss + a.lambda_inv * torch.nn.functional.mse_loss(unet(zt, t, hidden), noise)
        if a.lambda_cls > 0:
            g = feats[idx]
            tf = torch.nn.functional.normalize(f, dim=-1)
            pos = (g * tf).sum(-1, keepdim=True)
            neg = torch.bmm(neg_feats[tp], g.unsqueeze(2)).squeeze(2)
            logits = scale * torch.cat([pos, neg], 1)
            loss = loss + a.lambda_cls * torch.nn.functional.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {"bundle": m["name"], "batch": a.batch, "steps": a.steps, "threads": a.threads,
           "python_step_s_median": round(statistics.median(times), 5),
           "python_step_s_mean": round(statistics.mean(times), 5),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "torch": torch.__version__}
    line = json.dumps(out)
    print(line)
    if a.json:
        with open(a.json, "w") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
