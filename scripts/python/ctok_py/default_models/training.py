"""Training stages of the default models (tokenizer, clip, vae, unet, clip2) and their loop."""
from __future__ import annotations

import math
import os
import random
import time
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctok_py import ddim
from ctok_py.ddim import NUM_TRAIN_TIMESTEPS
from ctok_py.default_models import common
from ctok_py.default_models.common import (CATEGORIES, COLOURS, EXTRA_WORDS, PARENTS, PATTERNS,
                                           log)
from ctok_py.default_models.data import (CaptionSpace, Tokenizer, augment, build_cache,
                                         encode_text, to_pixels, train_tokenizer)
from ctok_py.default_models.evaluation import quick_zero_shot
from ctok_py.default_models.nets import (LatentUNet, VaeDecoder, VaeEncoder, make_image_encoder,
                                         make_text_encoder, make_text_head, n_params)
from ctok_py.wrappers import ImageEncoderWrapper, TextEncoderWrapper, torch_load_cpu as tload


# ---------------------------------------------------------------------------------------
# checkpoints

def save_ckpt(path: str, obj: dict) -> None:
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * p)))


def timed_training(name: str, work: str, budget_min: float, step_fn, state: dict,
                   modules: Dict[str, nn.Module], opt, base_lr: float, max_steps: int = 0,
                   ckpt_every_s: float = 120.0, log_every: int = 50) -> dict:
    """Runs ``step_fn(step) -> loss`` for ``budget_min`` minutes of (resumable) wall time.

    The machine is shared, so the schedule follows time, not steps: the learning rate is a
    warm-up then cosine in the fraction of the budget spent; checkpoints to
    work/<name>.ckpt every ``ckpt_every_s``.
    """
    ck = os.path.join(work, name + ".ckpt")
    if os.path.exists(ck):
        saved = tload(ck)
        for k, m in modules.items():
            m.load_state_dict(saved["modules"][k])
        opt.load_state_dict(saved["opt"])
        state.update(saved["state"])
        torch.set_rng_state(saved["rng"])
        log(f"{name}: resumed at step {state['step']}, {state['seconds']:.0f}s spent")
    state.setdefault("step", 0)
    state.setdefault("seconds", 0.0)
    state.setdefault("losses", [])
    budget = budget_min * 60.0
    last_ck = time.time()
    t_start = time.time()
    s0 = state["seconds"]
    run_loss = state.get("run_loss")
    while state["seconds"] < budget and not (max_steps and state["step"] >= max_steps):
        step = state["step"]
        p = state["seconds"] / budget
        warm = 0.05
        if p < warm:
            lr = base_lr * max(0.02, p / warm)
        else:
            q = (p - warm) / (1 - warm)
            lr = base_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * q)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = step_fn(step)
        run_loss = loss if run_loss is None else 0.98 * run_loss + 0.02 * loss
        state["run_loss"] = run_loss
        state["step"] = step + 1
        state["seconds"] = s0 + time.time() - t_start
        if step % log_every == 0:
            state["losses"].append((step, round(run_loss, 5)))
            log(f"{name} step {step} ({100 * p:.0f}% of {budget_min} min) loss {loss:.4f} "
                f"(avg {run_loss:.4f}) lr {lr:.2e} {step / max(1e-6, state['seconds']):.2f} steps/s")
        if time.time() - last_ck > ckpt_every_s:
            save_ckpt(ck, {"modules": {k: m.state_dict() for k, m in modules.items()},
                           "opt": opt.state_dict(), "state": state, "rng": torch.get_rng_state()})
            last_ck = time.time()
    state["final_loss"] = run_loss
    save_ckpt(ck, {"modules": {k: m.state_dict() for k, m in modules.items()},
                   "opt": opt.state_dict(), "state": state, "rng": torch.get_rng_state()})
    return state


# stages

