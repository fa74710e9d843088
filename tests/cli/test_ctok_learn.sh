#!/usr/bin/env bash
# ctok-learn end to end on the tiny fixture bundle: a run, the DeepFashion2 mode, Ctrl-C and
# resume, and every bad input of the issue (exit code 2 with a message naming the problem).
#   bash tests/cli/test_ctok_learn.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
LEARN="$BIN/ctok-learn"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export CTOK_ATTRIBUTES="$SRC/configs/attributes"


# Images: a few coloured PNGs (concept) and others (negatives).
mkdir -p "$T/img" "$T/neg" "$T/empty" "$T/text" "$T/broken"
$PY - "$T" <<'EOF'
import sys, os
from PIL import Image, ImageDraw
t = sys.argv[1]
for i in range(3):
    im = Image.new("RGB", (48, 40), (90 + 20 * i, 90, 90))
    ImageDraw.Draw(im).ellipse((10 + i, 8, 38 + i, 34), fill=(220, 40, 40))
    im.save(os.path.join(t, "img", f"p{i}.png"))
for i in range(3):
    im = Image.new("RGB", (48, 40), (200, 200, 200))
    ImageDraw.Draw(im).rectangle((8, 8, 40, 30), fill=(40, 40, 200 - 30 * i))
    im.save(os.path.join(t, "neg", f"n{i}.jpg"), quality=95)
EOF
echo "not an image" >"$T/text/notes.txt"
echo "not a jpeg" >"$T/broken/broken.jpg"

COMMON=(--bundle "$BUNDLE" --threads 2 -q)
OUT="$T/tok.safetensors"

expect 0 "help" "" -- "$LEARN" --help
expect 0 "learn a token" "" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --negatives "$T/neg" --parent shoe \
  --token "<my-shoe>" --steps 3 --batch 2 --out "$OUT" --log "$T/log.csv"
[ -f "$OUT" ] && pass "token file written" || fail "token file written"
[ "$(wc -l <"$T/log.csv")" = 4 ] && pass "CSV log has a row per step" || fail "CSV log rows: $(wc -l <"$T/log.csv")"
[ ! -e "$OUT.ckpt" ] && pass "checkpoint removed after success" || fail "checkpoint left behind"
expect 2 "output exists without --force" "--force" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe \
  --token "<my-shoe>" --steps 1 --out "$OUT"
expect 0 "classification only, free vector, config file" "" -- "$LEARN" "${COMMON[@]}" --images "$T/img" \
  --parent shoe --token "<my-shoe>" --steps 2 --lambda-inv 0 --lambda-cls 1 --subspace none \
  --config "$SRC/configs/learn/default.json" --negative-prompt "a photo of a sandal" --out "$T/cls.safetensors"

# --- bad input: exit 2 with a message that names the problem
expect 2 "empty folder" "$T/empty" -- "$LEARN" "${COMMON[@]}" --images "$T/empty" --parent shoe \
  --token "<x>" --out "$T/a.safetensors"
expect 2 "folder without images names its files" "notes.txt" -- "$LEARN" "${COMMON[@]}" --images "$T/text" \
  --parent shoe --token "<x>" --out "$T/a.safetensors"
expect 2 "missing folder" "$T/nope" -- "$LEARN" "${COMMON[@]}" --images "$T/nope" --parent shoe \
  --token "<x>" --out "$T/a.safetensors"
expect 2 "no usable image names the file" "broken.jpg" -- "$LEARN" "${COMMON[@]}" --images "$T/broken" \
  --parent shoe --token "<x>" --out "$T/a.safetensors"
expect 2 "no attribute file under --subspace auto lists what exists" "shoe.json" -- "$LEARN" "${COMMON[@]}" \
  --images "$T/img" --parent hat --token "<x>" --subspace auto --out "$T/a.safetensors"
expect 2 "token the tokenizer knows as one piece" "dress" -- "$LEARN" "${COMMON[@]}" --images "$T/img" \
  --parent shoe --token dress --out "$T/a.safetensors"
expect 2 "bad option value" "lr" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe --token "<x>" \
  --lr -1 --out "$T/a.safetensors"
expect 2 "unknown key in --config" "stepz" -- bash -c "echo '{\"stepz\": 3}' >'$T/bad.json'; \
  '$LEARN' --bundle '$BUNDLE' -q --images '$T/img' --parent shoe --token '<x>' --config '$T/bad.json' --out '$T/a.safetensors'"
expect 2 "unknown flag" "" -- "$LEARN" --frobnicate

