#!/usr/bin/env bash
# ctok-eval end to end on the tiny fixture bundle and a small generated FashionWorld split:
# the tables and records, a Ctrl-C and a kill -9 in the middle of a run and their resume
# (finished concepts are not redone), and every bad input (exit 2, clear message).
#   bash tests/cli/test_ctok_eval.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
EVAL="$BIN/ctok-eval"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export CTOK_ATTRIBUTES="$SRC/configs/attributes" OMP_NUM_THREADS=1

small_fashionworld "$SRC"

COMMON=(--bundle "$BUNDLE" --df2 "$T/fw" --split validation --shots 2 --threads 1 --steps 2 --negatives 4)

# --- a small run: 2 concepts x 2 seeds, words, images and one learned method, composition
expect 0 "evaluate 2 concepts x 2 seeds" "" -- "$EVAL" "${COMMON[@]}" --methods text,caption,image-mean,inv \
  --max-concepts 2 --seeds 0,1 --composition --out "$T/run" -q
for f in metrics.json ranks.csv table.md run.json; do
  [ -s "$T/run/$f" ] && pass "writes $f" || fail "writes $f"
done
if $PY - "$T/run" <<'EOF'
import csv, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "metrics.json")))
p = m["plain"]
assert p["concepts"] == 2 and p["records"] == 4, p
assert p["order"] == ["text", "caption", "image-mean", "inv"], p["order"]
for name, x in p["methods"].items():
    i = x["mrr"]
    assert 0 < i["lo"] <= i["mean"] <= i["hi"] <= 1, (name, i)
    assert set(x["recall"]) == {"1", "5", "10", "20"}, x["recall"]
assert p["methods"]["text"]["delta_text"] is None and p["methods"]["inv"]["delta_inv"] is None
assert p["methods"]["inv"]["delta_text"]["concepts"] == 2
assert m["gallery"]["items"] > 0 and m["complete"] is True
rows = list(csv.DictReader(open(os.path.join(d, "ranks.csv"))))
plain = [r for r in rows if r["query"] == "plain"]
assert len(plain) == 2 * 2 * 4, len(plain)
assert all(int(r["rank"]) >= 1 for r in rows)
assert len(os.listdir(os.path.join(d, "concepts"))) == 4
toks = [f for f in os.listdir(os.path.join(d, "tokens")) if f.endswith(".safetensors")]
assert len(toks) == 4 and not [f for f in os.listdir(os.path.join(d, "tokens")) if f.endswith(".ckpt")], toks
t = open(os.path.join(d, "table.md")).read()
assert "ΔMRR vs text" in t and "| inv |" in t and "Composition" in t, t
EOF
then pass "metrics, ranks and tokens agree"; else fail "metrics, ranks and tokens agree"; fi

# A second run of the same command redoes nothing: records and tokens untouched.
stamp() { find "$T/run/concepts" "$T/run/tokens" -type f -printf '%P %T@\n' | sort; }
before=$(stamp)
expect 0 "rerun resumes everything" "4 units (4 resumed)" -- "$EVAL" "${COMMON[@]}" --methods text,caption,image-mean,inv \
  --max-concepts 2 --seeds 0,1 --composition --out "$T/run"
[ "$before" = "$(stamp)" ] && pass "rerun rewrites no record or token" || fail "rerun rewrites no record or token"

