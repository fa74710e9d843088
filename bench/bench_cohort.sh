#!/usr/bin/env bash
# Tokens per minute: one token at a time against cohort learning (issue 11), on the default
# bundle and FashionWorld, with the default config but --steps (default 100, so the bench
# stays short; per-step cost does not depend on it).
#
#   bench/bench_cohort.sh [BIN_DIR] [DATA] [N_CONCEPTS] [STEPS]   (build/bin, data/fashionworld, 16, 100)
#   THREADS="0 2" COHORTS="1 16" WORKERS="1 0" bench/bench_cohort.sh
#     (--threads values, 0 = auto; cohort sizes; --workers values, 0 = auto)
#
# N concept folders of 5 photos each (hidden-category sneakers and sandals, seeded), shared
# folder negatives; ctok-learn --concepts with --cohort 1 (solo, one token after another in
# one process), 8 (the default) and N, each with one worker thread and with the auto count (2 on 2 cores).
# Prints a Markdown table: seconds, tokens/min, speed-up, peak RSS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/build/bin}
DATA=${2:-$root/data/fashionworld}
N=${3:-16}
STEPS=${4:-100}
THREADS=${THREADS:-0}
WORKERS=${WORKERS:-1 0}
COHORTS=${COHORTS:-1 8 $N}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export PYTHONPATH=$root/scripts/python CTOK_CACHE_DIR="$T/cache"
for i in $(seq 1 "$N"); do
  cat=sneaker; [ $((i % 2)) = 0 ] && cat=sandal
  /usr/bin/python3 -m ctok_py.concept_images --root "$DATA" --split train --category $cat --n 5 --seed "$i" \
    --out "$T/concepts/c$i" --force >/dev/null
done
/usr/bin/python3 -m ctok_py.concept_images --root "$DATA" --split train --category "ankle boot" --n 16 --seed 99 \
  --out "$T/negatives/ankle_boot" --force >/dev/null

echo "| cohort | workers | threads | tokens | steps | seconds | tokens/min | speed-up | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
base=""
for th in $THREADS; do
  for c in $COHORTS; do
    for w in $WORKERS; do
      [ "$c" = 1 ] && [ "$w" != "$(echo $WORKERS | cut -d' ' -f1)" ] && continue  # --cohort 1 is one worker
      rm -rf "$T/out"
      /usr/bin/time -f "%e %M" -o "$T/time" "$BIN/ctok-learn" -q --concepts "$T/concepts" --parent shoe \
        --negatives "$T/negatives" --steps "$STEPS" --cohort "$c" --workers "$w" --threads "$th" --out "$T/out"
      read -r secs rss <"$T/time"
      tpm=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f", 60 * n / s }')
      [ -z "$base" ] && base=$tpm
      up=$(awk -v a="$tpm" -v b="$base" 'BEGIN { printf "%.2fx", a / b }')
      echo "| $c | $w | $th | $N | $STEPS | $secs | $tpm | $up | $((rss / 1024)) MB |"
    done
  done
done
echo
echo "speed-up: against the first row. threads 0 = auto (1 for the default bundle); workers 0 = auto (cores / threads)."
echo "machine: $(nproc) cores, $(uptime | sed 's/.*load average/load average/')"
