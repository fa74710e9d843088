#!/usr/bin/env bash
# Kill-and-resume test of ctok-learn (docs/reliability.md): SIGKILL at fixed points (feature
# caching, mid-optimisation, checkpoint and output writes), resume, and require the final
# token to equal an uninterrupted run's bit for bit (same binary, one thread, fixed seed),
# the step log to match, no partial file where a reader would take it for a result, and
# caches to be valid or ignored.
#
#   bash tests/cli/test_kill_resume_learn.sh <build>/bin <source dir>
set -euo pipefail
bin=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
learn=$bin/ctok-learn
if [ ! -x "$learn" ]; then
  # Not built in this tree (yet): nothing to test. ctest shows the line below.
  echo "SKIPPED: no $learn"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/ctok-kill-learn.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=1
export KR_SRC=$src
source "$src/tests/fault/kill_resume.sh"
kr_setup "$work" ctok-learn "$learn"

# Small FashionWorld split and one concept with enough user crops.
PYTHONPATH=$src/scripts/python /usr/bin/python3 -m ctok_py.fashionworld --out "$work/fw" \
  --train-ids 2 --val-ids 4 --seed 0 >/dev/null 2>&1
read -r pair style < <(/usr/bin/python3 - "$work/fw/validation/annos" <<'PY'
import collections, json, os, sys
d = sys.argv[1]
users = collections.Counter()
for name in sorted(os.listdir(d)):
    a = json.load(open(os.path.join(d, name)))
    for k, it in a.items():
        if k.startswith("item") and it.get("style", 0) > 0 and a["source"] == "user":
            users[(a["pair_id"], it["style"])] += 1
pair, style = min(k for k, n in users.items() if n >= 2)
print(pair, style)
PY
)

steps=6
run=$KR_RUN
out=$run/token.safetensors
args=(--bundle "$src/tests/data/tiny_bundle" --df2 "$work/fw" --split validation --pair-id "$pair"
      --style "$style" --shots 2 --no-negatives --token "<kr-token>" --steps "$steps"
      --subspace none --checkpoint-every 2 --seed 0 --threads 1 --cache-dir "$run/cache" --log "$run/learn.csv"
      --out "$out" -q)

kr_fresh() { "$learn" "${args[@]}"; }
# What a user (or ctok-batch) does after a crash: the finished token stands; else continue
# from the checkpoint if one is there; else start again (the cache may hold earlier work).
kr_resume() {
  if [ -f "$out" ]; then return 0; fi
  if [ -f "$out.ckpt" ]; then "$learn" "${args[@]}" --resume "$out.ckpt"; else "$learn" "${args[@]}"; fi
}
kr_reset() { rm -rf "$run"; mkdir -p "$run"; }
kr_check() {
  local rc=0
  /usr/bin/python3 "$src/tests/fault/compare.py" token "$work/ref.safetensors" "$out" || rc=1
  /usr/bin/python3 "$src/tests/fault/compare.py" csv "$work/ref.csv" "$run/learn.csv" || rc=1
  return $rc
}

# The uninterrupted reference, in the same paths (the token records its config).
kr_reset
"$learn" "${args[@]}" >"$work/ref.log" 2>&1 || { cat "$work/ref.log"; exit 1; }
cp "$out" "$work/ref.safetensors"
cp "$run/learn.csv" "$work/ref.csv"
cp -r "$run/cache" "$work/ref-cache"
ncache=$(find "$work/ref-cache" -name '*.safetensors' | wc -l)
echo "reference: $steps steps, $ncache cache file(s), concept ($pair, $style)"

# Kill points. Paths: the token $out, its checkpoint $out.ckpt, the log learn.csv, the cache
# folder; temporary files of atomic writes are ".<name>.tmp.*" beside them.
ckpt_renamed='after:rename:/token.safetensors.ckpt$'

# Caches: a warm cache gives the same token; damaged cache files are ignored (recomputed).
kr_reset_warm() { rm -rf "$run"; mkdir -p "$run"; cp -r "$work/ref-cache" "$run/cache"; }
saved_reset=$(declare -f kr_reset)
kr_reset() { kr_reset_warm; }
kr_scenario "cache: warm cache reused, killed mid-optimisation" "$ckpt_renamed:1"
kr_reset() {
  kr_reset_warm
  local i=0 f
  for f in $(find "$run/cache" -name '*.safetensors' | sort); do
    case $((i % 3)) in
      0) truncate -s 37 "$f" ;;                                                        # torn
      1) printf '\xff\xff\xff\xff' | dd of="$f" bs=1 seek=8 conv=notrunc status=none ;;  # bad header
      2) : >"$f" ;;                                                                     # empty
    esac
    i=$((i + 1))
  done
}
kr_scenario "cache: torn/garbled/empty cache files, killed mid-optimisation" "$ckpt_renamed:1"
eval "$saved_reset"

# Feature caching (from an empty cache).
kr_scenario "caching: first cache temp file created, nothing written" 'before:write:/cache/.:1'
kr_scenario "caching: first cache temp file torn" 'torn:write:/cache/.:1'
kr_scenario "caching: first cache file renamed in" 'after:rename:/cache/:1'
kr_scenario "caching: last cache file renamed in" "after:rename:/cache/:$ncache"
# Optimisation.
kr_scenario "optimisation: step 1 logged, no checkpoint yet" 'after:write:/learn.csv$:1'
kr_scenario "optimisation: step-2 checkpoint renamed in" "$ckpt_renamed:1"
kr_scenario "optimisation: step 3 logged" 'after:write:/learn.csv$:3'
kr_scenario "optimisation: step-4 checkpoint temp file torn" 'torn:write:/.token.safetensors.ckpt.tmp:2'
kr_scenario "optimisation: step-4 checkpoint written, not renamed" 'before:rename:/token.safetensors.ckpt$:2'
kr_scenario "optimisation: killed three times (steps 3, 5, 6)" 'after:write:/learn.csv$:3' \
  'after:write:/learn.csv$:3' 'after:write:/learn.csv$:2'
# Outputs.
kr_scenario "outputs: checkpoint removed, token not yet written" 'after:unlink:/token.safetensors.ckpt$:1'
kr_scenario "outputs: token temp file torn" 'torn:write:/.token.safetensors.tmp:1'
kr_scenario "outputs: token written, not renamed" 'before:rename:/token.safetensors$:1'
kr_scenario "outputs: token renamed in" 'after:rename:/token.safetensors$:1'
kr_finish