# --- kill -9 and Ctrl-C in the middle, then resume: finished concepts are not redone
ARGS=("${COMMON[@]}" --steps 40 --methods text,inv --max-concepts 8 --seeds 0 --out "$T/kill" -q)
"$EVAL" "${ARGS[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ "$(ls "$T/kill/concepts" 2>/dev/null | grep -c '\.json$')" -ge 1 ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
first=$(ls "$T/kill/concepts" | grep '\.json$' | head -1)
if [ -n "$first" ]; then
  pass "killed after a first record"
  t0=$(stat -c %Y.%y "$T/kill/concepts/$first")
  # Ctrl-C: exit 130 with a resume hint, nothing half-written.
  n0=$(ls "$T/kill/concepts" | grep -c '\.json$')
  "$EVAL" "${ARGS[@]}" >"$T/int.out" 2>"$T/int.err" &
  pid=$!
  for _ in $(seq 1 600); do
    [ "$(ls "$T/kill/concepts" | grep -c '\.json$')" -gt "$n0" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.05
  done
  kill -INT $pid 2>/dev/null
  wait $pid
  rc=$?
  if [ "$rc" = 130 ] && grep -q "resume" "$T/int.err"; then pass "Ctrl-C exits 130 with a resume hint"
  elif [ "$rc" = 0 ]; then pass "Ctrl-C came after the run had finished (fast machine)"
  else fail "Ctrl-C: exit $rc"; sed 's/^/     /' "$T/int.err" | tail -5; fi
  ls "$T/kill/concepts" | grep -q '\.tmp' && fail "no temporary file left" || pass "no temporary file left"
  expect 0 "resume after the kill" "8 units" -- "$EVAL" "${COMMON[@]}" --steps 40 --methods text,inv --max-concepts 8 --seeds 0 \
    --out "$T/kill"
  [ "$(stat -c %Y.%y "$T/kill/concepts/$first")" = "$t0" ] && pass "the finished concept was not redone" \
    || fail "the finished concept was not redone"
  [ "$(ls "$T/kill/concepts" | grep -c '\.json$')" = 8 ] && pass "all 8 concepts done" || fail "all 8 concepts done"
else
  fail "killed after a first record (none appeared)"
fi

# --- bad input: exit 2, clear messages
expect 2 "unknown method lists the known ones" "image-mean" -- "$EVAL" "${COMMON[@]}" --methods text,magic \
  --out "$T/bad"
mkdir -p "$T/empty_root/validation"
expect 2 "root without annos/" "annos" -- "$EVAL" --bundle "$BUNDLE" --df2 "$T/empty_root" --out "$T/bad" -q
mkdir -p "$T/noimg/validation/annos" && cp "$T/fw/validation/annos/000001.json" "$T/noimg/validation/annos/"
expect 2 "split without image/" "image/" -- "$EVAL" --bundle "$BUNDLE" --df2 "$T/noimg" --out "$T/bad" -q
expect 2 "unknown split names the existing ones" "validation" -- "$EVAL" "${COMMON[@]}" --split test --out "$T/bad"
expect 2 "too many shots: concepts per k" "k=1:" -- "$EVAL" "${COMMON[@]}" --shots 50 --out "$T/bad"
expect 2 "bad seeds" "seed" -- "$EVAL" "${COMMON[@]}" --seeds 0,x --out "$T/bad"
expect 2 "unknown task" "task" -- "$EVAL" "${COMMON[@]}" --task dance --out "$T/bad"
expect 2 "resume with other settings" "other settings" -- "$EVAL" "${COMMON[@]}" --shots 1 --methods text \
  --out "$T/run"
cp -r "$T/fw" "$T/fw_shopless"
$PY - "$T/fw_shopless/validation/annos" <<'EOF'
import json, os, sys
d = sys.argv[1]
for n in os.listdir(d):
    a = json.load(open(os.path.join(d, n)))
    if a["source"] == "shop":
        os.remove(os.path.join(d, n))
EOF
expect 2 "empty gallery" "shop" -- "$EVAL" --bundle "$BUNDLE" --df2 "$T/fw_shopless" --shots 1 --methods text --out "$T/bad"
# A gallery store of another bundle is refused, both hashes named.
$PY - "$T/run/gallery/gallery.json" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
g["bundle"]["image_encoder_sha256"] = "0" * 64
json.dump(g, open(sys.argv[1], "w"))
EOF
expect 2 "gallery store of another bundle" "0000000000" -- "$EVAL" "${COMMON[@]}" --methods text,caption,image-mean,inv \
  --max-concepts 2 --seeds 0,1 --composition --out "$T/run" -q
# --- the hidden-category classification (--task classify) on a small world with a train split
PYTHONPATH=$SRC/scripts/python $PY -m ctok_py.fashionworld --out "$T/fwc" --train-ids 80 --val-ids 6 --seed 0 \
  >/dev/null 2>&1 || fail "generate a small FashionWorld with a train split"
CL=(--bundle "$BUNDLE" --df2 "$T/fwc" --task classify --shots 2 --negatives 3 --threads 1 --steps 2)
expect 0 "classify: every method, 2 seeds" "" -- "$EVAL" "${CL[@]}" -q --seeds 0,1 --out "$T/cls"
if $PY - "$T/cls" <<'EOF'
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "metrics.json")))
assert set(m["categories"]) == {"sneaker", "shirt"}, m["categories"].keys()
for cat, methods in m["categories"].items():
    assert set(methods) == {"parent", "word", "inv", "cls", "inv+cls", "inv+cls+sub"}, list(methods)
    for name, x in methods.items():
        assert len(x["accuracy"]) == 2 and all(0 <= a <= 1 for a in x["accuracy"]), (cat, name, x)
    assert methods["parent"]["accuracy"][0] == methods["parent"]["accuracy"][1]  # no token: seed-free