class Ctx:
    """Shared state of a run: paths, options, lazily loaded caches and models."""

    def __init__(self, args):
        self.args = args
        self.work = args.work
        self._train = None
        self._val = None
        self.space = CaptionSpace(args.hidden)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    @property
    def train(self) -> dict:
        if self._train is None:
            self._train = build_cache(self.args.data, "train", self.path("cache_train.pt"))
        return self._train

    @property
    def val(self) -> dict:
        if self._val is None:
            self._val = build_cache(self.args.data, "validation", self.path("cache_val.pt"))
        return self._val

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.path("tokenizer.model"))

    def clip(self, base_only: bool = False) -> Tuple[TextEncoderWrapper, ImageEncoderWrapper, float]:
        tok = self.tokenizer()
        text = make_text_encoder(tok.vocab_size)
        image = make_image_encoder()
        d = tload(self.path("clip.pt"))
        text.load_state_dict(d["text"])
        image.load_state_dict(d["image"])
        scale = float(d["logit_scale"])
        if base_only or not os.path.exists(self.path("clip2.pt")):
            return text.eval(), image.eval(), scale
        d2 = tload(self.path("clip2.pt"))
        text.projection = make_text_head(text.token_embedding.shape[1], d2["feature_dim"])
        text.projection.load_state_dict(d2["head"])
        image.load_state_dict(d2["image"])
        return text.eval(), image.eval(), float(d2["logit_scale"])

    def vae(self) -> Tuple[VaeEncoder, VaeDecoder, float]:
        enc, dec = VaeEncoder(), VaeDecoder()
        d = tload(self.path("vae.pt"))
        enc.load_state_dict(d["enc"])
        dec.load_state_dict(d["dec"])
        return enc.eval(), dec.eval(), float(d["latent_scale"])

    def unet(self) -> LatentUNet:
        u = LatentUNet()
        u.load_state_dict(tload(self.path("unet.pt"))["unet"])
        return u.eval()


def stage_tokenizer(ctx: Ctx) -> dict:
    out = ctx.path("tokenizer.model")
    try:
        from ctok_py.fashionworld import CAPTION_WORDS
        words = list(CAPTION_WORDS)
    except ImportError:
        words = []
    words += CATEGORIES + list(PARENTS.values()) + COLOURS + PATTERNS + EXTRA_WORDS
    caps = ctx.train["cap_text"]
    rng = random.Random(ctx.args.seed)
    sample = rng.sample(caps, min(20000, len(caps)))
    train_tokenizer(sample, words, out)
    tok = Tokenizer(out)
    bad = [w for w in sorted(set(" ".join(words).split())) if len(tok.sp.encode(w)) != 1]
    if bad:
        raise RuntimeError(f"words not single pieces: {bad}")
    log(f"tokenizer: {tok.vocab_size} pieces; e.g. {tok.sp.encode(caps[0], out_type=str)}")
    return {"vocab_size": tok.vocab_size}


def _text_batch(tok: Tokenizer, texts: List[str], cache: dict) -> Tuple[Tensor, Tensor]:
    rows = []
    for t in texts:
        r = cache.get(t)
        if r is None:
            ids, eos = tok.encode([t])
            r = cache[t] = (ids[0], int(eos[0]))
        rows.append(r)
    ids = torch.stack([r[0] for r in rows])
    eos = torch.tensor([r[1] for r in rows])
    return ids, eos


