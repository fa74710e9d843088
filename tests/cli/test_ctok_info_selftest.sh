#!/usr/bin/env bash
# ctok-info bundle's self-test: every model loaded with its dry forward passes and parity
# with reference.safetensors (exit 2 naming the model file and manifest key); --fast keeps
# the manifest + sha256-only check.
#   bash tests/cli/test_ctok_info_selftest.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
INFO="$BIN/ctok-info"
DEFAULT="$SRC/models/default"
TINY="$SRC/tests/data/tiny_bundle"

[ -x "$INFO" ] || { echo "FAIL ctok-info not built at $INFO"; exit 1; }
[ -f "$DEFAULT/bundle.json" ] || { echo "FAIL $DEFAULT/bundle.json missing"; exit 1; }

# The shipped bundle passes the full self-test.
if expect 0 "default: self-test" "parity with" -- "$INFO" bundle "$DEFAULT"; then
  grep -q "^  FAIL " "$T/out" && fail "default: a FAIL line" || pass "default: no FAIL line"
  grep -q "^  OK   text.hidden" "$T/out" && pass "default: text.hidden checked" || fail "default: text.hidden line"
fi
if [ -f "$TINY/bundle.json" ]; then
  expect 0 "tiny fixture: self-test" "load:      OK" -- "$INFO" bundle "$TINY"
fi

# A copy whose manifest says text.width 129 (the encoder is 128 wide): the sha256 of
# the model files still match, so only loading the models finds it.
cp -r "$DEFAULT" "$T/wide"
sed 's/"width": 128/"width": 129/' "$DEFAULT/bundle.json" >"$T/wide/bundle.json"
grep -q '"width": 129' "$T/wide/bundle.json" || fail "setup: width 129 copy"
if expect 2 "width 129: exit 2 naming text.width" "text.width" -- "$INFO" bundle "$T/wide"; then
  grep -qF "text_encoder.pt" "$T/err" && pass "width 129: names the text encoder" || fail "width 129: model named ($(cat "$T/err"))"
fi
if expect 0 "width 129 --fast: manifest + sha256 only" "OK" -- "$INFO" bundle --fast "$T/wide"; then
  grep -q "^load:" "$T/out" && fail "--fast: models loaded" || pass "--fast: no model loaded"
fi

# A reference output that no longer matches (its sha256 re-listed, so only parity can
# find it): exit 2 naming the reference key and the model's manifest key.
cp -r "$DEFAULT" "$T/ref"
/usr/bin/python3 - "$T/ref/reference.safetensors" "$T/ref/bundle.json" <<'PYEOF' || fail "setup: perturb reference"
import hashlib, json, struct, sys
p, manifest = sys.argv[1], sys.argv[2]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
e = h["text.hidden"]
assert e["dtype"] == "F32", e["dtype"]
off = 8 + n + e["data_offsets"][0]
v = struct.unpack("<f", b[off:off + 4])[0]
b[off:off + 4] = struct.pack("<f", v + 1.0)
open(p, "wb").write(bytes(b))
m = open(manifest).read()
old = [v for k, v in json.loads(m)["sha256"].items() if k == "reference.safetensors"][0]
open(manifest, "w").write(m.replace(old, hashlib.sha256(bytes(b)).hexdigest()))
PYEOF
if expect 2 "perturbed reference: exit 2" "text.hidden" -- "$INFO" bundle "$T/ref"; then
  grep -qF "text.file" "$T/err" && pass "perturbed reference: names text.file" || fail "perturbed reference: key ($(cat "$T/err"))"
fi
expect 0 "perturbed reference --fast" "OK" -- "$INFO" bundle --fast "$T/ref"

finish
