#!/usr/bin/env bash
# Exact search speed (issue 12, docs/results.md "Search"): bench_search on random unit
# galleries of 100k x 128 and 1M x 768 with 1000 queries, at 1 and 2 threads, under
# /usr/bin/time -v for the peak RSS. Run it on an otherwise idle machine.
#
#   bench/bench_search.sh [BIN_DIR] [extra bench_search flags]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$root/build/bin}
shift || true
/usr/bin/time -v "$BIN/bench_search" --sizes 100000x128,1000000x768 --queries 1000 --threads 1,2 "$@" 2> >(grep -E "Maximum resident|Elapsed" >&2)