def stage_clip(ctx: Ctx) -> dict:
    a = ctx.args
    tr = ctx.train
    tok = ctx.tokenizer()
    seed_all(a.seed)
    text = make_text_encoder(tok.vocab_size).to(common.DEV)
    image = make_image_encoder().to(common.DEV)
    scale = nn.Parameter(torch.tensor(math.log(10.0), device=common.DEV))
    log(f"clip: text {n_params(text)} params, image {n_params(image)} params")
    decay, no_decay = [], []
    for m in (text, image):
        for n, p in m.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in n else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay + [scale], "weight_decay": 0.0}],
                            lr=a.clip_lr, betas=(0.9, 0.98))
    caps = tr["cap_text"]
    parsed = torch.tensor([ctx.space.parse(c) for c in caps])
    cap_full, cap_crop, cap_attr = tr["cap_full"], tr["cap_crop"], tr["cap_attr"]
    usable = torch.nonzero((cap_full >= 0) | (cap_crop >= 0)).flatten()
    # Colour-grouped batches: every image of such a batch has one of two colours, so the
    # colour word cannot tell the captions apart and category and pattern must.
    by_colour = [usable[cap_attr[usable, 1] == c] for c in range(len(COLOURS))]
    full_d, crops_d = tr["full"].to(common.DEV), tr["crops"].to(common.DEV)
    gen = torch.Generator().manual_seed(a.seed + 1)
    rng = random.Random(a.seed + 2)
    tcache: dict = {}
    B = a.clip_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.text, self.image, self.scale = text, image, scale

    holder = Holder()

    def step_fn(step: int) -> float:
        text.train()
        image.train()
        idx = sample_batch(usable, by_colour, B, a.clip_colour_groups, gen)
        x = augment(to_pixels(image_batch(idx, cap_crop, cap_full, crops_d, full_d,
                                          a.crop_rate, gen)), gen)
        texts, desc = [], []
        for j in idx.tolist():
            if rng.random() < a.synth_rate:
                t, d = ctx.space.synth(tuple(cap_attr[j].tolist()), rng)
            else:
                t, d = caps[j], tuple(parsed[j].tolist())
            texts.append(t)
            desc.append(d)
        ids, eos = _text_batch(tok, texts, tcache)
        L = int(eos.max()) + 1  # causal: positions after the last eos change nothing pooled
        ids, eos = ids[:, :L].to(common.DEV), eos.to(common.DEV)
        _, tf = text(text.token_embedding[ids], eos)
        imf = image(x)
        tf = F.normalize(tf, dim=-1)
        imf = F.normalize(imf, dim=-1)
        loss = soft_clip_loss(imf, tf, scale, ctx.space.match(torch.tensor(desc), cap_attr[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(text.parameters()) + list(image.parameters()), 2.0)
        opt.step()
        return float(loss)

    st = timed_training("clip", ctx.work, a.clip_minutes, step_fn, {}, {"m": holder}, opt,
                        a.clip_lr, max_steps=a.max_steps)
    save_ckpt(ctx.path("clip.pt"), {"text": text.state_dict(), "image": image.state_dict(),
                                    "logit_scale": float(scale.exp().clamp(max=100.0))})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4),
           "logit_scale": round(float(scale.exp().clamp(max=100.0)), 3)}
    text.eval(), image.eval()
    res.update(quick_zero_shot(ctx, text, image, n=2000))
    log("clip:", res)
    return res


def sample_batch(usable: Tensor, by_colour: List[Tensor], b: int, grouped_rate: float,
                 gen: torch.Generator) -> Tensor:
    """Caption rows for one batch: uniform over ``usable``, or (with ``grouped_rate``) half
    from each of two random colours."""
    if grouped_rate <= 0 or float(torch.rand(1, generator=gen)) >= grouped_rate:
        return usable[torch.randint(len(usable), (b,), generator=gen)]
    cols = torch.randperm(len(by_colour), generator=gen)[:2].tolist()
    parts = []
    for k, c in enumerate(cols):
        pool = by_colour[c]
        n = b // 2 if k == 0 else b - b // 2
        parts.append(pool[torch.randint(len(pool), (n,), generator=gen)])
    return torch.cat(parts)


def image_batch(idx: Tensor, cap_crop: Tensor, cap_full: Tensor, crops: Tensor, full: Tensor,
                crop_rate: float, gen: torch.Generator) -> Tensor:
    """uint8 images of caption rows ``idx``: the item's box crop (rate ``crop_rate``, or
    when the caption has no whole image) else the whole image; on ``crops``' device."""
    dev = crops.device
    use_crop = torch.rand(len(idx), generator=gen) < crop_rate
    use_crop = (use_crop & (cap_crop[idx] >= 0)) | (cap_full[idx] < 0)
    return torch.where(use_crop[:, None, None, None].to(dev),
                       crops[cap_crop[idx].clamp(min=0).to(dev)],
                       full[cap_full[idx].clamp(min=0).to(dev)])


def soft_clip_loss(imf: Tensor, tf: Tensor, log_scale: Tensor, match: Tensor) -> Tensor:
    """Symmetric contrastive loss with soft targets: ``match`` [image, caption] marks every
    caption that fits an image (repeated captions are not negatives)."""
    logits = log_scale.exp().clamp(max=100.0) * imf @ tf.t()
    match = match.float().to(logits.device)
    t_i = match / match.sum(1, keepdim=True)
    t_t = match.t() / match.t().sum(1, keepdim=True)
    return 0.5 * (-(t_i * logits.log_softmax(1)).sum(1).mean()
                  - (t_t * logits.t().log_softmax(1)).sum(1).mean())


