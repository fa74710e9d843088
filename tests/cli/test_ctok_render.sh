#!/usr/bin/env bash
# ctok-render end to end on the tiny fixture bundle: a render with a token (PNG + sidecar
# with every setting), bit-for-bit reproduction from the same seed, a prompts file as one
# captioned grid, and every bad input of the issue (exit code 2 with a clear message).
#   bash tests/cli/test_ctok_render.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
RENDER="$BIN/ctok-render"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export OMP_NUM_THREADS=1


# A ctok-token/1 file with the standard library: write_token PATH TOKEN ROWS WIDTH
write_token() {
  "$PY" - "$@" <<'PYEOF'
import json, random, struct, sys
path, token, rows, width = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
random.seed(rows * 1000 + width)
vals = [random.gauss(0.0, 0.3) for _ in range(rows * width)]
data = struct.pack("<%df" % len(vals), *vals)
meta = {"format": "ctok-token/1", "token": token, "parent": "dress", "bundle": "fixture-tiny",
        "bundle_sha256": "", "subspace_words": "[]", "coefficients": "[]", "config": "{}", "metrics": "{}"}
header = {"__metadata__": meta, token: {"dtype": "F32", "shape": [rows, width], "data_offsets": [0, len(data)]}}
raw = json.dumps(header).encode()
raw += b" " * ((8 - len(raw) % 8) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(raw)) + raw + data)
PYEOF
}

write_token "$T/tok.safetensors" "<tok>" 1 24
write_token "$T/two.safetensors" "<two>" 2 24
write_token "$T/wide.safetensors" "<wide>" 1 768
BASE=(--bundle "$BUNDLE" --threads 1)
COMMON=("${BASE[@]}" --steps 4 --n 2)

# --- a render and its sidecar ------------------------------------------------------------
expect 0 "render with a token" "wrote" -- "$RENDER" "${COMMON[@]}" --prompt "a photo of a <tok> dress in blue" \
  --token "$T/tok.safetensors" --guidance 5 --sampler ddim --seed 0 --out "$T/a/grid.png"
if [ -s "$T/a/grid.png" ] && [ -s "$T/a/grid.json" ]; then pass "PNG and sidecar written"; else fail "PNG and sidecar written"; fi
"$PY" - "$T/a/grid.json" "$T/tok.safetensors" "$T/a/grid.png" <<'PYEOF' && pass "sidecar records every setting" || fail "sidecar records every setting"
import hashlib, json, struct, sys
j = json.load(open(sys.argv[1]))
tok_sha = hashlib.sha256(open(sys.argv[2], "rb").read()).hexdigest()
te_sha = hashlib.sha256(open(j["bundle"]["dir"] + "/text_encoder.pt", "rb").read()).hexdigest()
assert j["prompts"] == ["a photo of a <tok> dress in blue"], j["prompts"]
assert j["negative"] == "" and j["n"] == 2 and j["steps"] == 4 and j["guidance"] == 5.0
assert j["sampler"] == "ddim" and j["eta"] == 0.0 and j["seed"] == 0 and j["spacing"] == "trailing"
assert j["device"] == "cpu" and j["precision"] == "fp32" and j["ctok_version"]
assert j["bundle"]["name"] == "fixture-tiny" and j["bundle"]["text_encoder_sha256"] == te_sha
assert j["tokens"] == [{"token": "<tok>", "file": sys.argv[2], "sha256": tok_sha, "n_vectors": 1,
                        "learned_on": "fixture-tiny"}], j["tokens"]
