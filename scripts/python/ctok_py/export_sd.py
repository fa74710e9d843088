"""Export Stable Diffusion 1.x + CLIP ViT-L/14 as a ctok bundle (bundle.md).

    PYTHONPATH=scripts/python python3 -m ctok_py.export_sd \\
        --sd runwayml/stable-diffusion-v1-5 --clip openai/clip-vit-large-patch14 \\
        --out models/sd15

Needs ``torch``, ``diffusers``, ``transformers`` (and their model files, from the Hugging
Face cache or local folders) where it runs; see docs/export-sd.md. It uses the same
wrappers as the default bundle (wrappers.py), traced:

- text: CLIP ViT-L/14's text transformer taking input embeddings, positions and causal
  mask inside, ``hidden`` = last hidden state after the final layer norm (what SD 1.x is
  conditioned on), ``features`` = text_projection of the state at the given eos index;
- image: CLIP ViT-L/14 vision tower + visual_projection (224x224, CLIP mean/std);
- UNet: ``(sample, timestep, context [B,77,768]) -> epsilon``;
- VAE: encoder -> posterior mean * scaling_factor (0.18215); decoder the inverse.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np
import torch

from ctok_py import bundle_writer
from ctok_py import wrappers as w
from ctok_py.reference_inputs import smooth_image

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
BOS, EOS = 49406, 49407
CONTEXT = 77
PROMPTS = ["a photo of a red dress", "", "a photo of a cat wearing a blue striped shirt"]


def log(*a):
    print("[export_sd]", *a, flush=True)


def preprocess(u8: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """CLIP preprocessing: PIL bicubic shorter side to size, centre crop, normalise."""
    from PIL import Image
    from ctok_py.default_models.data import preprocess_pil
    x = preprocess_pil(Image.fromarray(u8), size).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def find_bpe(explicit: Optional[str], tokenizer, out_dir: str) -> tuple:
    """-> (path of a bpe_simple_vocab_16e6.txt.gz to copy, how it was found).

    Order: --bpe; the file shipped with open_clip or openai's clip package; else written
    from the transformers tokenizer's merge ranks (header line + one merge per line, the
    layout of openai's file, whose readers use lines 1..48894)."""
    if explicit:
        return explicit, "given"
    for mod in ("open_clip", "clip"):
        try:
            m = __import__(mod)
            p = os.path.join(os.path.dirname(m.__file__), "bpe_simple_vocab_16e6.txt.gz")
            if os.path.exists(p):
                return p, f"from the {mod} package"
        except ImportError:
            pass
    ranks = getattr(tokenizer, "bpe_ranks", None)
    if ranks:
        merges = [" ".join(pair) for pair, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
        fd, path = tempfile.mkstemp(suffix=".txt.gz.tmp")  # not in out_dir: written whole later
        os.close(fd)
        with gzip.open(path, "wb") as f:
            f.write(("#version: 0.2\n" + "\n".join(merges) + "\n").encode("utf-8"))
        return path, f"written from the transformers tokenizer's {len(merges)} merges"
    return None, "not found"


def export(text_model, text_projection, vision_model, visual_projection, logit_scale: float,
           unet, vae, vae_scale: float, sched: dict, tokenize, bpe_src: str, out: str,
           name: str, source: dict, image_size: int = 512, trace_check: bool = True) -> dict:
    """Trace the wrapped models and write the bundle. The model arguments have the
    attribute layout of transformers' CLIPModel parts and diffusers' models; ``tokenize``
    maps a prompt to its ids (bos ... eos, unpadded). ``out`` is written atomically
    (bundle_writer): the whole bundle or, on any failure, untouched."""
    try:
        with bundle_writer.staged(out) as tmp:
            return _export_files(text_model, text_projection, vision_model, visual_projection,
                                 logit_scale, unet, vae, vae_scale, sched, tokenize, bpe_src,
                                 tmp, name, source, image_size, trace_check)
    finally:
        if bpe_src.endswith(".tmp") and os.path.exists(bpe_src):
            os.remove(bpe_src)


def _export_files(text_model, text_projection, vision_model, visual_projection,
                  logit_scale: float, unet, vae, vae_scale: float, sched: dict, tokenize,
                  bpe_src: str, out: str, name: str, source: dict, image_size: int,
                  trace_check: bool) -> dict:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    width = int(text_model.embeddings.token_embedding.weight.shape[1])
    text_w = w.text_wrapper_from_hf(text_model, text_projection).eval()
    image_w = w.ImageEncoderWrapper(w.HFCLIPVisionAdapter(vision_model), visual_projection).eval()
    unet_w = w.UNetWrapper(w.DiffusersUNetAdapter(unet)).eval()
    enc_w = w.VaeEncoderWrapper(w.DiffusersVaeMean(vae), vae_scale).eval()
    dec_w = w.VaeDecoderWrapper(w.DiffusersVaeDecode(vae), vae_scale).eval()
    for m in (text_w, image_w, unet_w, enc_w, dec_w):
        for p in m.parameters():
            p.requires_grad_(False)

    # ---- reference inputs
    vocab = int(text_w.token_embedding.shape[0])
    ids = torch.full((len(PROMPTS), CONTEXT), EOS, dtype=torch.long)
    eos = torch.zeros(len(PROMPTS), dtype=torch.long)
    for i, p in enumerate(PROMPTS):
        seq = list(tokenize(p))[:CONTEXT]
        if seq[-1] != EOS:
            seq[-1] = EOS
        ids[i, :len(seq)] = torch.tensor(seq)
        eos[i] = len(seq) - 1
    embeds = text_w.token_embedding[ids]
    size = int(getattr(vision_model.config, "image_size", 224)) if hasattr(vision_model, "config") else 224
    pix = torch.stack([preprocess(smooth_image(size + 40 * i, size, i), size, CLIP_MEAN, CLIP_STD)
                       for i in range(2)])
    raw = smooth_image(300, 260, 7)
    pp = preprocess(raw, size, CLIP_MEAN, CLIP_STD)
    lat_ch = int(vae.config.latent_channels) if hasattr(vae, "config") else 4
    down = 2 ** (len(vae.config.block_out_channels) - 1) if hasattr(vae, "config") else 8
    vae_img = torch.from_numpy(smooth_image(128, 128, 11)).permute(2, 0, 1)[None].float() / 127.5 - 1
    sample = torch.randn(2, lat_ch, 16, 16, generator=g)
    timestep = torch.tensor([10, 500], dtype=torch.long)

    files = {}
    with torch.no_grad():
        log("tracing text encoder")
        text_ts = torch.jit.trace(text_w, (embeds[:2], eos[:2]), check_trace=False)
        hidden, feats = text_ts(embeds, eos)
        h_e, f_e = text_w(embeds, eos)
        _check(hidden, h_e, "text hidden (traced batch 3 vs eager)")
        _check(feats, f_e, "text features (traced batch 3 vs eager)")
        files["text_encoder.pt"] = text_ts
        log("tracing image encoder")
        image_ts = torch.jit.trace(image_w, (pix[:1],), check_trace=False)
        img_feats = image_ts(pix)
        _check(img_feats, image_w(pix), "image features (traced batch 2 vs eager)")
        files["image_encoder.pt"] = image_ts
        log("tracing UNet")
        context = hidden[:2].clone()
        unet_ts = torch.jit.trace(unet_w, (sample, timestep, context), check_trace=False)
        unet_out = unet_ts(sample, timestep, context)
        if trace_check:
            _check(unet_ts(sample[:1], timestep[:1], context[:1]), unet_w(sample[:1], timestep[:1], context[:1]),
                   "UNet (traced batch 1 vs eager)")
        files["unet.pt"] = unet_ts
        log("tracing VAE")
        enc_ts = torch.jit.trace(enc_w, (vae_img,), check_trace=False)
        lat = enc_ts(vae_img)
        dec_ts = torch.jit.trace(dec_w, (lat,), check_trace=False)
        decoded = dec_ts(lat)
        if trace_check:
            small = vae_img[:, :, :64, :64].contiguous()
            _check(enc_ts(small), enc_w(small), "VAE encoder (traced 128 vs eager 64)")
        files["vae_encoder.pt"] = enc_ts
        files["vae_decoder.pt"] = dec_ts
    for f, m in files.items():
        log("saving", f)
        m.save(os.path.join(out, f))
    bpe_name = "bpe_simple_vocab_16e6.txt.gz"
    if os.path.abspath(bpe_src) != os.path.abspath(os.path.join(out, bpe_name)):
        shutil.copyfile(bpe_src, os.path.join(out, bpe_name))
    tensors = {"text.input_ids": ids, "text.eos_index": eos, "text.embeds": embeds,
               "text.hidden": hidden, "text.features": feats, "image.pixels": pix,
               "image.features": img_feats, "unet.sample": sample, "unet.timestep": timestep,
               "unet.context": context, "unet.out": unet_out, "vae.images": vae_img,
               "vae.latents": lat, "vae.decoded": decoded,
               "preprocess.raw": torch.from_numpy(raw.copy()), "preprocess.pixels": pp}
    meta = {"text.prompts": json.dumps(PROMPTS),
            "note": "text.embeds = token_embedding[text.input_ids]; ids are bos, pieces, eos, "
                    "then pad (49407) to 77; pooling at text.eos_index; unet.context = "
                    "text.hidden[:2]; vae.decoded = decoder(vae.latents); preprocess: PIL "
                    "bicubic shorter side to size, centre crop, (x/255-mean)/std"}
    w.save_safetensors(os.path.join(out, "reference.safetensors"),
                       {k: v.detach().contiguous() for k, v in tensors.items()}, meta)
    manifest = {
        "format": "ctok-bundle", "version": 1, "name": name,
        "tokenizer": {"type": "clip-bpe", "file": bpe_name},
        "text": {"file": "text_encoder.pt", "context_length": CONTEXT, "width": width,
                 "feature_dim": int(feats.shape[1]), "vocab_size": vocab,
                 "bos_id": BOS, "eos_id": EOS, "pad_id": EOS},
        "image": {"file": "image_encoder.pt", "size": size, "resize": "bicubic",
                  "crop": "center", "mean": CLIP_MEAN, "std": CLIP_STD,
                  "feature_dim": int(img_feats.shape[1])},
        "logit_scale": float(logit_scale),
        "diffusion": {"unet": "unet.pt", "vae_encoder": "vae_encoder.pt",
                      "vae_decoder": "vae_decoder.pt", "image_size": image_size,
                      "latent_channels": lat_ch, "latent_size": image_size // down,
                      "latent_scale": float(vae_scale),
                      "num_train_timesteps": int(sched.get("num_train_timesteps", 1000)),
                      "beta_schedule": sched.get("beta_schedule", "scaled_linear"),
                      "beta_start": float(sched.get("beta_start", 0.00085)),
                      "beta_end": float(sched.get("beta_end", 0.012)),
                      "prediction": sched.get("prediction_type", "epsilon")},
        "reference": "reference.safetensors",
        "sha256": {},
        "card": {"source": source, "metrics": {}},
    }
    return bundle_writer.write_manifest(out, manifest,
                                        list(files) + [bpe_name, "reference.safetensors"])


def _check(got: torch.Tensor, want: torch.Tensor, what: str, tol: float = 1e-4) -> None:
    err = (got - want).abs().max().item()
    scale = max(1.0, want.abs().max().item())
    if not err <= tol * scale:
        raise RuntimeError(f"{what}: traced module differs from eager by {err:.3g}; this "
                           "diffusers/transformers version does not trace cleanly")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m ctok_py.export_sd",
                                description="Export SD 1.x + CLIP ViT-L/14 as a ctok bundle.")
    p.add_argument("--sd", default="runwayml/stable-diffusion-v1-5",
                   help="diffusers SD 1.x repo id or local folder (unet/, vae/, scheduler/)")
    p.add_argument("--clip", default="openai/clip-vit-large-patch14",
                   help="transformers CLIP ViT-L/14 repo id or local folder")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--name", default="sd15-clip-vit-l14")
    p.add_argument("--bpe", default=None, help="bpe_simple_vocab_16e6.txt.gz to copy "
                   "(default: from open_clip/clip if installed, else the HF merges.txt)")
    p.add_argument("--local-files-only", action="store_true",
                   help="never download (use the Hugging Face cache / local folders)")
    p.add_argument("--no-trace-check", action="store_true",
                   help="skip the extra traced-vs-eager checks at other shapes (saves time)")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPModel, CLIPTokenizer
    except ImportError as e:
        sys.stderr.write(
            f"export_sd: {e}.\nThis exporter needs the Python packages 'diffusers' and "
            "'transformers' (and 'torch'), plus the model files of Stable Diffusion 1.x and "
            "CLIP ViT-L/14; install them where you run it, e.g.\n"
            "    pip install torch diffusers transformers\n"
            "See docs/export-sd.md.\n")
        return 2
    kw = {"local_files_only": True} if a.local_files_only else {}
    t0 = time.time()
    log("loading", a.clip)
    try:
        clip = CLIPModel.from_pretrained(a.clip, attn_implementation="eager", **kw)
    except TypeError:
        clip = CLIPModel.from_pretrained(a.clip, **kw)
    clip = clip.float().eval()
    tok = CLIPTokenizer.from_pretrained(a.clip, **kw)
    log("loading", a.sd)
    unet = UNet2DConditionModel.from_pretrained(a.sd, subfolder="unet", **kw).float().eval()
    vae = AutoencoderKL.from_pretrained(a.sd, subfolder="vae", **kw).float().eval()
    sched = dict(DDPMScheduler.from_pretrained(a.sd, subfolder="scheduler", **kw).config)
    # SD 1.x's text encoder is CLIP ViT-L/14's text tower: check, so hidden states are SD's.
    try:
        from transformers import CLIPTextModel
        sd_text = CLIPTextModel.from_pretrained(a.sd, subfolder="text_encoder", **kw)
        ref = clip.text_model.state_dict()
        worst = max((v.float() - ref[k].float()).abs().max().item()
                    for k, v in sd_text.text_model.state_dict().items() if k in ref)
        log(f"SD text encoder vs CLIP text tower: max weight difference {worst:.3g}")
        if worst > 1e-3:
            log("WARNING: the SD text encoder differs from --clip's text tower; the bundle "
                "conditions the UNet on --clip's hidden states")
        del sd_text
    except Exception as e:  # noqa: BLE001 - a missing subfolder only skips the check
        log(f"SD text encoder not compared ({e})")
    bpe, how = find_bpe(a.bpe, tok, a.out)
    if bpe is None:
        sys.stderr.write("export_sd: no bpe_simple_vocab_16e6.txt.gz found; pass --bpe PATH "
                         "(it ships with the 'open_clip' and openai 'clip' packages)\n")
        return 2
    log("tokenizer merges:", bpe, f"({how})")
    vae_scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    image_size = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)

    def tokenize(p: str) -> List[int]:
        return tok(p, truncation=True, max_length=CONTEXT).input_ids

    source = {"how": "ctok_py.export_sd", "sd": a.sd, "clip": a.clip,
              "diffusers": diffusers.__version__, "transformers": transformers.__version__,
              "torch": torch.__version__, "tokenizer_merges": how}
    m = export(clip.text_model, clip.text_projection, clip.vision_model,
               clip.visual_projection, float(clip.logit_scale.exp()), unet, vae, vae_scale,
               sched, tokenize, bpe, a.out, a.name, source, image_size,
               trace_check=not a.no_trace_check)
    # The wrapper reproduces transformers' own outputs (pooling at eos == HF's pooling).
    ref, _ = w.load_safetensors(os.path.join(a.out, "reference.safetensors"))
    with torch.no_grad():
        ids = ref["text.input_ids"]
        hf_hidden = clip.text_model(input_ids=ids).last_hidden_state
        hf_feats = clip.get_text_features(input_ids=ids)
        _check(ref["text.hidden"], hf_hidden, "text hidden vs transformers", 1e-3)
        _check(ref["text.features"], hf_feats, "text features vs transformers", 1e-3)
        hf_img = clip.get_image_features(pixel_values=ref["image.pixels"])
        _check(ref["image.features"], hf_img, "image features vs transformers", 1e-3)
        d_out = unet(ref["unet.sample"], ref["unet.timestep"],
                     encoder_hidden_states=ref["unet.context"]).sample
        _check(ref["unet.out"], d_out, "UNet vs diffusers", 1e-3)
        lat = vae.encode(ref["vae.images"]).latent_dist.mean * vae_scale
        _check(ref["vae.latents"], lat, "VAE encoder vs diffusers", 1e-3)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    log(f"wrote {a.out}: {total / 2 ** 30:.2f} GiB in {time.time() - t0:.0f}s; "
        f"name {m['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
