#!/usr/bin/env bash
# FashionWorld validation of ctok-learn (docs/results.md, "Token learning").
#
#   scripts/validate_learn.sh [--bin build/bin] [--bundle models/default] [--data data/fashionworld]
#                             [--out runs/validate_learn] [--seeds "0 1 2"] [--shots 5] [--steps 300]
#                             [--variants "inv cls both subspace"] [--no-render] [--no-sanity] [--threads 2]
#
# For each hidden category (sneaker with parent shoe, shirt with parent top) and seed:
#  1. pick `shots` user crops of the category from the *train* split (seeded, distinct
#     identities) and 16 user crops of its sibling categories as negative images;
#  2. learn a token four ways: inversion only (lambda_cls 0), classification only
#     (lambda_inv 0), both, both + attribute subspace (the first three with a free vector);
#  3. zero-shot classification on the *validation* split: every item with style > 0 of the
#     visible categories and of the hidden one (the other hidden category is left out, its
#     word is unknown too), prompts "a photo of a {category}", the hidden category's prompt
#     replaced by "a photo of a <token> {parent}"; baseline row: "a photo of a {parent}";
#  4. render grids (DDIM 50, guidance 4, 4 seeds) of the token prompt and of composite
#     prompts in three colours, one row per variant.
#  5. (unless --no-sanity) the same four variants on a concept the default encoders do see,
#     a colour: 5 images of red shoes (blue tops) stand in for "red" ("blue") in colour
#     classification of the validation shoes (tops), the parent alone and the other colours as
#     negative prompts.
# Writes $OUT/results.md and $OUT/results.jsonl (tables) and $OUT/grids/*.png. Resumable: a
# token that exists is not learned again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=$root/build/bin
BUNDLE=$root/models/default
DATA=$root/data/fashionworld
OUT=$root/runs/validate_learn
SEEDS="0 1 2"
SHOTS=5
STEPS=""
VARIANTS="inv cls both subspace"
RENDER=1
SANITY=1
THREADS=2
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --bin) BIN=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --shots) SHOTS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --no-render) RENDER=0; shift ;;
    --no-sanity) SANITY=0; shift ;;
    --threads) THREADS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS
HELPER="$OUT/validate_learn_helper.py"

cat >"$HELPER" <<'PYEOF'
"""Helper of scripts/validate_learn.sh: data selection, zero-shot evaluation, rendering."""
import glob
import json
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
HIDDEN = {"sneaker": "shoe", "shirt": "top"}
SIBLINGS = {"shoe": ["sandal", "ankle boot"], "top": ["t-shirt", "pullover", "coat"]}


def items(data, split, source=None, limit=0):
    out = []
    files = sorted(glob.glob(os.path.join(data, split, "annos", "*.json")))
    for p in files[-limit:] if limit else files:
        a = json.load(open(p))
        if source and a["source"] != source:
            continue
        stem = os.path.splitext(os.path.basename(p))[0]
        for k, it in a.items():
            if k.startswith("item") and it["style"] > 0:
                out.append({"image": os.path.join(data, split, "image", stem + ".jpg"), "box": it["bounding_box"],
                            "category": it["category_name"], "pair_id": a["pair_id"], "color": it.get("color"),
                            "parent": it.get("parent")})
    return out


def select(data, category, seed, shots, out_dir, n_neg=16):
    """shots user crops of `category` (distinct identities) + sibling crops, written as PNGs."""
    rng = np.random.default_rng(1000 + seed)
    train = items(data, "train", "user")
    by_pair = {}
    for it in train:
        if it["category"] == category:
            by_pair.setdefault(it["pair_id"], []).append(it)
    pairs = sorted(p for p in by_pair if p <= 5000)  # identities above 5000: the tuning set
    chosen = [by_pair[p][rng.integers(len(by_pair[p]))] for p in rng.choice(pairs, shots, replace=False)]
    sib = [it for it in train if it["category"] in SIBLINGS[HIDDEN[category]]]
    negs = [sib[i] for i in rng.choice(len(sib), n_neg, replace=False)]
    for sub, lst in (("images", chosen), ("negatives", negs)):
        for i, it in enumerate(lst):
            # Negatives go into one sub-folder per category: ctok-learn reads the folder name
            # as the image's class word (its own class prompt in the classification loss).
            d = os.path.join(out_dir, sub, it["category"].replace(" ", "_")) if sub == "negatives" else os.path.join(out_dir, sub)
            os.makedirs(d, exist_ok=True)
            Image.open(it["image"]).convert("RGB").crop(tuple(it["box"])).save(os.path.join(d, "%02d.png" % i))
    json.dump({"images": chosen, "negatives": negs}, open(os.path.join(out_dir, "selection.json"), "w"), indent=1)


