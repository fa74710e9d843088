"""docs/default-models.md from a run's results (the trainer's --docs)."""
from __future__ import annotations

import os


def write_docs(a, results: dict) -> None:
    m = results["evaluate"]["metrics"]
    tr = {k: results.get(k, {}) for k in ("tokenizer", "clip", "vae", "unet", "export",
                                             "evaluate")}
    lines = ["# The default models (models/default)", "",
             "Trained from scratch on the FashionWorld **train** split and measured on its "
             "**validation** split by",
             "", "```",
             "PYTHONPATH=scripts/python /usr/bin/python3 -m ctok_py.train_default \\",
             f"    --data {a.data} --out {a.out} --seed {a.seed} --work {a.work}", "```", "",
             "Stages (each checkpointed in `--work`, a rerun resumes; `--stages`, `--redo`): "
             "tokenizer, clip, vae, unet, export, evaluate. Step counts are fixed from the "
             "speed measured on each stage's first 30 steps and its minutes budget "
             "(`--clip-minutes`, `--vae-minutes`, `--unet-minutes`), so they depend on the "
             "machine; the numbers below are this run's.", "",
             "## Models", "",
             "| part | what |", "| --- | --- |",
             f"| tokenizer | SentencePiece unigram, {tr['tokenizer'].get('vocab_size')} pieces, "
             "every caption and prompt word one piece (`▁word` user symbols), pad 0 bos 1 eos 2 "
             "unk 3, context 16 |",
             "| text encoder | causal transformer, width 128, 4 layers, 4 heads, final LN "
             "(`hidden`); `features` = MLP head (128-256-128, GELU) on the state at the eos "
             "index |",
             "| image encoder | 7-layer conv net (24-48-96-192, BN) on 32x32, mean+max pool, MLP "
             "to 128 |",
             "| VAE | conv, 32x32x3 -> 8x8x4, latents scaled to unit variance "
             f"(latent_scale {tr['vae'].get('latent_scale')}) |",
             f"| UNet | {tr['unet'].get('params')} parameters, 48/96 channels, one down/up level, "
             "self- and cross-attention on the text hidden states in every block, sinusoidal "
             "timestep embedding, 10% caption dropout to the empty prompt, EMA weights; "
             "scaled-linear betas 0.00085-0.012, 1000 steps, epsilon |", "",
             "CLIP training: contrastive with a learned logit scale, batch "
             f"{tr['clip'].get('batch')}; images are shop and user images, whole and as box "
             "crops (half each), with random scale/shift, flips and brightness/contrast; "
             "captions are the data set's (half) and captions synthesised from the item's "
             "attributes with prompt templates (`a photo of a`, `a close-up photo of a`, "
             "`... in {colour}`, `... with stripes`, the generic noun `garment`). Hidden "
             "categories are only ever named by their parent word. A caption counts as a "
             "positive for every image in the batch whose attributes it fits (soft targets), "
             "so repeated captions are not negatives.", "",
             "CLIP was trained in two phases. Phase 1 (`clip`) trains both towers from "
             "scratch. Phase 2 (`clip2`) freezes the text transformer (token and position "
             "tables, blocks, final layer norm), puts a fresh MLP head on the pooled state and "
             "keeps training it with the image encoder, beside the UNet in a second process: "
             "the UNet's conditioning (`hidden`) is unchanged by phase 2, every caption's "
             "pooled state is computed once, and a step costs about half. On the shared "
             "2-core machine phase 1 alone learned colour but not yet category in its "
             "budget (see its validation numbers in the card, `card.training.clip`).", "",
             "## Training (this run)", "",
             "| stage | steps | batch | seconds | final loss |", "| --- | --- | --- | --- | --- |"]
    for k in ("clip", "clip2", "vae", "unet"):
        r = results.get(k, {})
        lines.append(f"| {k} | {r.get('steps')} | {r.get('batch')} | {r.get('wall_seconds')} | "
                     f"{r.get('final_loss')} |")
    lines += ["", f"Bundle size: {tr['export'].get('bytes')} bytes.", "",
              "## Metrics (validation split)", "",
              "| metric | value | floor |", "| --- | --- | --- |"]
    for k, v in m.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"| {k} | {v} | {m['floors'].get(k, '')} |")
    lines += ["",
              "- zero-shot: box crops of every validation item with style > 0 (user and shop); "
              "category over the visible categories with `a photo of a {category}`; colour and "
              "pattern with prompt ensembles `a photo of a {colour} {noun}` over the visible "
              "category and parent words;",
              "- caption->image: 1000 validation captions against their 1000 whole images; "
              "`recall@1` counts only the caption's own image, `top1_fits_caption` counts a top "
              "image whose attributes the caption describes (many images share a caption);",
              "- renders: `a photo of a {colour} {pattern} {category}` over visible category x "
              "colour x pattern (a fixed sample), DDIM 50 steps, eta 0, \"leading\" timestep "
              "spacing (980, 960, ..., 0; not the C++ default \"trailing\"), guidance "
              f"{m.get('render_guidance')}, empty prompt as unconditional; share that the "
              "CLIP classifies back to the asked category/colour/pattern with the zero-shot "
              "classifiers above.", ""]
    os.makedirs(os.path.dirname(a.docs) or ".", exist_ok=True)
    with open(a.docs, "w") as f:
        f.write("\n".join(lines))
