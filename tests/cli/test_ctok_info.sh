#!/usr/bin/env bash
# ctok-info end to end: bundle summary and sha256 verification, token files (ours,
# diffusers, corrupt, width mismatch), tokenisation (CLIP BPE against the reference ids,
# SentencePiece on the fixture bundle, custom tokens, stdin JSON lines), exit codes.
#   bash tests/cli/test_ctok_info.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
INFO="$BIN/ctok-info"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
BPE="$SRC/../shared/clip/bpe_simple_vocab_16e6.txt.gz"
REF="$SRC/../shared/clip/reference-tokens.jsonl"


# Write a safetensors file with the standard library: write_st PATH NAME ROWS COLS [META_JSON] [DTYPE]
write_st() {
  "$PY" - "$@" <<'PYEOF'
import json, struct, sys
path, name, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
meta = json.loads(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else None
dtype = sys.argv[6] if len(sys.argv) > 6 else "F32"
vals = [0.5 * (i + 1) for i in range(rows * cols)]
data = struct.pack("<%df" % len(vals), *vals) if dtype == "F32" else struct.pack("<%dq" % len(vals), *map(int, vals))
shape = [cols] if rows == 0 else [rows, cols]
if rows == 0:
    data = struct.pack("<%df" % cols, *[0.5 * (i + 1) for i in range(cols)])
header = {name: {"dtype": dtype, "shape": shape, "data_offsets": [0, len(data)]}}
if meta is not None:
    header["__metadata__"] = meta
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + data)
PYEOF
}

[ -x "$INFO" ] || { echo "FAIL ctok-info not built at $INFO"; exit 1; }

# ---- usage and exit codes -------------------------------------------------------------
expect 0 "--version" "0.1.0" -- "$INFO" --version
expect 0 "--help" "tokenize" -- "$INFO" --help
expect 2 "unknown flag" "ctok-info: error:" -- "$INFO" --bogus
expect 2 "unknown flag after subcommand" "" -- "$INFO" token --bogus x
expect 2 "no subcommand" "ctok-info: error:" -- "$INFO"
expect 2 "token: missing file" "$T/absent.safetensors" -- "$INFO" token "$T/absent.safetensors"
expect 2 "bundle: missing dir" "$T/nobundle" -- "$INFO" bundle "$T/nobundle"
expect 2 "tokenize: --context 0" "" -- "$INFO" tokenize --tokenizer "clip-bpe:$BPE" --context 0 a
expect 2 "tokenize: missing tokenizer file" "$T/none.gz" -- "$INFO" tokenize --tokenizer "clip-bpe:$T/none.gz" a

# ---- token files ----------------------------------------------------------------------
write_st "$T/learned_embeds.safetensors" "<cat-toy>" 2 4 '{"format": "pt"}'
if expect 0 "token: diffusers file" "<cat-toy>" -- "$INFO" token "$T/learned_embeds.safetensors"; then
  grep -qF "shape:    [2, 4]" "$T/out" && pass "token: shape printed" || fail "token: shape printed"
  grep -q "^format: *diffusers" "$T/out" && pass "token: diffusers detected" || fail "token: diffusers detected"
  # norms: row 0 = 0.5,1,1.5,2 -> sqrt(7.5) = 2.73861
  grep -qF "norm[0]:  2.73861" "$T/out" && pass "token: norm" || fail "token: norm ($(grep norm "$T/out" | head -1))"
fi
write_st "$T/one.safetensors" "<one>" 0 6
if expect 0 "token: 1-D tensor" "[1, 6]" -- "$INFO" token "$T/one.safetensors"; then :; fi
write_st "$T/ours.safetensors" "<my-dress>" 1 4 \
  '{"format": "ctok-token/1", "token": "<my-dress>", "parent": "dress", "bundle": "b", "bundle_sha256": "", "subspace_words": "[\"red\"]", "coefficients": "[0.5]", "config": "{\"steps\": 3}", "metrics": "{}"}'
if expect 0 "token: ctok-token/1" "parent:   dress" -- "$INFO" token "$T/ours.safetensors"; then
  grep -qF 'subspace_words: ["red"]' "$T/out" && pass "token: subspace words" || fail "token: subspace words"
fi
write_st "$T/newer.safetensors" "<t>" 1 4 '{"format": "ctok-token/9", "token": "<t>"}'
expect 2 "token: newer version refused" "ctok-token/9" -- "$INFO" token "$T/newer.safetensors"
write_st "$T/int.safetensors" "<t>" 1 4 '' I64
expect 2 "token: integer dtype refused" "floating point" -- "$INFO" token "$T/int.safetensors"
head -c 40 "$T/learned_embeds.safetensors" >"$T/cut.safetensors"
expect 2 "token: truncated file" "cut.safetensors" -- "$INFO" token "$T/cut.safetensors"
printf 'not a safetensors file at all' >"$T/text.safetensors"
expect 2 "token: garbage file" "text.safetensors" -- "$INFO" token "$T/text.safetensors"