class Bundle:
    def __init__(self, path):
        import sentencepiece as spm
        self.m = json.load(open(os.path.join(path, "bundle.json")))
        self.path = path
        self.text = torch.jit.load(os.path.join(path, self.m["text"]["file"])).eval()
        self.table = self.text.token_embedding.detach()
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(path, self.m["tokenizer"]["file"]))
        self.L = self.m["text"]["context_length"]

    def encode(self, prompts, token=None, vec=None):
        """prompts may hold the token string once; returns (hidden, features)."""
        t = self.m["text"]
        rows, eos, slots = [], [], []
        for p in prompts:
            ids, slot = [t["bos_id"]], -1
            if token and token in p:
                a, b = p.split(token, 1)
                ids += self.sp.encode(a.strip()) if a.strip() else []
                slot = len(ids)
                ids.append(t["pad_id"])
                ids += self.sp.encode(b.strip()) if b.strip() else []
            else:
                ids += self.sp.encode(p) if p else []
            ids = ids[: self.L - 1] + [t["eos_id"]]
            eos.append(len(ids) - 1)
            slots.append(slot)
            rows.append(ids + [t["pad_id"]] * (self.L - len(ids)))
        emb = self.table[torch.tensor(rows)].clone()
        for i, s in enumerate(slots):
            if s >= 0:
                emb[i, s] = vec
        with torch.no_grad():
            return self.text(emb, torch.tensor(eos))


def read_token(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    (name, info), = h.items()
    s, e = info["data_offsets"]
    v = np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.float32).reshape(info["shape"])
    return name, torch.from_numpy(v.copy())[0], meta


def image_features(bundle, data, cache, split="validation", limit=0, extra=False):
    """Normalised features of every item (style > 0) and their categories; with extra, also
    their colours and parents."""
    if os.path.exists(cache):
        z = np.load(cache, allow_pickle=True)
        if "colors" in z:
            return (z["feats"], list(z["cats"])) + ((list(z["colors"]), list(z["parents"])) if extra else ())
    m = bundle.m["image"]
    enc = torch.jit.load(os.path.join(bundle.path, m["file"])).eval()
    S = m["size"]
    mean, std = np.array(m["mean"], np.float32), np.array(m["std"], np.float32)
    its = items(data, split, limit=limit)
    feats = []
    for i in range(0, len(its), 512):
        px = []
        for it in its[i:i + 512]:
            im = Image.open(it["image"]).convert("RGB").crop(tuple(it["box"]))
            w, h = im.size
            if w < h:
                nw, nh = S, int(S * h / w)
            else:
                nw, nh = int(S * w / h), S
            im = im.resize((nw, nh), Image.BICUBIC)
            l, t = int(round((nw - S) / 2.0)), int(round((nh - S) / 2.0))
            im = im.crop((l, t, l + S, t + S))
            px.append(((np.asarray(im, np.float32) / 255 - mean) / std).transpose(2, 0, 1))
        with torch.no_grad():
            f = enc(torch.from_numpy(np.stack(px)))
        feats.append(torch.nn.functional.normalize(f, dim=-1).numpy())
    feats = np.concatenate(feats)
    cats = [it["category"] for it in its]
    colors = [it["color"] for it in its]
    parents = [it["parent"] for it in its]
    np.savez(cache, feats=feats, cats=np.array(cats, dtype=object), colors=np.array(colors, dtype=object),
             parents=np.array(parents, dtype=object))
    return (feats, cats) + ((colors, parents) if extra else ())