assert m["learning"]["tokens"] == 16, m["learning"]
assert len(os.listdir(os.path.join(d, "tokens"))) == 16 and len(os.listdir(os.path.join(d, "units"))) == 4
t = open(os.path.join(d, "table.md")).read()
assert "## sneaker" in t and "| inv+cls+sub |" in t and "Learning: 16 tokens" in t
EOF
then pass "classify: metrics, tokens, units, table"; else fail "classify: metrics, tokens, units, table"; fi
rm "$T"/cls/units/shirt-seed1.json
expect 0 "classify resumes (only the removed unit is redone, no token relearned)" "3 resumed" -- \
  "$EVAL" "${CL[@]}" --seeds 0,1 --out "$T/cls"
grep -q "learning " "$T/err" && fail "classify resume relearned tokens" || pass "classify resume learns nothing"
expect 2 "classify: a retrieval method" "parent, word" -- "$EVAL" "${CL[@]}" --methods text --out "$T/bad"
expect 2 "classify: too many shots" "too few identities" -- "$EVAL" "${CL[@]}" --shots 500 --out "$T/bad"
expect 2 "classify: no world.json" "world.json" -- "$EVAL" --bundle "$BUNDLE" --df2 "$T/noimg" --task classify --out "$T/bad2"
[ -e "$T/bad/run.json" ] && fail "a refused classify run wrote run.json" || pass "a refused classify run writes nothing"
expect 2 "classify: unknown hidden category" "not a category" -- "$EVAL" "${CL[@]}" --hidden sneaker,robot --out "$T/bad3"
# --- the tuning identities (--min-identity): classify learns from and is scored on train
# identities >= 41 only, each unit leaving out the identities it learned from; retrieve too
expect 0 "classify on the tuning identities" "" -- "$EVAL" "${CL[@]}" -q --split train --min-identity 41 --seeds 0,1 \
  --methods parent,inv,inv+cls --out "$T/clt"
if $PY - "$T/clt" "$T/fwc/train/annos" <<'EOF'
import json, os, sys
d, annos = sys.argv[1], sys.argv[2]
pair = lambda i: json.load(open(os.path.join(annos, i.split("/")[0] + ".json")))["pair_id"]
run = json.load(open(os.path.join(d, "run.json")))
assert run["split"] == "train" and run["min_identity"] == 41 and run["max_identity"] == 0, run
m = json.load(open(os.path.join(d, "metrics.json")))
assert m["split"] == "train" and m["min_identity"] == 41, m
units = [json.load(open(os.path.join(d, "units", f))) for f in sorted(os.listdir(os.path.join(d, "units")))]
assert len(units) == 4, len(units)
for u in units:
    sup = {pair(i) for i in u["support"]}
    neg = {pair(i) for i in u["negatives"]}
    ev = set(u["evaluated_pair_ids"])
    assert sup and neg and ev, u["category"]
    assert min(sup | neg | ev) >= 41, (u["category"], sup, neg, min(ev))   # never an identity <= 40
    assert not (sup | neg) & ev, (u["category"], (sup | neg) & ev)            # support/negatives not evaluated
    assert set(u["excluded_pair_ids"]) == sup | neg, u["excluded_pair_ids"]
    assert u["methods"]["parent"]["items"] > 0