def stage_clip2(ctx: Ctx) -> dict:
    """Second CLIP phase with the text transformer frozen: a new MLP projection head on the
    pooled hidden state, and the image encoder, keep training contrastively.

    The text hidden states (the UNet's conditioning) stay exactly those of the first phase,
    so this can run while the UNet trains; and with the transformer frozen, every caption's
    pooled state is computed once, which makes a step about twice as cheap.
    """
    a = ctx.args
    tr = ctx.train
    tok = ctx.tokenizer()
    text, image, scale0 = ctx.clip(base_only=True)
    text.requires_grad_(False)
    text.to(common.DEV)
    image.to(common.DEV)
    seed_all(a.seed + 30)
    width = int(text.token_embedding.shape[1])
    head = make_text_head(width, 128).to(common.DEV)
    scale = nn.Parameter(torch.tensor(math.log(max(scale0, 10.0)), device=common.DEV))
    rng = random.Random(a.seed + 31)
    caps = tr["cap_text"]
    uniq = sorted(set(caps))
    cap_row = {c: i for i, c in enumerate(uniq)}
    parsed_u = [ctx.space.parse(c) for c in uniq]
    # synthesised captions: 24 per (category, colour, pattern)
    per = 24
    synth, synth_desc = [], []
    for cat in range(len(CATEGORIES)):
        for col in range(len(COLOURS)):
            for pat in range(len(PATTERNS)):
                for _ in range(per):
                    t, d = ctx.space.synth((cat, col, pat), rng)
                    synth.append(t)
                    synth_desc.append(d)
    texts = uniq + synth
    desc_all = torch.tensor(parsed_u + synth_desc)
    t0 = time.time()
    pooled = []
    with torch.no_grad():
        for i in range(0, len(texts), 512):
            ids, eos = tok.encode(texts[i:i + 512])
            ids, eos = ids.to(common.DEV), eos.to(common.DEV)
            h, _ = text(text.token_embedding[ids], eos)
            pooled.append(h[torch.arange(len(eos), device=common.DEV), eos])
    pooled = torch.cat(pooled)
    log(f"clip2: {len(texts)} captions pooled in {time.time() - t0:.0f}s")
    cap_rows = torch.tensor([cap_row[c] for c in caps])
    opt = torch.optim.AdamW([{"params": list(head.parameters()), "lr": a.clip_lr},
                             {"params": list(image.parameters()), "lr": a.clip_lr},
                             {"params": [scale], "lr": a.clip_lr, "weight_decay": 0.0}],
                            lr=a.clip_lr, weight_decay=0.01)
    cap_full, cap_crop, cap_attr = tr["cap_full"], tr["cap_crop"], tr["cap_attr"]
    usable = torch.nonzero((cap_full >= 0) | (cap_crop >= 0)).flatten()
    by_colour = [usable[cap_attr[usable, 1] == c] for c in range(len(COLOURS))]
    full_d, crops_d = tr["full"].to(common.DEV), tr["crops"].to(common.DEV)
    gen = torch.Generator().manual_seed(a.seed + 32)
    B = a.clip_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.head, self.image, self.scale = head, image, scale

    def step_fn(step: int) -> float:
        image.train()
        idx = sample_batch(usable, by_colour, B, a.clip_colour_groups, gen)
        x = augment(to_pixels(image_batch(idx, cap_crop, cap_full, crops_d, full_d,
                                          a.crop_rate, gen)), gen)
        attr = cap_attr[idx]
        combo = (attr[:, 0] * len(COLOURS) + attr[:, 1]) * len(PATTERNS) + attr[:, 2]
        srow = len(uniq) + combo * per + torch.randint(per, (B,), generator=gen)
        use_synth = torch.rand(B, generator=gen) < a.synth_rate
        rows = torch.where(use_synth, srow, cap_rows[idx])
        tf = F.normalize(head(pooled[rows.to(common.DEV)]), dim=-1)
        imf = F.normalize(image(x), dim=-1)
        loss = soft_clip_loss(imf, tf, scale, ctx.space.match(desc_all[rows], attr))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(head.parameters()) + list(image.parameters()), 2.0)
        opt.step()
        return float(loss)

    st = timed_training("clip2", ctx.work, a.clip2_minutes, step_fn, {}, {"m": Holder()}, opt,
                        a.clip_lr, max_steps=a.max_steps)
    ls = float(scale.exp().clamp(max=100.0))
    save_ckpt(ctx.path("clip2.pt"), {"head": head.state_dict(), "image": image.state_dict(),
                                     "logit_scale": ls, "feature_dim": 128})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "logit_scale": round(ls, 3),
           "frozen": "text transformer (token/position tables, blocks, final LN)"}
    t2, i2, _ = ctx.clip()
    res.update(quick_zero_shot(ctx, t2, i2, n=2000))
    log("clip2:", res)
    return res