def article(w):
    return "an" if w[0] in "aeiou" else "a"


def evaluate(bundle_dir, data, token_path, hidden, cache, split="validation", limit=0):
    """Zero-shot accuracy; token_path '' gives the parent-prompt baseline. Tuning uses the
    last `limit` train images (identities the selection rarely draws: 5 of ~600 per category)."""
    b = Bundle(bundle_dir)
    feats, cats = image_features(b, data, cache, split, limit)
    parent = HIDDEN[hidden]
    other = [h for h in HIDDEN if h != hidden]
    classes = [c for c in json.load(open(os.path.join(data, "world.json")))["categories"]]
    names = [c["name"] for c in classes if c["name"] not in other]
    prompts, tok, vec = [], None, None
    if token_path:
        tok, vec, _ = read_token(token_path)
    for n in names:
        if n == hidden:
            prompts.append(f"a photo of a {tok} {parent}" if tok else f"a photo of {article(parent)} {parent}")
        else:
            prompts.append(f"a photo of {article(n)} {n}")
    _, tf = b.encode(prompts, tok, vec)
    tf = torch.nn.functional.normalize(tf, dim=-1).numpy()
    keep = np.array([c in names for c in cats])
    f, y = feats[keep], np.array([names.index(c) for c, k in zip(cats, keep) if k])
    pred = (f @ tf.T).argmax(1)
    h = names.index(hidden)
    fam = [names.index(n) for n in [hidden] + SIBLINGS[parent]]
    in_fam = np.isin(y, fam)
    pf = np.array(fam)[(f[in_fam] @ tf[fam].T).argmax(1)]
    return {"accuracy": float((pred == y).mean()), "hidden_recall": float((pred[y == h] == h).mean()),
            "hidden_precision": float((y[pred == h] == h).mean()) if (pred == h).any() else 0.0,
            "parent_accuracy": float((pf == y[in_fam]).mean()), "items": int(len(y)),
            "classes": len(names)}


COLOURS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey", "black"]


def select_colour(data, colour, parent, seed, shots, out_dir, n_neg=16):
    """Sanity set: `shots` user crops of `colour` items of `parent` (distinct identities) and
    user crops of the parent in other colours as negatives."""
    rng = np.random.default_rng(2000 + seed)
    train = [it for it in items(data, "train", "user") if it["parent"] == parent and it["pair_id"] <= 5000]
    pos = [it for it in train if it["color"] == colour]
    by_pair = {}
    for it in pos:
        by_pair.setdefault(it["pair_id"], []).append(it)
    pairs = sorted(by_pair)
    chosen = [by_pair[p][rng.integers(len(by_pair[p]))] for p in rng.choice(pairs, shots, replace=False)]
    other = [it for it in train if it["color"] != colour]
    negs = [other[i] for i in rng.choice(len(other), n_neg, replace=False)]
    for sub, lst in (("images", chosen), ("negatives", negs)):
        d = os.path.join(out_dir, sub)
        os.makedirs(d, exist_ok=True)
        for i, it in enumerate(lst):
            Image.open(it["image"]).convert("RGB").crop(tuple(it["box"])).save(os.path.join(d, "%02d.png" % i))


