# Shared by tests/cli/test_ctok_*.sh (sourced): a temporary folder $T removed on exit,
# pass/fail counters, `expect`, and `finish` (summary line; non-zero status on failure).

T=$(mktemp -d)
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
# Generated negatives (ctok-learn without --negatives) are cached here, not in ~/.cache.
export CTOK_CACHE_DIR="$T/cache"
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# expect CODE NAME NEEDLE -- command...   NEEDLE must appear in stdout or stderr ("" = none)
expect() {
  local code=$1 name=$2 needle=$3
  shift 4
  "$@" >"$T/out" 2>"$T/err" </dev/null
  local rc=$?
  if [ "$rc" != "$code" ]; then
    fail "$name: exit $rc, expected $code"; sed 's/^/     /' "$T/err" | tail -5; return 1
  fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" "$T/out" "$T/err"; then
    fail "$name: output lacks '$needle'"; sed 's/^/     /' "$T/out" "$T/err" | tail -8; return 1
  fi
  pass "$name"
}

# small_fashionworld SRC: a 4-identity FashionWorld validation split in $T/fw for the tests
# that learn on the tiny fixture bundle; exits 0 (skipped) without Debian's Fashion-MNIST.
small_fashionworld() {
  if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    echo "SKIPPED: no /usr/share/datasets/fashion-mnist (the FashionWorld generator's source)"
    exit 0
  fi
  PYTHONPATH=$1/scripts/python /usr/bin/python3 -m ctok_py.fashionworld --out "$T/fw" --splits validation \
    --val-ids 4 --seed 0 >/dev/null 2>&1 || { fail "generate a small FashionWorld"; finish; exit 1; }
}

finish() {
  echo "$fails failure(s)"
  [ "$fails" = 0 ]
}

# pick_concept ANNOS: "PAIR STYLE PARENT" of the first concept (by pair_id, style) with 2+
# user crops in a FashionWorld annos/ folder (what the tests learn a 2-shot token of).
pick_concept() {
  /usr/bin/python3 - "$1" <<'PY'
import collections, json, os, sys
d = sys.argv[1]; users = collections.Counter(); parent = {}
for name in sorted(os.listdir(d)):
    a = json.load(open(os.path.join(d, name)))
    for k, it in a.items():
        if k.startswith("item") and it.get("style", 0) > 0:
            parent[(a["pair_id"], it["style"])] = it["parent"]
            if a["source"] == "user": users[(a["pair_id"], it["style"])] += 1
p, s = min(k for k, n in users.items() if n >= 2)
print(p, s, parent[(p, s)])
PY
}
