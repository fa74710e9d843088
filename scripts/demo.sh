#!/usr/bin/env bash
# One command: install what is missing, build, and run ctok's main job on the default bundle
# and FashionWorld.
#
#   scripts/demo.sh            (as root, or with sudo, on Debian 12)
#
# The job: the default models were trained without ever being told the word "sneaker" (a
# hidden category of FashionWorld: captions call sneakers "shoes"). From five photos of
# sneakers, ctok-learn learns a custom token <sneaker> with parent "shoe" by inversion (the
# tuned default; generated sibling negatives serve its hub check); ctok-render then draws the token alone
# and composed with words it was never shown with ("a <sneaker> shoe in red"); ctok-index and
# ctok-search find it in a catalogue (FashionWorld's 3,000 validation shop crops); ctok-gair
# shows what the composite query asks for and corrects it; ctok-eval measures, on held-out
# data, how well learned tokens classify the hidden categories against the parent word.
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

step "1/9 Debian packages"
bash "$root/scripts/deps.sh"

step "2/9 build (${build})"
bash "$root/scripts/build.sh"
bin=$build/bin

step "3/9 FashionWorld (${data})"
if [ -f "$data/world.json" ] && [ -d "$data/train/annos" ] && [ -d "$data/validation/annos" ]; then
  echo "present: $(grep -o '"version": *"[^"]*"' "$data/world.json" | head -1), reusing it"
else
  "$py" -m ctok_py.fashionworld --out "$data" --seed 0
fi

step "4/9 the default bundle"
"$bin/ctok-info" bundle "$bundle"
"$bin/ctok-info" tokenize --bundle "$bundle" --token "<sneaker>" "a photo of a <sneaker> shoe in red"

step "5/9 learn <sneaker> from five photos"
mkdir -p "$out"
"$py" -m ctok_py.concept_images --root "$data" --split train --category sneaker --n 5 \
  --seed 0 --out "$out/sneaker-photos" --force
"$bin/ctok-learn" --bundle "$bundle" --threads "$threads" --images "$out/sneaker-photos" \
  --parent shoe --token "<sneaker>" --seed 0 --log "$out/learn.csv" \
  --out "$out/sneaker.safetensors" --force
"$bin/ctok-info" token "$out/sneaker.safetensors"

step "6/9 render the token alone and in composite prompts"
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

step "7/9 find it in a catalogue: ctok-index + ctok-search"
"$bin/ctok-index" --bundle "$bundle" --threads "$threads" build --df2 "$data" --split validation \
  --out "$out/catalogue" --index flat
"$bin/ctok-search" --bundle "$bundle" --threads "$threads" --gallery "$out/catalogue" \
  --token "$out/sneaker.safetensors" --query "a photo of a <sneaker> shoe" \
  --query "a photo of a <sneaker> shoe in red" --query "a photo of a shoe" --top 12 \
  --out "$out/catalogue-search" --force

step "8/9 what the composite query means: ctok-gair"
"$bin/ctok-gair" --bundle "$bundle" --threads "$threads" --token "$out/sneaker.safetensors" \
  --query "a photo of a <sneaker> shoe in red" --gallery "$out/catalogue" \
  --concept-images "$out/sneaker-photos" --n 4 --seed 0 --out "$out/gair" --force

step "9/9 held-out evaluation: retrieval (20 concepts, every method) and hidden-category classification"
"$bin/ctok-eval" --bundle "$bundle" --threads "$threads" --df2 "$data" --split validation --task retrieve \
  --max-concepts 20 --seeds 0 --composition --out "$out/retrieval" --cache-dir "$out/eval-cache"
sed -n '/^## Plain/,/^## Composition/p' "$out/retrieval/table.md" | sed '$d'
"$bin/ctok-eval" --bundle "$bundle" --threads "$threads" --df2 "$data" --task classify \
  --seeds 0,1,2 --out "$out/classify"
cat "$out/classify/table.md"

cat <<EOF

Done.
  photos the token was learned from:    $out/sneaker-photos/
  token file:                           $out/sneaker.safetensors   (ctok-info token FILE)
  per-step losses:                      $out/learn.csv
  renders (one row per prompt):         $out/renders.png
  every render setting:                 $out/renders.json
  catalogue search (open in a browser): $out/catalogue-search/index.html
  GAIR report (open in a browser):      $out/gair/index.html
  retrieval table (20 concepts):        $out/retrieval/table.md   (docs/results.md)
  hidden-category table:                $out/classify/table.md
The full retrieval method table (100 concepts x 3 seeds, about an hour; docs/results.md):
  $bin/ctok-eval --df2 $data --task retrieve --max-concepts 100 --seeds 0,1,2 --composition --out runs/eval
EOF