# A bundle without diffusion models.
mkdir -p "$T/nounet"
cp "$BUNDLE"/* "$T/nounet/"
$PY - "$T/nounet/bundle.json" <<'EOF'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
del m["diffusion"]
for f in ("unet.pt", "vae_encoder.pt", "vae_decoder.pt"):
    m["sha256"].pop(f, None)
json.dump(m, open(p, "w"), indent=2)
EOF
rm -f "$T/nounet/unet.pt" "$T/nounet/vae_encoder.pt" "$T/nounet/vae_decoder.pt"
expect 2 "bundle without UNet while lambda_inv > 0" "lambda-inv" -- "$LEARN" --bundle "$T/nounet" -q \
  --images "$T/img" --parent shoe --token "<x>" --steps 1 --out "$T/a.safetensors"
expect 0 "bundle without UNet, classification only" "" -- "$LEARN" --bundle "$T/nounet" -q \
  --images "$T/img" --negatives "$T/neg" --parent shoe --token "<x>" --steps 1 --lambda-inv 0 --lambda-cls 1 \
  --out "$T/nounet.safetensors"
# No negatives and nothing to generate them with: a classification loss alone would make a hub.
expect 2 "classification only without negatives" "nothing to learn" -- "$LEARN" --bundle "$T/nounet" -q \
  --images "$T/img" --parent shoe --token "<x>" --steps 1 --lambda-inv 0 --lambda-cls 1 --out "$T/nounet2.safetensors"

# --- checkpoints and --resume
CK="$T/run.ckpt"
expect 0 "run keeping its checkpoint" "" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe \
  --token "<my-shoe>" --steps 2 --checkpoint "$CK" --keep-checkpoint --out "$T/r.safetensors"
[ -f "$CK" ] && pass "checkpoint kept" || fail "checkpoint kept"
expect 2 "--resume with another config" "lr" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe \
  --token "<my-shoe>" --steps 4 --lr 0.5 --resume "$CK" --out "$T/r2.safetensors"
expect 2 "--resume with other images" "other images" -- "$LEARN" "${COMMON[@]}" --images "$T/neg" \
  --parent shoe --token "<my-shoe>" --steps 4 --resume "$CK" --out "$T/r2.safetensors"
cp "$CK" "$T/other.ckpt"
$PY - "$T/other.ckpt" <<'EOF'
import json, struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["__metadata__"]["bundle_sha256"] = "0" * 64
h["__metadata__"]["bundle"] = "another-bundle"
s = json.dumps(h).encode()
s += b" " * ((8 - len(s) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(s)) + s + b[8 + n:])
EOF
expect 2 "--resume with a checkpoint from another bundle" "another-bundle" -- "$LEARN" "${COMMON[@]}" \
  --images "$T/img" --parent shoe --token "<my-shoe>" --steps 4 --resume "$T/other.ckpt" --out "$T/r2.safetensors"
expect 2 "--resume with a file that is no checkpoint" "notes.txt" -- "$LEARN" "${COMMON[@]}" --images "$T/img" \
  --parent shoe --token "<my-shoe>" --steps 4 --resume "$T/text/notes.txt" --out "$T/r2.safetensors"
expect 0 "--resume continues a run" "" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe \
  --token "<my-shoe>" --steps 4 --resume "$CK" --checkpoint "$CK" --out "$T/r2.safetensors"

# --- Ctrl-C: a checkpoint, exit 130, then resume to the end
"$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe --token "<my-shoe>" --steps 100000 --batch 1 \
  --log "$T/int.csv" --out "$T/int.safetensors" 2>"$T/int.err" &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$T/int.csv" ] && [ "$(wc -l <"$T/int.csv")" -ge 4 ] && break
  sleep 0.1
done
kill -INT "$pid"
wait "$pid"
rc=$?
if [ "$rc" = 130 ] && [ -f "$T/int.safetensors.ckpt" ] && [ ! -e "$T/int.safetensors" ]; then
  pass "Ctrl-C saves a checkpoint and exits 130"
else
  fail "Ctrl-C: exit $rc"; cat "$T/int.err"
fi
step=$(sed -n 's/^interrupted after step \([0-9]*\).*/\1/p' "$T/int.err")
if [ -n "$step" ]; then
  expect 0 "resume after Ctrl-C" "" -- "$LEARN" "${COMMON[@]}" --images "$T/img" --parent shoe \
    --token "<my-shoe>" --steps $((step + 2)) --batch 1 --resume "$T/int.safetensors.ckpt" \
    --log "$T/int.csv" --out "$T/int.safetensors"
  [ "$(wc -l <"$T/int.csv")" = $((step + 3)) ] && pass "resumed log continues" || fail "resumed log rows"
else
  fail "no step in the interrupt message"
fi

