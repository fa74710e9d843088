#!/usr/bin/env bash
# The static reports in a real browser (headless Debian chromium): ctok-search's contact
# sheet and ctok-gair's report load from their folder alone (relative paths), every image
# they link renders (a copy without its image files looks different), and the DOM holds
# what the report promises. Skipped when chromium is not installed.
#   bash tests/cli/test_reports_browser.sh BIN_DIR SOURCE_DIR
set -u
BIN=${1:?bin dir}
SRC=${2:?source dir}
. "$SRC/tests/cli/lib.sh"
PY=/usr/bin/python3
BUNDLE="$SRC/tests/data/tiny_bundle"
export CTOK_ATTRIBUTES="$SRC/configs/attributes" OMP_NUM_THREADS=1
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
  echo "SKIPPED: no chromium (scripts/deps.sh installs it)"
  exit 0
fi
C=(--bundle "$BUNDLE" --threads 1 -q)
small_fashionworld "$SRC"

shot() {  # shot HTML PNG: a headless screenshot (no sandbox: CI runs as root)
  timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
    --window-size=1200,1600 --screenshot="$2" "file://$1" >/dev/null 2>&1
}
dom() { timeout 120 "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$1" 2>/dev/null; }

expect 0 "a store" "" -- "$BIN/ctok-index" "${C[@]}" build --df2 "$T/fw" --split validation --out "$T/store"
IMG=$(ls "$T"/fw/validation/image/*.jpg | head -1)
expect 0 "a search report" "" -- "$BIN/ctok-search" "${C[@]}" --gallery "$T/store" --query "a photo of a shirt" \
  --image "$IMG" --top 6 --out "$T/search"
read -r PAIR STYLE PARENT < <(pick_concept "$T/fw/validation/annos")
expect 0 "a token" "" -- "$BIN/ctok-learn" "${C[@]}" --df2 "$T/fw" --split validation --pair-id "$PAIR" --style "$STYLE" \
  --shots 2 --parent "$PARENT" --token "<c>" --steps 2 --batch 2 --generated-negatives 2 --out "$T/tok.safetensors"
expect 0 "a GAIR report" "" -- "$BIN/ctok-gair" "${C[@]}" --token "$T/tok.safetensors" \
  --query "a photo of a <c> $PARENT in red" --gallery "$T/store" --n 2 --steps 2 --alphas 0,1 --top-k 4 --out "$T/gair"

for r in search gair; do
  # Moved away from where it was written: only relative links can work.
  mv "$T/$r" "$T/moved-$r"
  cp -r "$T/moved-$r" "$T/broken-$r"
  find "$T/broken-$r" -name '*.png' -delete
  shot "$T/moved-$r/index.html" "$T/$r.png"
  shot "$T/broken-$r/index.html" "$T/$r-broken.png"
  if [ -s "$T/$r.png" ] && $PY - "$T/$r.png" "$T/$r-broken.png" <<'EOF'
import sys
from PIL import Image, ImageChops
a, b = (Image.open(p).convert("RGB") for p in sys.argv[1:])
assert a.size == b.size, (a.size, b.size)
diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 24 else 0)
changed = sum(1 for v in diff.getdata() if v) / (a.size[0] * a.size[1])
assert changed > 0.01, f"the images change only {changed:.4f} of the page: they do not render"
EOF
  then pass "$r report: every linked image renders from the moved folder"; else fail "$r report: images do not render"; fi
done

dom "$T/moved-search/index.html" > "$T/search.dom"
$PY - "$T/search.dom" <<'EOF' && pass "search sheet DOM: 2 queries, 6 hits each, the query image" || fail "search sheet DOM"
import re, sys
d = open(sys.argv[1]).read()
assert d.count('<section class="query">') == 2, d.count('<section class="query">')
assert len(re.findall(r'src="crops/q1-\d+\.png"', d)) == 6 and len(re.findall(r'src="crops/q2-\d+\.png"', d)) == 6
assert 'crops/q2-query.png' in d and "image not readable" not in d
assert 'src="/' not in d and "file://" not in d
EOF
dom "$T/moved-gair/index.html" > "$T/gair.dom"
$PY - "$T/gair.dom" <<'EOF' && pass "GAIR report DOM: the chosen alpha, renders and hits" || fail "GAIR report DOM"
import sys
d = open(sys.argv[1]).read()
assert "chosen" in d and d.count('src="renders/') == 4 and d.count('src="hits/') == 8, (d.count('src="renders/'), d.count('src="hits/'))
EOF
finish
