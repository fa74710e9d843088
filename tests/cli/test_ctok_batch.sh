#!/usr/bin/env bash
# ctok-batch end to end: first with a shell "command" per cell (no model needed): run,
# resume, dry run, shards + collect, every bad input that must exit 2 with a clear message;
# then evaluation cells run in process on the tiny fixture bundle and a small FashionWorld
# split: tables per seed, paired deltas, renders, plots, Ctrl-C and resume, bad cell keys.
#   bash tests/cli/test_ctok_batch.sh BIN_DIR SOURCE_DIR
set -u
bin=${1:?bin dir}
SRC=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$(dirname "$0")/lib.sh"
B="$bin/ctok-batch"

cat >"$T/exp.json" <<'J'
{"name": "demo", "base": {"a": 1, "b": {"c": "x"}},
 "grid": {"a": [1, 2, 3], "b.c": ["x", "y"]},
 "command": "python3 -c \"import json; c=json.load(open('config.json')); json.dump({'mrr': c['a']/10}, open('metrics.json','w'))\""}
J
expect 0 "dry run lists 6 cells" "6 cell(s): 0 done, 6 to run" -- "$B" run "$T/exp.json" --out "$T/r" --dry-run
expect 0 "run" "6 run, 0 already done" -- "$B" run "$T/exp.json" --out "$T/r" --jobs 2
[ "$(ls "$T"/r/*/DONE | wc -l)" = 6 ] && pass "six DONE files" || fail "six DONE files"
[ "$(wc -l <"$T/r/results.csv")" = 7 ] && pass "results.csv rows" || fail "results.csv rows"
expect 0 "re-run skips done cells" "0 run, 6 already done" -- "$B" run "$T/exp.json" --out "$T/r"
rm "$T"/r/$(ls "$T/r" | grep -v '\.' | head -1)/DONE
expect 0 "re-run redoes an unfinished cell" "1 run, 5 already done" -- "$B" run "$T/exp.json" --out "$T/r"

# shards side by side, then collect
expect 0 "shard 1/2" "" -- "$B" run "$T/exp.json" --out "$T/s/shard-1" --shard 1/2
expect 0 "shard 2/2" "" -- "$B" run "$T/exp.json" --out "$T/s/shard-2" --shard 2/2
expect 0 "collect" "collected demo" -- "$B" collect "$T/s"
[ "$(ls "$T"/s/*/DONE | wc -l)" = 6 ] && pass "collect merged six cells" || fail "collect merged six cells"

# failures: summary, exit 1; --fail-fast stops after the first
sed 's/"command": .*/"command": "exit 3"}/' "$T/exp.json" >"$T/fail.json"
expect 1 "failing cells are summarised" "failed:" -- "$B" run "$T/fail.json" --out "$T/f"
expect 1 "fail-fast" "1 failed, 5 not run" -- "$B" run "$T/fail.json" --out "$T/ff" --fail-fast

# bad input: exit 2, naming the file / key
echo '{"base": {"a": 1}, "grid": {"z": [1]}, "command": "true"}' >"$T/unknown.json"
expect 2 "unknown grid key names the file" "unknown.json: grid.z" -- "$B" run "$T/unknown.json" --out "$T/u"
echo '{"base": {"a": 1}, "grid": {}, "command": "true"}' >"$T/empty.json"
expect 2 "empty grid" "empty grid" -- "$B" run "$T/empty.json" --out "$T/u"
expect 2 "shard 3/2" "shard index out of range" -- "$B" run "$T/exp.json" --out "$T/u" --shard 3/2
expect 2 "shard 0/2" "shard index out of range" -- "$B" run "$T/exp.json" --out "$T/u" --shard 0/2
sed 's/"demo"/"other"/' "$T/exp.json" >"$T/other.json"
expect 2 "folder of a different experiment" "different experiment" -- "$B" run "$T/other.json" --out "$T/r"
expect 0 "--force reuses it" "" -- "$B" run "$T/other.json" --out "$T/r" --force
expect 0 "shard of another experiment" "" -- "$B" run "$T/other.json" --out "$T/s/shard-3"
expect 2 "collect over different experiments" "shards of different experiments" -- "$B" collect "$T/s"

# --- evaluation cells (in process) ------------------------------------------------------
export CTOK_ATTRIBUTES="$SRC/configs/attributes" OMP_NUM_THREADS=1
small_fashionworld "$SRC"
cat >"$T/eval.json" <<J
{"name": "tiny-lambda", "base": {"task": "retrieve", "bundle": "$SRC/tests/data/tiny_bundle", "df2": "$T/fw",
  "methods": ["text", "inv+cls"], "shots": 2, "max_concepts": 2, "seeds": [0, 1], "composition": true,
  "negatives": 4, "learn": {"steps": 2, "lambda_cls": 0.0}, "renders": 1, "render_steps": 2, "bootstrap": 200},
 "grid": {"learn.lambda_cls": [0.0, 0.5]}}
