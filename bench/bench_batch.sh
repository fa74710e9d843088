#!/usr/bin/env bash
# ctok-batch's overhead over the same cells run by hand (ctok-eval, one after the other),
# in the same run, same machine: a 2-cell lambda_cls grid, 5 concepts, 1 seed, 100 steps.
#   bash bench/bench_batch.sh [BUILD_BIN] [DF2_ROOT]
set -eu
BIN=${1:-build/bin}
DF2=${2:-data/fashionworld}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cat >"$W/exp.json" <<J
{"name": "bench-batch", "base": {"task": "retrieve", "df2": "$DF2", "methods": ["text", "inv+cls"], "shots": 3,
  "max_concepts": 5, "seeds": [0], "learn": {"steps": 100, "lambda_cls": 0.1}, "renders": 0},
 "grid": {"learn.lambda_cls": [0.1, 1.0]}}
J
t0=$(date +%s.%N)
for lam in 0.1 1.0; do
  printf '{"steps": 100, "lambda_cls": %s}\n' "$lam" >"$W/learn-$lam.json"
  "$BIN/ctok-eval" --df2 "$DF2" --methods text,inv+cls --shots 3 --max-concepts 5 --seeds 0 \
    --config "$W/learn-$lam.json" --cache-dir "$W/hand-cache" --out "$W/hand-$lam" -q
done
t1=$(date +%s.%N)
"$BIN/ctok-batch" run "$W/exp.json" --out "$W/batch" --jobs 1 --no-plots -q >/dev/null
t2=$(date +%s.%N)
"$BIN/ctok-batch" run "$W/exp.json" --out "$W/batch2" --jobs 2 --no-plots -q >/dev/null
t3=$(date +%s.%N)
python3 - "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:])
hand, batch, batch2 = t1 - t0, t2 - t1, t3 - t2
print(f"by hand (2 x ctok-eval): {hand:.1f} s")
print(f"ctok-batch --jobs 1:     {batch:.1f} s  (ratio {batch / hand:.2f})")
print(f"ctok-batch --jobs 2:     {batch2:.1f} s  (ratio {batch2 / hand:.2f})")
PY