def stage_vae(ctx: Ctx) -> dict:
    a = ctx.args
    tr = ctx.train
    seed_all(a.seed + 10)
    enc, dec = VaeEncoder().to(common.DEV), VaeDecoder().to(common.DEV)
    log(f"vae: encoder {n_params(enc)}, decoder {n_params(dec)} params")
    opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=a.vae_lr,
                            weight_decay=0.0)
    pool = torch.cat([tr["full"], tr["crops"]]).to(common.DEV)
    gen = torch.Generator().manual_seed(a.seed + 11)
    B = a.vae_batch

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = enc, dec

    def step_fn(step: int) -> float:
        x = to_pixels(pool[torch.randint(len(pool), (B,), generator=gen).to(common.DEV)])
        flip = (torch.rand(B, generator=gen) < 0.5).to(common.DEV)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        mean, logvar = enc.posterior(x)
        z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(common.DEV)
        rec = dec(z)
        l_rec = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l_rec + a.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    st = timed_training("vae", ctx.work, a.vae_minutes, step_fn, {}, {"m": Holder()}, opt,
                        a.vae_lr, max_steps=a.max_steps)
    enc.eval(), dec.eval()
    with torch.no_grad():
        sel = torch.randperm(len(pool), generator=gen)[:2048]
        x = to_pixels(pool[sel.to(common.DEV)])
        m = torch.cat([enc(x[i:i + 256]) for i in range(0, len(x), 256)])
        std = float(m.std())
        rec = torch.cat([dec(m[i:i + 256]) for i in range(0, len(m), 256)])
        mse = float((rec.clamp(-1, 1) - x).pow(2).mean())
    latent_scale = 1.0 / std
    save_ckpt(ctx.path("vae.pt"), {"enc": enc.state_dict(), "dec": dec.state_dict(),
                                   "latent_scale": latent_scale})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "latent_std": round(std, 4),
           "latent_scale": round(latent_scale, 5), "recon_mse_[-1,1]": round(mse, 5),
           "recon_psnr_db": round(10 * math.log10(4.0 / max(mse, 1e-12)), 2)}
    log("vae:", res)
    return res


def _hidden_for(ctx: Ctx, text: TextEncoderWrapper, tok: Tokenizer, texts: List[str]) -> Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 512):
            ids, eos = tok.encode(texts[i:i + 512])
            dev = text.token_embedding.device
            h, _ = encode_text(text, ids.to(dev), eos.to(dev))
            out.append(h.cpu())
    return torch.cat(out)