EOF
then pass "classify tuning: support, negatives, evaluated items all >= 41 and disjoint"
else fail "classify tuning: support, negatives, evaluated items all >= 41 and disjoint"; fi
expect 2 "classify: resume with another --min-identity" "min_identity" -- "$EVAL" "${CL[@]}" --split train \
  --min-identity 45 --seeds 0,1 --methods parent,inv,inv+cls --out "$T/clt"
expect 2 "classify: --min-identity on the validation split" "--split train" -- "$EVAL" "${CL[@]}" --min-identity 41 \
  --out "$T/bad4"
expect 2 "classify: the train split without --min-identity" "--min-identity" -- "$EVAL" "${CL[@]}" --split train \
  --out "$T/bad4"
expect 2 "classify: negative --min-identity" "--min-identity must be" -- "$EVAL" "${CL[@]}" --split train \
  --min-identity -3 --out "$T/bad4"
expect 2 "classify: --max-identity below --min-identity" "below --min-identity" -- "$EVAL" "${CL[@]}" --split train \
  --min-identity 41 --max-identity 20 --out "$T/bad4"
[ -e "$T/bad4/run.json" ] && fail "a refused tuning run wrote run.json" || pass "a refused tuning run writes nothing"
RT=(--bundle "$BUNDLE" --df2 "$T/fwc" --split train --shots 2 --threads 1 --methods text,image-mean)
expect 0 "retrieve on the tuning identities" "" -- "$EVAL" "${RT[@]}" --min-identity 41 --max-concepts 3 --out "$T/rt" -q
if $PY - "$T/rt" <<'EOF'
import csv, json, os, sys
d = sys.argv[1]
assert json.load(open(os.path.join(d, "run.json")))["min_identity"] == 41
rows = list(csv.DictReader(open(os.path.join(d, "ranks.csv"))))
assert rows and all(int(r["pair_id"]) >= 41 for r in rows), [r["pair_id"] for r in rows]
EOF
then pass "retrieve tuning: concepts >= 41"; else fail "retrieve tuning: concepts >= 41"; fi
expect 2 "retrieve: negative --min-identity" "--min-identity must be" -- "$EVAL" "${RT[@]}" --min-identity -1 --out "$T/bad5"
expect 2 "retrieve: --min-identity above every identity" "pair_id >= 99999" -- "$EVAL" "${RT[@]}" --min-identity 99999 \
  --out "$T/bad5"
expect 2 "retrieve: --max-identity" "classify option" -- "$EVAL" "${RT[@]}" --max-identity 10 --out "$T/bad5"
# --- the GAIR rows (docs/gair.md): gair (auto alpha from its renders) and gair-fixed (the
# alpha tuned on train identities >= 61 of the small world), paired against their own token
G=(--bundle "$BUNDLE" --df2 "$T/fwc" --split validation --shots 2 --threads 1 --steps 2 --negatives 3 --seeds 0
   --composition --gair-n 1 --gair-steps 2 --gair-tune 2 --gair-tune-min-identity 61 --gair-alphas 0,0.5,1)
expect 0 "gair rows: auto and fixed alpha" "" -- "$EVAL" "${G[@]}" --methods text,inv,gair,gair-fixed --max-concepts 3 \
  --out "$T/gair" -q
