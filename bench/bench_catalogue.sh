#!/usr/bin/env bash
# The catalogue benches of issue 14 (docs/catalogue.md), on the default bundle:
#  1. embedding images/s of `ctok-index build` (decode + crop + encode, all cores for decode)
#     on 64x64 and on 640x480 JPEGs, beside the image encoder alone (same run) and beside a
#     Python loop on the same bundle (bench_catalogue.py);
#  2. FAISS search latency, recall@10 of IVF against exact, bytes per item, for 1M x 128 and
#     1M x 768 clustered vectors (bench_catalogue_faiss);
#  3. merging 4 shard stores of 250k and indexing the result (bench_catalogue_merge).
#
#   bench/bench_catalogue.sh [BIN_DIR] [N_SMALL=2000] [N_LARGE=300] [--no-faiss]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/build/bin}
NS=${2:-2000}
NL=${3:-300}
FAISS=${4:-}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
/usr/bin/python3 - "$T" "$NS" "$NL" <<'PY'
import os, sys
import numpy as np
from PIL import Image
t, ns, nl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
for name, n, (w, h) in (("small", ns, (64, 64)), ("large", nl, (640, 480))):
    os.makedirs(os.path.join(t, name), exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)   # blocky, compressible like photos
        im = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        im.save(os.path.join(t, name, f"{i:06d}.jpg"), quality=90)
PY
for kind in small large; do
  echo "== ${kind} JPEGs ($(ls "$T/$kind" | wc -l) files, $(identify -format '%wx%h' "$T/$kind/000000.jpg" 2>/dev/null || /usr/bin/python3 -c "from PIL import Image; print('x'.join(map(str, Image.open('$T/$kind/000000.jpg').size)))"))"
  "$BIN/ctok-index" build --images "$T/$kind" --out "$T/store-$kind" --index none 2>&1 | grep -E "embedded" || true
  /usr/bin/python3 "$root/bench/bench_catalogue.py" --bundle "$root/models/default" --images "$T/$kind" --threads 1
done
if [ "$FAISS" != "--no-faiss" ]; then
  echo "== FAISS 1M x 128 (nlist 256, nprobe 16, PQ 16)"
  OMP_NUM_THREADS=2 "$BIN/bench_catalogue_faiss" 1000000 128 256 16 16
  echo "== FAISS 1M x 768 (nlist 256, nprobe 16, PQ 96)"
  OMP_NUM_THREADS=2 "$BIN/bench_catalogue_faiss" 1000000 768 256 16 96
fi
echo "== merge 4 shards of 250k x 128, then index"
OMP_NUM_THREADS=2 "$BIN/bench_catalogue_merge" 4 250000 128 1024 "$T/merge"