# ---- bundle ---------------------------------------------------------------------------
if [ -f "$BUNDLE/bundle.json" ]; then
  if expect 0 "bundle: tiny fixture" "format ctok-bundle, version 1" -- "$INFO" bundle "$BUNDLE"; then
    listed=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["sha256"]))' "$BUNDLE/bundle.json")
    ok=$(grep -cE "^  OK +[0-9a-f]{64}  " "$T/out")  # sha256 lines (the self-test adds parity OK lines)
    [ "$ok" = "$listed" ] && pass "bundle: $ok files OK" || fail "bundle: $ok OK lines, $listed listed"
    grep -q "MISMATCH" "$T/out" && fail "bundle: unexpected MISMATCH" || pass "bundle: no mismatch"
  fi
  expect 0 "bundle via --bundle after subcommand" "OK" -- "$INFO" bundle --bundle "$BUNDLE"
  expect 0 "bundle via CTOK_BUNDLE" "OK" -- env CTOK_BUNDLE="$BUNDLE" "$INFO" bundle
  cp -r "$BUNDLE" "$T/tampered"
  printf 'x' >>"$T/tampered/unet.pt"
  if expect 2 "bundle: tampered file" "do not match the sha256" -- "$INFO" bundle "$T/tampered"; then
    grep -q "^  MISMATCH .*unet.pt" "$T/out" && pass "bundle: MISMATCH names unet.pt" || fail "bundle: MISMATCH line"
  fi
  cp -r "$BUNDLE" "$T/broken"
  rm "$T/broken/image_encoder.pt"
  expect 2 "bundle: missing file names key" "image.file" -- "$INFO" bundle "$T/broken"
  sed 's/"version": 1/"version": 7/' "$BUNDLE/bundle.json" >"$T/broken/bundle.json"
  expect 2 "bundle: newer version" "newer than this build reads" -- "$INFO" bundle "$T/broken"
  # token width against the bundle
  width=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"]["width"])' "$BUNDLE/bundle.json")
  expect 2 "token: width mismatch" "token width 4 does not match bundle text.width $width" -- \
    "$INFO" token --bundle "$BUNDLE" "$T/learned_embeds.safetensors"
  write_st "$T/fits.safetensors" "<fits>" 1 "$width"
  expect 0 "token: width matches" "width matches" -- "$INFO" token --bundle "$BUNDLE" "$T/fits.safetensors"
  # SentencePiece through the bundle (the dlopen'ed shim next to libtorch)
  if expect 0 "tokenize: bundle sentencepiece" "eos_index" -- "$INFO" tokenize --bundle "$BUNDLE" a red dress; then
    bos=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["text"]["bos_id"])' "$BUNDLE/bundle.json")
    grep -q "^ids: *$bos " "$T/out" && pass "tokenize: starts with bos $bos" || fail "tokenize: bos ($(grep ids "$T/out"))"
  fi
else
  echo "skip bundle checks: $BUNDLE/bundle.json not present yet"
fi

# ---- tokenize with CLIP BPE -----------------------------------------------------------
if [ -f "$BPE" ]; then
  if expect 0 "tokenize: clip-bpe" "49406 320 1125 539 320 2368 49407" -- \
    "$INFO" tokenize --tokenizer "clip-bpe:$BPE" a photo of a cat; then
    grep -qF "eos_index: 6 (context 77" "$T/out" && pass "tokenize: eos index" || fail "tokenize: eos index"
  fi
  expect 0 "tokenize: custom token" "49408" -- \
    "$INFO" tokenize --tokenizer "clip-bpe:$BPE" --token "<my-dress>" --json "a photo of a <my-dress> dress"
  grep -qF '"custom":[[5,"<my-dress>"]]' "$T/out" && pass "tokenize: custom position" || fail "tokenize: custom position ($(cat "$T/out"))"
  expect 0 "tokenize: --token before TEXT" "custom:    <x> at 5" -- \
    "$INFO" tokenize --tokenizer "clip-bpe:$BPE" --token "<x>" a photo of a "<x>" dress
  expect 2 "tokenize: colliding custom token" "collides" -- "$INFO" tokenize --tokenizer "clip-bpe:$BPE" --token dress a
  expect 0 "tokenize: truncation" "truncated" -- "$INFO" tokenize --tokenizer "clip-bpe:$BPE" --context 4 a photo of a cat
  if [ -f "$REF" ]; then
    # one text per line: texts with line breaks cannot travel this way
    "$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if "\n" not in r["text"] and "\r" not in r["text"]: print(json.dumps(r))' "$REF" >"$T/ref"
    "$PY" -c 'import json,sys
for l in open(sys.argv[1]): print(json.loads(l)["text"])' "$T/ref" >"$T/texts"
    "$INFO" tokenize --tokenizer "clip-bpe:$BPE" <"$T/texts" >"$T/lines" 2>"$T/err"
    if "$PY" - "$T/ref" "$T/lines" <<'PYEOF'; then pass "tokenize: stdin JSON lines match reference ids"; else fail "tokenize: stdin vs reference"; fi
import json, sys
ref = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l) for l in open(sys.argv[2])]
assert len(ref) == len(got), (len(ref), len(got))
bad = [(r["text"], r["ids"], g["ids"]) for r, g in zip(ref, got) if r["ids"][:77] != g["ids"] and len(r["ids"]) <= 77]
assert not bad, bad[:3]
assert all(g["text"] == r["text"] for r, g in zip(ref, got))
assert len(got) > 50, len(got)
PYEOF
  fi
else
  echo "skip clip-bpe checks: $BPE not found"
fi

finish