def stage_unet(ctx: Ctx) -> dict:
    a = ctx.args
    # Latents of the UNet's training views (both flips), and text states of each caption.
    lat_path = ctx.path("unet_latents.pt")
    if os.path.exists(lat_path):
        d = tload(lat_path)
    else:
        tr = ctx.train
        tok = ctx.tokenizer()
        text, _, _ = ctx.clip(base_only=True)
        enc, _, latent_scale = ctx.vae()
        text.to(common.DEV)
        enc.to(common.DEV)
        t0 = time.time()
        caps = tr["cap_text"]
        uniq = sorted(set(caps))
        cap_id = {c: i for i, c in enumerate(uniq)}
        hidden = _hidden_for(ctx, text, tok, [""] + uniq)   # row 0: the empty prompt
        # Views: shop images (the garment alone) and box crops of user images (the garment
        # on a background), half each; whole user scenes are left out: on this compute
        # budget they cost capacity that the asked garment needs.
        shop_views, user_views = [], []
        for j in range(len(caps)):
            f, c = int(tr["cap_full"][j]), int(tr["cap_crop"][j])
            ci = cap_id[caps[j]] + 1
            if c < 0:
                continue
            if bool(tr["crop_shop"][c]):
                if f >= 0:
                    shop_views.append((("f", f), ci))
            else:
                user_views.append((("c", c), ci))
        g = torch.Generator().manual_seed(a.seed)
        half = a.unet_views // 2
        pick = [shop_views[i] for i in torch.randperm(len(shop_views), generator=g)[:half]]
        pick += [user_views[i] for i in torch.randperm(len(user_views), generator=g)[:half]]
        views = [v for v, _ in pick]
        view_cap = [ci for _, ci in pick]
        u8 = torch.stack([tr["full"][i] if k == "f" else tr["crops"][i] for k, i in views])
        lat = []
        with torch.no_grad():
            for i in range(0, len(u8), 512):
                lat.append((enc(to_pixels(u8[i:i + 512].to(common.DEV))) * latent_scale).cpu())
        d = {"latents": torch.cat(lat).half(), "view_cap": torch.tensor(view_cap),
             "hidden": hidden.half()}
        save_ckpt(lat_path, d)
        log(f"unet: {len(views)} views encoded, {len(uniq)} distinct captions, "
            f"{time.time() - t0:.0f}s")
    latents, view_cap, hidden = d["latents"].to(common.DEV), d["view_cap"], d["hidden"].float().to(common.DEV)
    seed_all(a.seed + 20)
    unet = LatentUNet().to(common.DEV)
    log(f"unet: {n_params(unet)} params")
    opt = torch.optim.AdamW(unet.parameters(), lr=a.unet_lr, weight_decay=0.0)
    ac = ddim.alphas_cumprod().to(common.DEV)
    gen = torch.Generator().manual_seed(a.seed + 21)
    B = a.unet_batch
    ema_unet = LatentUNet().to(common.DEV)
    if a.unet_init:  # continue from an earlier run's weights (its "raw" and EMA copies)
        init = tload(a.unet_init)
        unet.load_state_dict(init.get("raw", init["unet"]))
        ema_unet.load_state_dict(init["unet"])
        log(f"unet: initialised from {a.unet_init}")
    else:
        ema_unet.load_state_dict(unet.state_dict())
    ema_unet.requires_grad_(False)

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

    def step_fn(step: int) -> float:
        unet.train()
        vi = torch.randint(len(latents), (B,), generator=gen)
        z0 = latents[vi.to(common.DEV)].float()
        flip = (torch.rand(B, generator=gen) < 0.5).to(common.DEV)  # latent flip ~ image flip
        z0 = torch.where(flip[:, None, None, None], z0.flip(3), z0)
        ci = view_cap[vi].clone()
        ci[torch.rand(B, generator=gen) < a.cond_drop] = 0
        ctxt = hidden[ci.to(common.DEV)]
        t = torch.randint(NUM_TRAIN_TIMESTEPS, (B,), generator=gen).to(common.DEV)
        noise = torch.randn(z0.shape, generator=gen).to(common.DEV)
        at = ac[t][:, None, None, None]
        zt = at.sqrt() * z0 + (1 - at).sqrt() * noise
        loss = (unet(zt, t, ctxt) - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(a.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema_unet.parameters(), unet.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        return float(loss)

    st = timed_training("unet", ctx.work, a.unet_minutes, step_fn, {},
                        {"m": Holder(), "ema": ema_unet}, opt, a.unet_lr,
                        max_steps=a.max_steps)
    save_ckpt(ctx.path("unet.pt"), {"unet": ema_unet.state_dict(),
                                    "raw": unet.state_dict()})
    res = {"steps": st["step"], "batch": B, "seconds": round(st["seconds"], 1),
           "final_loss": round(float(st["final_loss"]), 4), "params": n_params(unet),
           "ema": a.ema, "cond_drop": a.cond_drop}
    log("unet:", res)
    return res


# ---------------------------------------------------------------------------------------