if $PY - "$T/gair" <<'EOF'
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "metrics.json")))
c = m["composition"]
assert "gair" in c["order"] and "gair-fixed" in c["order"], c["order"]
assert "gair" not in m["plain"]["order"], m["plain"]["order"]  # composition queries only
for r in ("gair", "gair-fixed"):
    x = c["methods"][r]
    assert x["delta_ref"]["against"] == "inv", x
    assert x["delta_ref"]["delta"]["concepts"] == x["concepts"] == c["methods"]["inv"]["concepts"], x
g = m["gair"]
assert g["base"] == "inv" and g["tuning"]["alpha"] in (0, 0.5, 1), g
assert g["tuning"]["split"] == "train" and g["tuning"]["min_identity"] == 61 and g["tuning"]["concepts"] >= 1, g["tuning"]
assert set(g["alpha_mrr_hindsight"]) == {"0", "0.5", "1"}, g["alpha_mrr_hindsight"]
assert sum(g["auto_alpha_counts"].values()) == g["units"] >= 1, g
# the tuning run saw only tuning identities
t = json.load(open(os.path.join(d, "gair-tuning", "metrics.json")))
for f in os.listdir(os.path.join(d, "gair-tuning", "concepts")):
    r = json.load(open(os.path.join(d, "gair-tuning", "concepts", f)))
    assert r["pair_id"] >= 61, r["pair_id"]
# every unit's record holds each alpha's rank and the chosen alpha's intent scores
for f in os.listdir(os.path.join(d, "concepts")):
    r = json.load(open(os.path.join(d, "concepts", f)))
    if r.get("composition_style", 0):
        x = r["extra"]["gair"]
        assert set(x["alpha_ranks"]) == {"0", "0.5", "1"} and len(x["intent"]) == 3, x
        assert x["auto_alpha"] in (0, 0.5, 1) and x["fixed_alpha"] == g["tuning"]["alpha"], x
        # alpha 0 is the token's own composition query
        assert x["alpha_ranks"]["0"] == r["composition_ranks"]["inv"], (x, r["composition_ranks"])
tab = open(os.path.join(d, "table.md")).read()
assert "ΔMRR vs own token" in tab and "| gair |" in tab and "## GAIR" in tab and "hindsight" in tab, tab
EOF
then pass "gair rows: metrics, records, tuning, table"; else fail "gair rows: metrics, records, tuning, table"; fi
stamp_g() { find "$T/gair/concepts" "$T/gair/gair-tuning/concepts" -type f -printf '%P %T@\n' | sort; }
before=$(stamp_g)
expect 0 "gair rerun resumes everything" "resumed" -- "$EVAL" "${G[@]}" --methods text,inv,gair,gair-fixed --max-concepts 3 \
  --out "$T/gair"
[ "$before" = "$(stamp_g)" ] && pass "gair rerun rewrites no record" || fail "gair rerun rewrites no record"
expect 2 "gair without --composition" "composition" -- "$EVAL" --bundle "$BUNDLE" --df2 "$T/fwc" --methods inv,gair \
  --out "$T/bad4" -q
expect 2 "gair without a learned method" "learned" -- "$EVAL" "${G[@]}" --methods text,gair --out "$T/bad4"
expect 2 "gair base not a listed method" "gair.base" -- "$EVAL" "${G[@]}" --methods inv,gair --gair-base cls --out "$T/bad4"
expect 2 "gair alpha out of [0, 1]" "alpha" -- "$EVAL" "${G[@]}" --methods inv,gair --gair-alphas 0,1.5 --out "$T/bad4"
expect 2 "gair-fixed tuned on the evaluated split" "tune_split" -- "$EVAL" "${G[@]}" --methods inv,gair-fixed \
  --gair-tune-split validation --out "$T/bad4"
expect 2 "gair resume with another grid" "gair.alphas" -- "$EVAL" "${G[@]}" --methods text,inv,gair,gair-fixed \
  --max-concepts 3 --gair-alphas 0,1 --out "$T/gair"
finish
