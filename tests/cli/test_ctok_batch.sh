#!/usr/bin/env bash
# ctok-batch end to end with a shell "command" per cell (no model needed): run, resume,
# dry run, shards + collect, and every bad input that must exit 2 with a clear message.
set -u
bin=${1:?bin dir}
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
finish
