#!/usr/bin/env bash
# ctok-index and ctok-search end to end on the tiny fixture bundle: a folder catalogue and a
# small generated FashionWorld split, shards + merge = one build, FAISS (flat, IVF) against
# the exact scan, a composite query with a learned token, an image query, the report, and
# every bad input of issue 14 (exit 2, clear message; nothing that reads as complete).
#   bash tests/cli/test_ctok_catalogue.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
INDEX="$BIN/ctok-index"
SEARCH="$BIN/ctok-search"
LEARN="$BIN/ctok-learn"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export OMP_NUM_THREADS=1
C=(--bundle "$BUNDLE" --threads 1 -q)

small_fashionworld "$SRC"

# A folder catalogue: the split's images in nested folders, one unreadable file among them.
mkdir -p "$T/shop/a" "$T/shop/b/c"
n=0
for f in "$T"/fw/validation/image/*.jpg; do
  case $((n % 3)) in 0) cp "$f" "$T/shop/a/";; 1) cp "$f" "$T/shop/b/";; 2) cp "$f" "$T/shop/b/c/";; esac
  n=$((n + 1))
  [ $n -ge 30 ] && break
done
echo "not an image" > "$T/shop/b/broken.jpg"

expect 0 "help" "merge" -- "$INDEX" --help
expect 0 "build a folder catalogue (bad image skipped, named)" "broken.jpg" -- "$INDEX" --bundle "$BUNDLE" --threads 1 \
  build --images "$T/shop" --out "$T/store" --shard-size 8
expect 0 "info --verify" "verified   OK: 30 rows" -- "$INDEX" info "$T/store" --verify
expect 0 "info counts the skipped image" "(1 skipped as unreadable)" -- "$INDEX" info "$T/store"
expect 2 "--fail-bad stops at the unreadable image" "broken.jpg" -- "$INDEX" "${C[@]}" build --images "$T/shop" \
  --out "$T/store-strict" --fail-bad
[ -f "$T/store-strict/items.jsonl" ] && fail "a failed build left items.jsonl" || pass "a failed build is not complete"
expect 2 "a failed build does not read as complete" "half-built" -- "$INDEX" info "$T/store-strict"

# Shards on "several machines" + merge = the single build, IVF built at merge.
for i in 0 1 2; do
  expect 0 "build shard $i/3" "" -- "$INDEX" "${C[@]}" build --images "$T/shop" --shard "$i/3" --out "$T/part$i" --shard-size 4
done
expect 2 "shard spec 3/2" "i/n with 0 <= i < n" -- "$INDEX" "${C[@]}" build --images "$T/shop" --shard 3/2 --out "$T/x"
expect 2 "an index asked of a shard store" "merge builds the index" -- "$INDEX" "${C[@]}" build --images "$T/shop" \
  --shard 0/3 --index ivf:4 --out "$T/x"
expect 2 "merge with a shard missing" "missing 1/3" -- "$INDEX" "${C[@]}" merge --out "$T/m" "$T/part0" "$T/part2"
expect 2 "merge with a shard twice" "overlap" -- "$INDEX" "${C[@]}" merge --out "$T/m" "$T/part0" "$T/part1" "$T/part1" "$T/part2"
[ -e "$T/m" ] && fail "a refused merge left its output" || pass "a refused merge leaves nothing"
expect 2 "IVF with more lists than items" "at least as many items as lists" -- "$INDEX" "${C[@]}" merge --out "$T/m" \
  --index ivf:64 "$T/part2" "$T/part0" "$T/part1"
rm -rf "$T/m"
expect 0 "merge (any order) + IVF index" "" -- "$INDEX" "${C[@]}" merge --out "$T/merged" --index ivf:4 \
  "$T/part2" "$T/part0" "$T/part1"
cmp -s "$T/merged/items.jsonl" "$T/store/items.jsonl" && pass "merged items = single build" || fail "merged items differ"
$PY - "$T/merged/gallery.json" "$T/store/gallery.json" <<'PY' && pass "merged store = single build (digest, count, skipped)" || fail "merged store differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["items_sha256"] == b["items_sha256"] and a["count"] == b["count"] == 30, (a["count"], b["count"])
assert len(a["skipped"]) == len(b["skipped"]) == 1
assert a["complete"] and len(a["source"]["merged_from"]) == 3
PY
expect 0 "merged info --verify (index sha256)" "ivf:4" -- "$INDEX" info "$T/merged" --verify

# Bad shards: a foreign list, a half-built one.
mkdir -p "$T/shop2"
cp "$T"/shop/a/*.jpg "$T/shop2/"
expect 0 "a shard of another list" "" -- "$INDEX" "${C[@]}" build --images "$T/shop2" --shard 1/3 --out "$T/foreign"
expect 2 "merge refuses a foreign shard" "foreign" -- "$INDEX" "${C[@]}" merge --out "$T/m" "$T/part0" "$T/foreign" "$T/part2"
cp -r "$T/part1" "$T/half1"
$PY - "$T/half1/gallery.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1])); j["complete"] = False; j["shards"] = j["shards"][:1]
json.dump(j, open(sys.argv[1], "w"))
PY
rm -f "$T/half1/items.jsonl"
expect 2 "merge refuses a half-built shard" "half-built" -- "$INDEX" "${C[@]}" merge --out "$T/m" "$T/part0" "$T/half1" "$T/part2"
expect 2 "search refuses a half-built store, saying what is missing" "covering 4 of" -- "$SEARCH" "${C[@]}" \
  --gallery "$T/half1" --query "a photo of a shirt" --out "$T/r"
expect 0 "the killed build resumes" "" -- "$INDEX" "${C[@]}" build --images "$T/shop" --shard 1/3 --out "$T/half1" --shard-size 4
cmp -s "$T/half1/items.jsonl" "$T/part1/items.jsonl" && pass "resumed shard = uninterrupted shard" || fail "resumed shard differs"

# Search: text and image queries, exact scan vs flat vs IVF with every list probed.
IMG=$(ls "$T"/shop/a/*.jpg | head -1)
expect 0 "search (exact scan, no index)" "exact scan" -- "$SEARCH" "${C[@]}" -v --gallery "$T/part0" --query "a photo of a shirt" \
  --out "$T/r0"
expect 0 "search the merged store (IVF, every list)" "ivf:4" -- "$SEARCH" "${C[@]}" -v --gallery "$T/merged" \
  --query "a photo of a shirt" --query "a photo of a red dress" --image "$IMG" --top 5 --nprobe 4 --out "$T/r-ivf"
expect 0 "the same with --exact" "exact scan" -- "$SEARCH" "${C[@]}" -v --gallery "$T/merged" --exact \
  --query "a photo of a shirt" --query "a photo of a red dress" --image "$IMG" --top 5 --out "$T/r-exact"
"$INDEX" "${C[@]}" index "$T/store" --index flat >/dev/null 2>&1
expect 0 "search the flat index" "flat" -- "$SEARCH" "${C[@]}" -v --gallery "$T/store" \
  --query "a photo of a shirt" --query "a photo of a red dress" --image "$IMG" --top 5 --out "$T/r-flat"
$PY - "$T" "$IMG" <<'PY' && pass "exact, flat and IVF(nprobe = nlist) agree; the image query finds itself (score 1)" || fail "answers disagree"
import json, os, sys
t, img = sys.argv[1], sys.argv[2]
r = {k: json.load(open(os.path.join(t, k, "results.json"))) for k in ("r-ivf", "r-exact", "r-flat")}
rows = lambda k: [[h["path"] for h in q["hits"]] for q in r[k]["queries"]]
scores = lambda k: [[h["score"] for h in q["hits"]] for q in r[k]["queries"]]
# Text queries: the same items in the same order. Every query: the same score at every rank
# (the tiny test encoder maps images to nearly parallel features, so near-ties may swap).
assert rows("r-ivf")[:2] == rows("r-exact")[:2] == rows("r-flat")[:2], (rows("r-ivf"), rows("r-exact"))
for k in ("r-ivf", "r-flat"):
    for a, b in zip(scores(k), scores("r-exact")):
        assert all(abs(x - y) < 1e-5 for x, y in zip(a, b)), (k, a, b)
q = r["r-exact"]["queries"][2]
mine = [h for h in q["hits"] if os.path.basename(h["path"]) == os.path.basename(img)]
assert q["kind"] == "image" and mine and abs(mine[0]["score"] - 1.0) < 1e-4, q["hits"]
for h in r["r-ivf"]["queries"][0]["hits"]:
    assert set(h) >= {"rank", "score", "row", "path", "box", "keys", "png"} and os.path.exists(os.path.join(t, "r-ivf", h["png"]))
assert r["r-ivf"]["gallery"]["search"]["nprobe"] == 4
PY
grep -q 'src="crops/q1-1.png"' "$T/r-ivf/index.html" && pass "contact sheet links the crops (relative)" || fail "contact sheet"
grep -q 'src="/' "$T/r-ivf/index.html" && fail "absolute image paths in the sheet" || pass "no absolute image links"

# A composite query with a learned token, over a DeepFashion2-layout split (boxes, keys).
expect 0 "build --df2" "" -- "$INDEX" "${C[@]}" build --df2 "$T/fw" --split validation --out "$T/df2store"
read -r PAIR STYLE PARENT < <(pick_concept "$T/fw/validation/annos")
expect 0 "learn a token (2 steps)" "" -- "$LEARN" "${C[@]}" --df2 "$T/fw" --split validation --pair-id "$PAIR" \
  --style "$STYLE" --shots 2 --parent "$PARENT" --token "<c>" --steps 2 --batch 2 --generated-negatives 2 --out "$T/tok.safetensors"
printf 'a photo of a <c> %s\n# a comment\n\na photo of a <c> %s in blue\n' "$PARENT" "$PARENT" > "$T/queries.txt"
expect 0 "composite queries from a file, with the token" "2 queries" -- "$SEARCH" --bundle "$BUNDLE" --threads 1 \
  --gallery "$T/df2store" --token "$T/tok.safetensors" --queries "$T/queries.txt" --top 4 --out "$T/r-tok"
$PY - "$T/r-tok/results.json" <<'PY' && pass "results.json: keys, boxes, token provenance" || fail "results.json of the token search"
import json, sys
r = json.load(open(sys.argv[1]))
assert [q["query"] for q in r["queries"]][1].endswith("in blue")
h = r["queries"][0]["hits"][0]
assert h["box"] is not None and {"pair_id", "style", "category_name"} <= set(h["keys"]), h
assert r["tokens"][0]["token"] == "<c>" and len(r["tokens"][0]["sha256"]) == 64
assert len(r["queries"][0]["hits"]) == 4
PY

# Bad input.
expect 2 "an unknown token in a query" "<d>" -- "$SEARCH" "${C[@]}" --gallery "$T/df2store" --token "$T/tok.safetensors" \
  --query "a photo of a <d> shirt" --out "$T/r1"
expect 2 "a store of another bundle (both hashes named)" "another bundle" -- "$SEARCH" --threads 1 -q --no-verify \
  --gallery "$T/store" --query "a photo of a shirt" --out "$T/r2"
expect 2 "no query" "no query" -- "$SEARCH" "${C[@]}" --gallery "$T/store" --out "$T/r3"
expect 2 "not a store" "no gallery.json" -- "$SEARCH" "${C[@]}" --gallery "$T/shop" --query "x" --out "$T/r4"
expect 2 "an existing report without --force" "--force" -- "$SEARCH" "${C[@]}" --gallery "$T/store" --query "x" --out "$T/r-flat"
expect 2 "two sources" "excludes" -- "$INDEX" "${C[@]}" build --images "$T/shop" --df2 "$T/fw" --out "$T/x"
expect 2 "a missing folder" "not found" -- "$INDEX" "${C[@]}" build --images "$T/nope" --out "$T/x"
expect 2 "an unknown index type" "unknown index type" -- "$INDEX" "${C[@]}" index "$T/store" --index hnsw:32
printf 'shop/a/x.jpg\t5,5,1,1\n' > "$T/list.txt"
expect 2 "a malformed box in a list" "list.txt:1" -- "$INDEX" "${C[@]}" build --list "$T/list.txt" --out "$T/x"
ls "$T" | grep -qE "partial|merging" && fail "temporary folders left behind" || pass "no temporary folder left"
finish