def evaluate_colour(bundle_dir, data, token_path, colour, parent, cache, split="validation", limit=0):
    """Colour classification of the items of `parent` over "a photo of a {c} {parent}", the
    colour's prompt replaced by the token prompt ('' token: the parent alone; WORD: the
    colour word itself, the reference)."""
    b = Bundle(bundle_dir)
    feats, cats, colors, parents = image_features(b, data, cache, split, int(limit), extra=True)
    prompts, tok, vec = [], None, None
    if token_path and token_path != "WORD":
        tok, vec, _ = read_token(token_path)
    for c in COLOURS:
        if c == colour and token_path == "WORD":
            prompts.append(f"a photo of {article(c)} {c} {parent}")
        elif c == colour:
            prompts.append(f"a photo of a {tok} {parent}" if tok else f"a photo of {article(parent)} {parent}")
        else:
            prompts.append(f"a photo of {article(c)} {c} {parent}")
    _, tf = b.encode(prompts, tok, vec)
    tf = torch.nn.functional.normalize(tf, dim=-1).numpy()
    keep = np.array([p == parent for p in parents])
    f, y = feats[keep], np.array([COLOURS.index(c) for c, k in zip(colors, keep) if k])
    pred = (f @ tf.T).argmax(1)
    h = COLOURS.index(colour)
    return {"accuracy": float((pred == y).mean()), "hidden_recall": float((pred[y == h] == h).mean()),
            "hidden_precision": float((y[pred == h] == h).mean()) if (pred == h).any() else 0.0,
            "items": int(len(y)), "classes": len(COLOURS)}


