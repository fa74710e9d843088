#!/usr/bin/env bash
# ctok-gair end to end on the tiny fixture bundle and a small generated FashionWorld split:
# a report with every field the issue lists, and every bad input (exit 2, clear message).
#   bash tests/cli/test_ctok_gair.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
GAIR="$BIN/ctok-gair"
LEARN="$BIN/ctok-learn"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export CTOK_ATTRIBUTES="$SRC/configs/attributes" OMP_NUM_THREADS=1

small_fashionworld "$SRC"
# A concept with 2+ user crops, and a colour of another style of its pair (a composition query).
read -r PAIR STYLE PARENT OTHER_STYLE COLOUR < <($PY - "$T/fw/validation/annos" <<'PY'
import collections, json, os, sys
d = sys.argv[1]
users, colour, parent = collections.Counter(), {}, {}
for name in sorted(os.listdir(d)):
    a = json.load(open(os.path.join(d, name)))
    for k, it in a.items():
        if k.startswith("item") and it.get("style", 0) > 0:
            key = (a["pair_id"], it["style"])
            colour[key], parent[key] = it["color"], it["parent"]
            if a["source"] == "user":
                users[key] += 1
pair, style = min(k for k, n in users.items() if n >= 2)
other = [s for (p, s) in colour if p == pair and colour[(p, s)] != colour[(pair, style)]]
s2 = min(other) if other else style
print(pair, style, parent[(pair, style)], s2, colour[(pair, s2)])
PY
)
COMMON=(--bundle "$BUNDLE" --threads 1 -q)
TOK="$T/tok.safetensors"
expect 0 "learn a token (2 steps)" "" -- "$LEARN" "${COMMON[@]}" --df2 "$T/fw" --split validation \
  --pair-id "$PAIR" --style "$STYLE" --shots 2 --parent "$PARENT" --token "<c>" --steps 2 --batch 2 \
  --generated-negatives 2 --out "$TOK"

FAST=(--n 2 --steps 2 --alphas 0,0.5,1 --top-k 4)
Q="a photo of a <c> $PARENT in $COLOUR"
expect 0 "help" "--alphas" -- "$GAIR" --help
expect 0 "a report over the split" "chosen alpha" -- "$GAIR" --bundle "$BUNDLE" --threads 1 --token "$TOK" --query "$Q" \
  --df2 "$T/fw" --split validation "${FAST[@]}" --seed 3 --out "$T/report"
cp "$T/report/results.json" "$T/split-results.json"  # later steps rewrite the report with --force
for f in index.html results.json renders/alpha0-0.png renders/alpha2-1.png hits/alpha1-4.png concept/0.png; do
  [ -s "$T/report/$f" ] && pass "report has $f" || fail "report lacks $f"
done
ls "$T" | grep -q partial && fail "temporary folder left behind" || pass "no temporary folder left"
$PY - "$T/report" "$Q" "$PAIR" "$OTHER_STYLE" "$COLOUR" <<'PY' && pass "results.json fields" || fail "results.json fields"
import json, os, re, sys
d, q, pair, style, colour = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = json.load(open(os.path.join(d, "results.json")))
assert r["query"] == q, r["query"]
assert r["prompts"]["attribute"] == q.replace("<c> ", ""), r["prompts"]
assert r["token"]["token"] == "<c>" and len(r["token"]["sha256"]) == 64
assert [a["alpha"] for a in r["alphas"]] == [0, 0.5, 1]
assert sum(a["chosen"] for a in r["alphas"]) == 1 and r["chosen"]["by"] == "auto"
assert r["attribute_words"][0]["word"] == colour
for a in r["alphas"]:
    assert [x["seed"] for x in a["renders"]] == [3, 4]
    assert 0 <= a["scores"]["attribute"] <= 1 and a["scores"]["harmonic"] is not None
    assert [h["rank"] for h in a["top"]] == [1, 2, 3, 4]
    assert all(a["top"][i]["score"] >= a["top"][i + 1]["score"] for i in range(3))
    assert isinstance(a["first_true_rank"], int) and a["first_true_rank"] >= 1
    for h in a["top"]:
        assert h["correct"] == (h["keys"]["pair_id"] == pair and h["keys"]["style"] == style)
assert r["target"]["pair_id"] == pair and r["target"]["style"] == style, r["target"]
assert isinstance(r["rank_before"], int) and isinstance(r["rank_after"], int)
assert len(r["bundle"]["text_encoder_sha256"]) == 64 and r["gallery"]["kind"] == "df2-split"
assert r["settings"]["steps"] == 2 and r["seconds"]["render"] > 0
html = open(os.path.join(d, "index.html")).read()
assert "<script" not in html and "http://" not in html and "https://" not in html
for src in re.findall(r'src="([^"]+)"', html):
    assert not src.startswith("/") and os.path.isfile(os.path.join(d, src)), src