assert [im["seed"] for im in j["images"]] == [0, 1]
png = open(sys.argv[3], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n"
w, h = struct.unpack(">II", png[16:24])
assert [w, h] == j["grid_size"], (w, h, j["grid_size"])
PYEOF

# --- tile enlargement ---------------------------------------------------------------------
expect 0 "--scale 1" "" -- "$RENDER" "${COMMON[@]}" --prompt "a red dress" --scale 1 --out "$T/s1.png"
expect 0 "--scale 3" "" -- "$RENDER" "${COMMON[@]}" --prompt "a red dress" --scale 3 --out "$T/s3.png"
expect 2 "--scale out of range" "scale" -- "$RENDER" "${COMMON[@]}" --prompt "a red dress" --scale 17 --out "$T/s17.png"
"$PY" - "$T/s1.json" "$T/s3.json" "$T/a/grid.json" <<'PYEOF' && pass "scale: sidecar and grid size" || fail "scale: sidecar and grid size"
import json, math, sys
s1, s3, auto = (json.load(open(p)) for p in sys.argv[1:4])
size = s1["image_size"]
assert s1["scale"] == 1 and s3["scale"] == 3, (s1["scale"], s3["scale"])
assert auto["scale"] == min(8, math.ceil(128 / size)), (auto["scale"], size)
gap = s1["grid_size"][0] - 2 * size          # what the grid adds around 2 tiles
assert s3["grid_size"][0] == 2 * 3 * size + gap, (s3["grid_size"], size, gap)
PYEOF

# --- reproducibility ---------------------------------------------------------------------
expect 0 "same seed again" "" -- "$RENDER" "${COMMON[@]}" --prompt "a photo of a <tok> dress in blue" \
  --token "$T/tok.safetensors" --seed 0 --out "$T/b.png"
if cmp -s "$T/a/grid.png" "$T/b.png"; then pass "same seed gives identical bytes"; else fail "same seed gives identical bytes"; fi
expect 0 "another seed" "" -- "$RENDER" "${COMMON[@]}" --prompt "a photo of a <tok> dress in blue" \
  --token "$T/tok.safetensors" --seed 7 --out "$T/c.png"
if cmp -s "$T/a/grid.png" "$T/c.png"; then fail "another seed gives another image"; else pass "another seed gives another image"; fi
expect 0 "euler ancestral, negative prompt, 2-vector token" "" -- "$RENDER" "${COMMON[@]}" \
  --prompt "a <two> dress with <tok> dots" --token "$T/tok.safetensors" --token "$T/two.safetensors" \
  --negative "a red dress" --sampler euler --eta 1 --out "$T/d.png"

# --- several prompts: one captioned grid -------------------------------------------------
printf 'a photo of a <tok> dress\n\na red striped dress\n' > "$T/prompts.txt"
expect 0 "prompts file" "" -- "$RENDER" "${COMMON[@]}" --prompts "$T/prompts.txt" --token "$T/tok.safetensors" \
  --out "$T/multi.png"
"$PY" - "$T/multi.json" <<'PYEOF' && pass "prompts file: 2 rows" || fail "prompts file: 2 rows"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["prompts"] == ["a photo of a <tok> dress", "a red striped dress"], j["prompts"]
assert [(im["prompt"], im["row"], im["col"], im["seed"]) for im in j["images"]] == \
    [(0, 0, 0, 0), (0, 0, 1, 1), (1, 1, 0, 0), (1, 1, 1, 1)]
PYEOF
expect 0 "config file, flags override" "" -- "$RENDER" --bundle "$BUNDLE" --threads 1 --config <(echo '{"prompts": ["a dress"], "n": 1, "steps": 2, "sampler": "euler"}') --steps 3 --out "$T/cfg.png"
"$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); assert j['steps']==3 and j['n']==1 and j['sampler']=='euler'" "$T/cfg.json" \
  && pass "config values and overrides recorded" || fail "config values and overrides recorded"

# --- bad input: exit 2 with a clear message ----------------------------------------------
expect 2 "unknown token in a prompt" "<nope>" -- "$RENDER" "${COMMON[@]}" --prompt "a photo of a <nope> dress" \
  --token "$T/tok.safetensors" --out "$T/e1.png"
expect 2 "token width != bundle width" "token width 768 does not match bundle text.width 24" -- "$RENDER" "${COMMON[@]}" \
  --prompt "a <wide> dress" --token "$T/wide.safetensors" --out "$T/e2.png"
LONG="a photo of a red striped dress with blue dots with blue dots with blue dots with blue dots"
expect 0 "long prompt is truncated with a warning" "cut " -- "$RENDER" "${COMMON[@]}" --prompt "$LONG" --out "$T/long.png"
grep -qE "cut [0-9]+ tokens" "$T/err" && pass "warning names how many tokens were cut" || fail "warning names how many tokens were cut"
mkdir -p "$T/nodiff"
cp "$BUNDLE"/* "$T/nodiff/"
"$PY" - "$T/nodiff/bundle.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
del j["diffusion"]
for f in ("unet.pt", "vae_encoder.pt", "vae_decoder.pt"):
    j["sha256"].pop(f, None)
json.dump(j, open(sys.argv[1], "w"), indent=2)
PYEOF
expect 2 "bundle without diffusion asked to render" "diffusion" -- "$RENDER" --bundle "$T/nodiff" --prompt "a dress" \
  --out "$T/e3.png"
expect 2 "--steps 0" "number of sampling steps out of range" -- "$RENDER" "${BASE[@]}" --prompt "a dress" --steps 0 \
  --out "$T/e4.png"
expect 2 "--n 0" "number of images per prompt must be at least 1" -- "$RENDER" "${BASE[@]}" --prompt "a dress" --n 0 \
  --out "$T/e5.png"
expect 2 "--steps beyond the schedule" "1..1000" -- "$RENDER" "${BASE[@]}" --prompt "a dress" --steps 1001 --out "$T/e6.png"
expect 0 "a repeated flag: the last one wins" "" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" --n 1 --out "$T/last.png"
expect 2 "output directory cannot be created" "output directory" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" \
  --out /proc/ctok-no-such-dir/grid.png
touch "$T/afile"
expect 2 "output directory is a file" "output directory" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" \
  --out "$T/afile/grid.png"
if [ "$(id -u)" != 0 ]; then
  mkdir -p "$T/ro" && chmod 555 "$T/ro"
  expect 2 "output directory not writable" "not writable" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" --out "$T/ro/grid.png"
fi
expect 2 "existing output without --force" "--force" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" --out "$T/b.png"
expect 2 "unknown sampler" "unknown sampler" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" --sampler plms --out "$T/e7.png"
expect 2 "no prompt" "--prompt" -- "$RENDER" "${COMMON[@]}" --out "$T/e8.png"
expect 2 "eta out of range" "eta" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" --eta 2 --out "$T/e9.png"
expect 2 "--device cuda on a build without CUDA is a clear error" "CUDA" -- "$RENDER" "${COMMON[@]}" --prompt "a dress" \
  --device cuda --out "$T/e10.png" || echo "     (skip the above if this build has CUDA)"
mkdir -p "$T/badsha"
cp "$BUNDLE"/* "$T/badsha/"
"$PY" - "$T/badsha/bundle.json" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
j["sha256"]["unet.pt"] = "0" * 64
json.dump(j, open(sys.argv[1], "w"), indent=2)
PYEOF
expect 2 "sha256 mismatch" "unet.pt" -- "$RENDER" --bundle "$T/badsha" --threads 1 --steps 2 --n 1 --prompt "a dress" --out "$T/e11.png"
expect 0 "--no-verify skips it" "" -- "$RENDER" --bundle "$T/badsha" --threads 1 --steps 2 --n 1 --prompt "a dress" \
  --no-verify --out "$T/e12.png"

finish
