#!/bin/bash
# Train the default bundle's stages on a CUDA machine, the way models/default was made
# (docs/default-models.md), and pack the checkpoints portably for the export machine.
#
#   scripts/train_default_gpu.sh OUT_DIR [FASHION_MNIST_DIR] [TOKENIZER_MODEL]
#
# Needs python3 with torch (CUDA), numpy, Pillow, opencv-python and sentencepiece.
# TOKENIZER_MODEL: the tokenizer trained on the export machine (train_default --stages
# tokenizer), so the bundle's tokenizer comes from the sentencepiece the C++ side links.
# Then, on the export machine (Debian python3-torch, which must write the TorchScript):
#   for f in clip clip2 vae unet; do PYTHONPATH=scripts/python /usr/bin/python3 -m \
#     ctok_py.portable unpack OUT_DIR/$f.safetensors WORK/$f.pt; done
#   cp OUT_DIR/result_*.json WORK/   # then train_default --stages export,evaluate
set -euo pipefail
OUT=${1:?usage: $0 OUT_DIR [FASHION_MNIST_DIR] [TOKENIZER_MODEL]}
SRC=${2:-/usr/share/datasets/fashion-mnist}
TOK=${3:-}
PY=${PY:-python3}
cd "$(dirname "$0")/.."
export PYTHONPATH=scripts/python PYTHONUNBUFFERED=1
D=${DATA:-/tmp/fashionworld}; W=${WORK:-/tmp/ctok-train-work}; W2=$W-unet2
mkdir -p "$OUT" "$W" "$W2"
$PY -m ctok_py.fashionworld --out "$D" --seed 0 --workers "$(nproc)" --source-dir "$SRC"
T="$PY -m ctok_py.train_default --data $D --out /tmp/ctok-bundle --seed 0 --device cuda --threads 4 --docs="
$T --work "$W" --stages tokenizer
[ -n "$TOK" ] && cp "$TOK" "$W/tokenizer.model"
# CLIP phase 1 and the VAE share the GPU; then the UNet (on phase-1 text states) and CLIP
# phase 2; then the UNet continues from its weights at a lower rate with a slower EMA.
$T --work "$W" --stages clip --clip-minutes 3.0 --clip-batch 512 > "$W/clip.out" 2>&1 & p1=$!
$T --work "$W" --stages vae --vae-minutes 1.0 --vae-batch 256 > "$W/vae.out" 2>&1 & p2=$!
wait $p1; wait $p2
$T --work "$W" --stages unet --unet-minutes 3.0 --unet-batch 512 --unet-views 60000 \
    > "$W/unet.out" 2>&1 & p3=$!
$T --work "$W" --stages clip2 --clip2-minutes 2.5 --clip-batch 512 > "$W/clip2.out" 2>&1 & p4=$!
wait $p3; wait $p4
cp "$W/unet_latents.pt" "$W2/"
$T --work "$W2" --stages unet --unet-minutes 3.5 --unet-batch 512 --unet-lr 8e-4 --ema 0.998 \
    --unet-init "$W/unet.pt" > "$W2/unet.out" 2>&1
for f in clip clip2 vae; do $PY -m ctok_py.portable pack "$W/$f.pt" "$OUT/$f.safetensors"; done
$PY -m ctok_py.portable pack "$W2/unet.pt" "$OUT/unet.safetensors"
cp "$W"/result_{tokenizer,clip,clip2,vae}.json "$OUT/"
cp "$W/result_unet.json" "$OUT/result_unet_phase1.json"
cp "$W2/result_unet.json" "$OUT/result_unet.json"
cat "$W"/*.out "$W2/unet.out" > "$OUT/train.log"
echo "packed into $OUT"
