#!/usr/bin/env bash
# One command: install what is missing, build, and run ctok's main job on the default bundle
# and FashionWorld.
#
#   scripts/demo.sh            (as root, or with sudo, on Debian 12)
#
# The job: the default models were trained without ever being told the word "sneaker" (a
# hidden category of FashionWorld: captions call sneakers "shoes"). From five photos of
# sneakers, ctok-learn learns a custom token <sneaker> in the attribute subspace of "shoe",
# with the inversion and the classification losses; ctok-render then draws the token alone
# and composed with words it was never shown with ("a <sneaker> shoe in red").
#
# Idempotent: the data set is generated once (data/fashionworld); outputs go to runs/demo
# (CTOK_DEMO_OUT) and are replaced on each run. CTOK_BUILD_DIR, CTOK_THREADS as elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${CTOK_BUILD_DIR:-$root/build}
data=${CTOK_DATA:-$root/data/fashionworld}
out=${CTOK_DEMO_OUT:-$root/runs/demo}
threads=${CTOK_THREADS:-0}  # 0: auto (1 thread for the default bundle: fastest, bench/bench_threads.sh)
bundle=$root/models/default
py=/usr/bin/python3
export PYTHONPATH=$root/scripts/python

step() { printf '\n== %s\n' "$*"; }

step "1/6 Debian packages"
bash "$root/scripts/deps.sh"

step "2/6 build (${build})"
bash "$root/scripts/build.sh"
bin=$build/bin

step "3/6 FashionWorld (${data})"
if [ -f "$data/world.json" ] && [ -d "$data/train/annos" ] && [ -d "$data/validation/annos" ]; then
  echo "present: $(grep -o '"version": *"[^"]*"' "$data/world.json" | head -1), reusing it"
else
  "$py" -m ctok_py.fashionworld --out "$data" --seed 0
fi

step "4/6 the default bundle"
"$bin/ctok-info" bundle "$bundle"
"$bin/ctok-info" tokenize --bundle "$bundle" --token "<sneaker>" "a photo of a <sneaker> shoe in red"

step "5/6 learn <sneaker> from five photos"
mkdir -p "$out"
"$py" -m ctok_py.concept_images --root "$data" --split train --category sneaker --n 5 \
  --seed 0 --out "$out/sneaker-photos" --force
"$bin/ctok-learn" --bundle "$bundle" --threads "$threads" --images "$out/sneaker-photos" \
  --parent shoe --token "<sneaker>" --seed 0 --log "$out/learn.csv" \
  --out "$out/sneaker.safetensors" --force
"$bin/ctok-info" token "$out/sneaker.safetensors"

step "6/6 render the token alone and in composite prompts"
cat >"$out/prompts.txt" <<'EOF'
a photo of a shoe
a photo of a <sneaker> shoe
a photo of a <sneaker> shoe in red
a photo of a <sneaker> shoe in blue
a photo of a striped <sneaker> shoe
a photo of a sandal
EOF
"$bin/ctok-render" --bundle "$bundle" --threads "$threads" --token "$out/sneaker.safetensors" \
  --prompts "$out/prompts.txt" --n 6 --steps 50 --guidance 4 --seed 0 \
  --out "$out/renders.png" --force

cat <<EOF

Done.
  photos the token was learned from: $out/sneaker-photos/
  token file:                        $out/sneaker.safetensors   (ctok-info token FILE)
  per-step losses:                   $out/learn.csv
  renders (one row per prompt):      $out/renders.png
  every render setting:              $out/renders.json
How well learned tokens classify held-out sneakers and shirts (4 variants x 3 seeds):
  scripts/validate_learn.sh --bin $bin      (docs/results.md)
EOF