# --- a DeepFashion2-layout concept
$PY - "$T/df2" <<'EOF'
import json, os, sys
from PIL import Image, ImageDraw
root = sys.argv[1]
for d in ("annos", "image"):
    os.makedirs(os.path.join(root, "validation", d), exist_ok=True)
n = 0
for pair in (1, 2, 3):
    for source, count in (("user", 3), ("shop", 1)):
        for i in range(count):
            n += 1
            stem = "%06d" % n
            im = Image.new("RGB", (64, 64), (200, 200, 200))
            ImageDraw.Draw(im).ellipse((10 + i, 12, 50, 52), fill=(60 * pair, 40, 40))
            im.save(os.path.join(root, "validation", "image", stem + ".jpg"), quality=95)
            a = {"source": source, "pair_id": pair,
                 "item1": {"category_id": 8, "category_name": "sneaker", "style": 1,
                           "bounding_box": [8, 10, 54, 54], "parent": "shoe"}}
            json.dump(a, open(os.path.join(root, "validation", "annos", stem + ".json"), "w"))
json.dump({"categories": [{"id": 8, "name": "sneaker", "parent": "shoe", "hidden": True}]},
          open(os.path.join(root, "world.json"), "w"))
EOF
expect 0 "learn a DeepFashion2 concept" "" -- "$LEARN" "${COMMON[@]}" --df2 "$T/df2" --split validation \
  --pair-id 2 --style 1 --shots 3 --token "<c2>" --steps 2 --batch 2 --out "$T/df2.safetensors"
if $PY - "$T/df2.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
m = json.loads(b[8:8 + n])["__metadata__"]
c = json.loads(m["config"])
assert m["parent"] == "shoe", m["parent"]          # hidden category: the parent word
assert c["source"]["pair_id"] == 2 and len(c["source"]["support"]) == 3, c["source"]
assert c["negative_images"] == 6, c["negative_images"]  # every crop of the 2 other identities
assert c["negatives"]["kind"] == "df2", c["negatives"]
EOF
then pass "DeepFashion2 token metadata"; else fail "DeepFashion2 token metadata"; fi
expect 2 "DeepFashion2 concept that does not exist" "pair_id 9" -- "$LEARN" "${COMMON[@]}" --df2 "$T/df2" \
  --pair-id 9 --style 1 --token "<c9>" --out "$T/c9.safetensors"
expect 2 "DeepFashion2: more shots than user items" "shots" -- "$LEARN" "${COMMON[@]}" --df2 "$T/df2" \
  --pair-id 2 --style 1 --shots 5 --token "<c2>" --out "$T/c9.safetensors"
echo '{"source": "user", "pair_id": 1, "item1": {"category_id": 8}}' >"$T/df2/validation/annos/000099.json"
expect 2 "DeepFashion2: a bad annotation is named" "000099.json" -- "$LEARN" "${COMMON[@]}" --df2 "$T/df2" \
  --pair-id 2 --style 1 --token "<c2>" --out "$T/c9.safetensors"

# --- a cohort: one token per sub-folder, batched
mkdir -p "$T/concepts/red" "$T/concepts/blue"
cp "$T/img/"* "$T/concepts/red/"
cp "$T/img/"* "$T/concepts/blue/"
echo '{"red": "shoe", "blue": "shoe"}' >"$T/parents.json"
expect 0 "cohort of two concepts" "" -- "$LEARN" "${COMMON[@]}" --concepts "$T/concepts" --parents "$T/parents.json" \
  --negatives "$T/neg" --steps 2 --batch 2 --out "$T/cohort"
[ -f "$T/cohort/red.safetensors" ] && [ -f "$T/cohort/blue.safetensors" ] && [ ! -e "$T/cohort/red.safetensors.ckpt" ] \
  && pass "cohort token files written, checkpoints gone" || fail "cohort outputs: $(ls "$T/cohort" | tr '\n' ' ')"
expect 0 "cohort re-run skips finished tokens" "is done" -- "$LEARN" --bundle "$BUNDLE" --threads 2 \
  --concepts "$T/concepts" --parent shoe --negatives "$T/neg" --steps 2 --batch 2 --out "$T/cohort"
mkdir -p "$T/concepts/none"
expect 2 "cohort with an image-less sub-folder" "none" -- "$LEARN" "${COMMON[@]}" --concepts "$T/concepts" \
  --parent shoe --negatives "$T/neg" --steps 2 --out "$T/cohort2"
rmdir "$T/concepts/none"
expect 2 "cohort without a parent" "--parent" -- "$LEARN" "${COMMON[@]}" --concepts "$T/concepts" \
  --negatives "$T/neg" --steps 2 --out "$T/cohort3"

finish
