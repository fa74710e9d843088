#!/usr/bin/env bash
# Thread count against wall time for the tools on the default bundle (issue 11: the default
# --threads is the fastest for the work, not "all cores"), and the cost of generated
# negatives on a first run and from the cache.
#
#   bench/bench_threads.sh [BIN_DIR] [DATA]      (defaults: build/bin, data/fashionworld)
#
# Prints a Markdown table: ctok-learn (one token, default config, 5 sneaker photos, cached
# generated negatives) and ctok-render --n 8, at --threads 1, 2 and 0 (auto), best of 2 runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/build/bin}
DATA=${2:-$root/data/fashionworld}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export CTOK_CACHE_DIR="$T/cache"
PYTHONPATH=$root/scripts/python /usr/bin/python3 -m ctok_py.concept_images --root "$DATA" --split train \
  --category sneaker --n 5 --seed 0 --out "$T/photos" --force >/dev/null

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
learn() { "$BIN/ctok-learn" -q --threads "$1" --images "$T/photos" --parent shoe --token "<snk>" \
  --out "$T/snk.safetensors" --force; }

# Generated negatives: first run (renders 2 x 32 images), then from the cache.
t0=$(now); learn 0; t1=$(now); learn 0; t2=$(now)
echo "generated negatives: first run $(secs "$t0" "$t1") s, cached run $(secs "$t1" "$t2") s (one ctok-learn each)"
echo
echo "| work | --threads 1 | --threads 2 | --threads 0 (auto) |"
echo "| --- | --- | --- | --- |"
row() {
  local name=$1; shift
  local out="| $name"
  for th in 1 2 0; do
    local best=""
    for rep in 1 2; do
      local a b
      a=$(now); "$@" "$th"; b=$(now)
      local s; s=$(secs "$a" "$b")
      if [ -z "$best" ] || awk -v x="$s" -v y="$best" 'BEGIN { exit !(x < y) }'; then best=$s; fi
    done
    out="$out | $best s"
  done
  echo "$out |"
}
render() { "$BIN/ctok-render" -q --threads "$1" --prompt "a photo of a shoe" --n 8 --out "$T/r.png" --force; }
row "ctok-learn, one token (default config)" learn
row "ctok-render --n 8" render
echo
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