J
expect 0 "eval cells, two at once" "2 run, 0 already done" -- "$B" run "$T/eval.json" --out "$T/e" --jobs 2 --threads 1
[ "$(ls "$T"/e/*/DONE | wc -l)" = 2 ] && pass "two DONE eval cells" || fail "two DONE eval cells"
if /usr/bin/python3 - "$T/e" <<'PY'
import csv, glob, json, os, sys
d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "results.csv"))))
# 2 cells x 2 seeds x 2 methods x (plain, composition)
assert len(rows) == 16, len(rows)
assert {r["seed"] for r in rows} == {"0", "1"} and {r["method"] for r in rows} == {"text", "inv+cls"}, rows[0]
assert all(0 < float(r["mrr"]) <= 1 for r in rows)
assert len(json.load(open(os.path.join(d, "results.json")))) == 16
md = open(os.path.join(d, "summary.md")).read()
assert "## plain" in md and "## composition" in md and "MRR [95%]" in md, md
assert "paired deltas over learn.lambda_cls (against learn.lambda_cls = 0.0" in md, md
deltas = json.load(open(os.path.join(d, "deltas.json")))
assert deltas and all(x["key"] == "learn.lambda_cls" and x["lo"] <= x["mean"] <= x["hi"] for x in deltas), deltas
assert all(x["label"].endswith("inv+cls") for x in deltas), deltas  # text is the same in both: left out
for cell in glob.glob(os.path.join(d, "*/DONE")):
    c = os.path.dirname(cell)
    m = json.load(open(os.path.join(c, "metrics.json")))
    assert m["main"] == "mrr" and m["tokens"] == 4, m["tokens"]
    assert os.path.getsize(os.path.join(c, "log")) > 0
    assert open(os.path.join(c, "renders.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isdir(os.path.join(d, "cache")) and not os.path.isdir(os.path.join(c, "eval", "gallery"))
PY
then pass "per-seed rows, intervals, paired deltas, logs, renders"; else fail "per-seed rows, intervals, paired deltas, logs, renders"; fi
if /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
  [ -s "$T/e/plots/metric.png" ] && [ -s "$T/e/plots/deltas.png" ] && [ -s "$T/e/plots/loss-curves.png" ] \
    && pass "plots at the end of the run" || fail "plots at the end of the run"
  rm -r "$T/e/plots"
  expect 0 "plot on demand" "metric.png" -- "$B" plot "$T/e"
fi
expect 0 "re-run skips finished eval cells" "0 run, 2 already done" -- "$B" run "$T/eval.json" --out "$T/e" --threads 1

# Ctrl-C in the middle: no DONE for the interrupted cell; the same command finishes it.
sed 's/"steps": 2/"steps": 400/' "$T/eval.json" >"$T/long.json"
"$B" run "$T/long.json" --out "$T/i" --threads 1 --no-plots >"$T/i.out" 2>&1 &
pid=$!
for _ in $(seq 1 300); do ls "$T"/i/*/eval/tokens 2>/dev/null | grep -q . && break; ls "$T"/i/*/eval/concepts/*.json >/dev/null 2>&1 && break; sleep 0.2; done
kill -INT $pid; wait $pid; rc=$?
[ $rc = 1 ] && pass "Ctrl-C ends the run with exit 1" || fail "Ctrl-C ends the run with exit 1 (got $rc)"
[ "$(ls "$T"/i/*/DONE 2>/dev/null | wc -l)" -lt 2 ] && pass "the interrupted cell has no DONE" || fail "the interrupted cell has no DONE"
expect 0 "the same command finishes the run" "already done" -- "$B" run "$T/long.json" --out "$T/i" --threads 1 --no-plots

# bad cell keys: exit 2 before anything runs, naming the file and the key
sed 's/"renders": 1/"render": 1/' "$T/eval.json" >"$T/badkey.json"
expect 2 "unknown cell key" "badkey.json (cell" -- "$B" run "$T/badkey.json" --out "$T/b"
sed 's/"steps": 2,/"steps": 2, "lamda_cls": 1,/' "$T/eval.json" >"$T/badlearn.json"
expect 2 "unknown learn key" "lamda_cls" -- "$B" run "$T/badlearn.json" --out "$T/b"
sed 's/"inv+cls"\]/"inv+cls", "bogus"]/' "$T/eval.json" >"$T/badmethod.json"
expect 2 "unknown method, the known ones listed" "inv+cls+sub" -- "$B" run "$T/badmethod.json" --out "$T/b"
sed 's/"shots": 2/"shots": 9/' "$T/eval.json" >"$T/badshots.json"
expect 1 "a cell that cannot run fails with the eval's message" "concepts qualifying at each k" -- "$B" run "$T/badshots.json" --out "$T/b2" --no-plots
[ -d "$T/b" ] && fail "bad input wrote nothing" || pass "bad input wrote nothing"
finish