def render(bundle_dir, rows, out_png, seeds=(0, 1, 2, 3), steps=50, guidance=4.0):
    """rows: [(label, token_path, [prompts])]; one grid row per (label, prompt)."""
    b = Bundle(bundle_dir)
    d = b.m["diffusion"]
    unet = torch.jit.load(os.path.join(bundle_dir, d["unet"])).eval()
    dec = torch.jit.load(os.path.join(bundle_dir, d["vae_decoder"])).eval()
    T = d["num_train_timesteps"]
    betas = torch.linspace(d["beta_start"] ** 0.5, d["beta_end"] ** 0.5, T, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0)
    ts = [int(round(T - i * T / steps)) - 1 for i in range(steps)]
    C, s = d["latent_channels"], d["latent_size"]
    uncond, _ = b.encode([""])
    tiles, labels = [], []
    for label, tpath, prompts in rows:
        tok, vec, _ = read_token(tpath)
        for p in prompts:
            cond, _ = b.encode([p] * len(seeds), tok, vec)
            x = torch.stack([torch.randn(C, s, s, generator=torch.Generator().manual_seed(k)) for k in seeds])
            with torch.no_grad():
                for i, t in enumerate(ts):
                    tt = torch.full((len(seeds),), t, dtype=torch.long)
                    e = unet(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([uncond.expand_as(cond), cond]))
                    eu, ec = e.chunk(2)
                    e = eu + guidance * (ec - eu)
                    a = acp[t].float()
                    a_prev = acp[ts[i + 1]].float() if i + 1 < len(ts) else torch.tensor(1.0)
                    x0 = (x - (1 - a).sqrt() * e) / a.sqrt()
                    x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
                img = dec(x).clamp(-1, 1)
            tiles.append(((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
            labels.append(f"{label}: {p}")
    tiles = [np.stack([np.asarray(Image.fromarray(t).resize((64, 64), Image.NEAREST)) for t in row]) for row in tiles]
    H, W = tiles[0].shape[1:3]
    pad, lab_w = 2, 300
    grid = Image.new("RGB", (lab_w + len(seeds) * (W + pad) + pad, len(tiles) * (H + pad) + pad), "white")
    from PIL import ImageDraw
    dr = ImageDraw.Draw(grid)
    for r, (row, lab) in enumerate(zip(tiles, labels)):
        y = pad + r * (H + pad)
        dr.text((4, y + H // 2 - 6), lab, fill="black")
        for c in range(len(seeds)):
            grid.paste(Image.fromarray(row[c]), (lab_w + pad + c * (W + pad), y))
    grid.save(out_png)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "select":
        select(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif cmd == "eval":
        extra = sys.argv[7:]
        print(json.dumps(evaluate(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6],
                                  extra[0] if extra else "validation", int(extra[1]) if len(extra) > 1 else 0)))
    elif cmd == "select_colour":
        select_colour(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    elif cmd == "eval_colour":
        print(json.dumps(evaluate_colour(*sys.argv[2:])))
    elif cmd == "render":
        render(sys.argv[2], json.loads(sys.argv[4]), sys.argv[3])
PYEOF

[ -f "$BUNDLE/bundle.json" ] || { echo "no bundle at $BUNDLE" >&2; exit 2; }
[ -x "$BIN/ctok-learn" ] || { echo "no ctok-learn in $BIN (build first)" >&2; exit 2; }
CACHE="$OUT/val_features_$(sha256sum "$BUNDLE/image_encoder.pt" | cut -c1-12).npz"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS.tmp"

variant_flags() {
  case $1 in
    inv) echo "--lambda-cls 0 --subspace none" ;;
    cls) echo "--lambda-inv 0 --lambda-cls 1 --subspace none" ;;
    both) echo "--subspace none" ;;
    subspace) echo "--subspace auto" ;;
  esac
}

for pair in sneaker:shoe shirt:top; do
  cat=${pair%%:*}
  parent=${pair##*:}
  base=$($PY "$HELPER" eval "$BUNDLE" "$DATA" "" "$cat" "$CACHE")
  echo "{\"category\": \"$cat\", \"variant\": \"baseline\", \"seed\": null, \"metrics\": $base}" >>"$RESULTS.tmp"
  echo "$cat baseline (a photo of a $parent): $base"
  for seed in $SEEDS; do
    sel="$OUT/$cat/seed$seed"
    [ -f "$sel/selection.json" ] || $PY "$HELPER" select "$DATA" "$cat" "$seed" "$SHOTS" "$sel"
    for v in $VARIANTS; do
      tok="$sel/$v.safetensors"
      if [ ! -f "$tok" ]; then
        # shellcheck disable=SC2046
        "$BIN/ctok-learn" --bundle "$BUNDLE" --images "$sel/images" --negatives "$sel/negatives" \
          --parent "$parent" --token "<$cat-$v>" --seed "$seed" --threads "$THREADS" -q \
          ${STEPS:+--steps $STEPS} $(variant_flags "$v") --log "$sel/$v.csv" --out "$tok" "${EXTRA[@]}"
      fi
      m=$($PY "$HELPER" eval "$BUNDLE" "$DATA" "$tok" "$cat" "$CACHE")
      echo "{\"category\": \"$cat\", \"variant\": \"$v\", \"seed\": $seed, \"metrics\": $m}" >>"$RESULTS.tmp"
      echo "$cat $v seed $seed: $m"
    done
  done
  if [ "$RENDER" = 1 ] && [ -x "$BIN/ctok-render" ]; then
    # The toolkit's renderer: one grid, a row per (variant, prompt), 4 seeds per row (its
    # captions are cut at 32 px tiles; the labelled grid below shows the same prompts).
    mkdir -p "$OUT/grids"
    : >"$OUT/grids/$cat.prompts"
    toks=()
    for v in $VARIANTS; do
      t="<$cat-$v>"
      printf '%s\n' "a photo of a $t $parent" "a photo of a red $t $parent" "a photo of a blue $t $parent" \
        "a photo of a green $t $parent" >>"$OUT/grids/$cat.prompts"
      toks+=(--token "$OUT/$cat/seed${SEEDS%% *}/$v.safetensors")
    done
    "$BIN/ctok-render" --bundle "$BUNDLE" --prompts "$OUT/grids/$cat.prompts" "${toks[@]}" --n 4 --steps 50 \
      --guidance 4 --seed 0 --threads "$THREADS" -q --force --out "$OUT/grids/$cat.ctok-render.png"
    echo "grid: $OUT/grids/$cat.ctok-render.png"
  fi
  if [ "$RENDER" = 1 ]; then
    # Labelled grid (Python DDIM, same sampler settings), tiles upscaled to 64 px.
    mkdir -p "$OUT/grids"
    rows="["
    for v in $VARIANTS; do
      rows+="[\"$v\", \"$OUT/$cat/seed${SEEDS%% *}/$v.safetensors\", [\"a photo of a <$cat-$v> $parent\", \
\"a photo of a red <$cat-$v> $parent\", \"a photo of a blue <$cat-$v> $parent\", \"a photo of a green <$cat-$v> $parent\"]],"
    done
    rows="${rows%,}]"
    $PY "$HELPER" render "$BUNDLE" "$OUT/grids/$cat.png" "$rows"
    echo "grid: $OUT/grids/$cat.png"
  fi
done
# Sanity check where the default encoders do carry the signal (colour): a token learned from
# `shots` images of one colour stands in for that colour's prompt; the negative prompts are
# the parent alone and the other colours.
if [ "$SANITY" = 1 ]; then
  CACHE_C="$OUT/val_features_colour_$(sha256sum "$BUNDLE/image_encoder.pt" | cut -c1-12).npz"
  for pair in red:shoe blue:top; do
    col=${pair%%:*}
    parent=${pair##*:}
    # The method's default negatives keep the parent alone; here the siblings are the other
    # colours. (Leaving "a photo of a $parent" out lets the token stay generic: measured.)
    negs=(--negative-prompt "a photo of a $parent")
    for c in red orange yellow green blue purple pink brown grey black; do
      a=a; [ "$c" = orange ] && a=an
      [ "$c" = "$col" ] || negs+=(--negative-prompt "a photo of $a $c $parent")
    done
    base=$($PY "$HELPER" eval_colour "$BUNDLE" "$DATA" "" "$col" "$parent" "$CACHE_C")
    echo "{\"category\": \"colour $col ($parent)\", \"variant\": \"baseline\", \"seed\": null, \"metrics\": $base}" >>"$RESULTS.tmp"
    word=$($PY "$HELPER" eval_colour "$BUNDLE" "$DATA" WORD "$col" "$parent" "$CACHE_C")
    echo "{\"category\": \"colour $col ($parent)\", \"variant\": \"word\", \"seed\": null, \"metrics\": $word}" >>"$RESULTS.tmp"
    for seed in $SEEDS; do
      sel="$OUT/colour-$col/seed$seed"
      [ -d "$sel/images" ] || $PY "$HELPER" select_colour "$DATA" "$col" "$parent" "$seed" "$SHOTS" "$sel"
      for v in $VARIANTS; do
        tok="$sel/$v.safetensors"
        if [ ! -f "$tok" ]; then
          # shellcheck disable=SC2046
          "$BIN/ctok-learn" --bundle "$BUNDLE" --images "$sel/images" --negatives "$sel/negatives" \
            --parent "$parent" --token "<$col-$v>" --seed "$seed" --threads "$THREADS" -q "${negs[@]}" \
            ${STEPS:+--steps $STEPS} $(variant_flags "$v") --log "$sel/$v.csv" --out "$tok" "${EXTRA[@]}"
        fi
        m=$($PY "$HELPER" eval_colour "$BUNDLE" "$DATA" "$tok" "$col" "$parent" "$CACHE_C")
        echo "{\"category\": \"colour $col ($parent)\", \"variant\": \"$v\", \"seed\": $seed, \"metrics\": $m}" >>"$RESULTS.tmp"
        echo "colour $col $v seed $seed: $m"
      done
    done
  done
fi
mv "$RESULTS.tmp" "$RESULTS"

# Summary table: mean ± std over seeds.
$PY - "$RESULTS" "$OUT/results.md" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["accuracy", "hidden_recall", "hidden_precision", "parent_accuracy"]
out = ["| category | variant | seeds | " + " | ".join(keys) + " |", "|" + " --- |" * (3 + len(keys))]
order = ["baseline", "word", "inv", "cls", "both", "subspace"]
for cat in dict.fromkeys(r["category"] for r in rows):
    for v in order:
        rs = [r for r in rows if r["category"] == cat and r["variant"] == v]
        if not rs:
            continue
        cells = []
        for k in keys:
            xs = [r["metrics"][k] for r in rs if k in r["metrics"]]
            if not xs:
                cells.append("-")
                continue
            cells.append(f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else ""))
        out.append(f"| {cat} | {v} | {len(rs) if rs[0]['seed'] is not None else '-'} | " + " | ".join(cells) + " |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