assert html.count('class="alpha chosen"') == 1
assert "&lt;c&gt;" in html and "<c>" not in html  # the token is escaped
PY
expect 2 "report folder not empty without --force" "--force" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/fw" "${FAST[@]}" --out "$T/report"
expect 0 "fixed alpha, fusion, concept emphasis, --force" "" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/fw" "${FAST[@]}" --alpha 0.25 --beta 0.5 --emphasis concept --out "$T/report" --force
$PY -c "import json,sys; r=json.load(open('$T/report/results.json')); a=r['alphas']; \
assert [x['alpha'] for x in a]==[0,0.25,0.5,1] and a[1]['chosen'] and r['chosen']['by']=='fixed' \
and r['settings']['beta']==0.5 and r['emphasis']=='concept'" && pass "fixed alpha recorded" || fail "fixed alpha recorded"

# --- bad input: exit 2 with a message that names the problem
expect 2 "query without a custom token" "GAIR needs one" -- "$GAIR" "${COMMON[@]}" --token "$TOK" \
  --query "a photo of a $PARENT in $COLOUR" --df2 "$T/fw" "${FAST[@]}" --out "$T/r1"
expect 2 "query with another token" "<d>" -- "$GAIR" "${COMMON[@]}" --token "$TOK" \
  --query "a photo of a <d> $PARENT" --df2 "$T/fw" "${FAST[@]}" --out "$T/r1"
expect 2 "alpha above 1" "alpha outside [0, 1]" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/fw" "${FAST[@]}" --alpha 1.5 --out "$T/r1"
expect 2 "grid alpha below 0" "alpha outside [0, 1]" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/fw" --alphas 0,-0.5 --out "$T/r1"
expect 2 "malformed grid" "comma-separated" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/fw" --alphas 0,half --out "$T/r1"
$PY - "$TOK" "$T/other.safetensors" <<'PY'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["__metadata__"]["bundle"], h["__metadata__"]["bundle_sha256"] = "other-bundle", "0" * 64
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
expect 2 "token of another bundle" "learned on another bundle" -- "$GAIR" "${COMMON[@]}" --token "$T/other.safetensors" \
  --query "$Q" --df2 "$T/fw" "${FAST[@]}" --out "$T/r1"
expect 2 "unreadable split" "$T/nope" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --df2 "$T/nope" "${FAST[@]}" --out "$T/r1"
expect 2 "unreadable gallery store" "$T/nostore" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --gallery "$T/nostore" "${FAST[@]}" --out "$T/r1"
mkdir -p "$T/junkstore" && echo '{' >"$T/junkstore/gallery.json"
expect 2 "gallery store that is not one" "junkstore" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" \
  --gallery "$T/junkstore" "${FAST[@]}" --out "$T/r1"
# A gallery store built by ctok-index gives the same report as the split it was built from.
expect 0 "ctok-index store of the split" "" -- "$BIN/ctok-index" "${COMMON[@]}" build --df2 "$T/fw" --split validation \
  --out "$T/store"
expect 0 "a report over the store" "chosen alpha" -- "$GAIR" --bundle "$BUNDLE" --threads 1 --token "$TOK" --query "$Q" \
  --gallery "$T/store" "${FAST[@]}" --seed 3 --out "$T/report-store"
# The same settings as the first report (kept before --force rewrote it), over the store.
$PY - "$T/split-results.json" "$T/report-store/results.json" <<'PY' && pass "store and split give the same report" || fail "store and split reports differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert (a["rank_before"], a["rank_after"]) == (b["rank_before"], b["rank_after"]), (a["rank_before"], a["rank_after"], b["rank_before"], b["rank_after"])
assert [x["alpha"] for x in a["alphas"]] == [x["alpha"] for x in b["alphas"]]
for x, y in zip(a["alphas"], b["alphas"]):
    assert [h["id"] for h in x["top"]] == [h["id"] for h in y["top"]], x["alpha"]
    sa, sb = [h["score"] for h in x["top"]], [h["score"] for h in y["top"]]
    assert all(abs(p - q) < 1e-5 for p, q in zip(sa, sb)), (x["alpha"], sa, sb)
assert a["gallery"]["kind"] == "df2-split" and b["gallery"]["kind"] == "store"
PY
expect 2 "no gallery" "gallery" -- "$GAIR" "${COMMON[@]}" --token "$TOK" --query "$Q" "${FAST[@]}" --out "$T/r1"
# A diffusers-layout token (one tensor, no metadata) names no concept images.
$PY - "$T/bare.safetensors" <<'PY'
import json, struct, sys
hb = json.dumps({"<c>": {"dtype": "F32", "shape": [1, 24], "data_offsets": [0, 96]}}).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hb)) + hb + struct.pack("<24f", *([0.1] * 24)))
PY
expect 2 "no concept images" "--concept-images" -- "$GAIR" "${COMMON[@]}" --token "$T/bare.safetensors" \
  --query "$Q" --df2 "$T/fw" "${FAST[@]}" --out "$T/r1"
[ ! -e "$T/r1" ] && pass "nothing written on bad input" || fail "output written on bad input"
finish
