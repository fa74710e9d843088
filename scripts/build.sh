#!/usr/bin/env bash
# Configure and build ctok into ${CTOK_BUILD_DIR:-build} (Release).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CTOK_BUILD_DIR:-$root/build}
jobs=${CTOK_JOBS:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=${CTOK_BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$build" -j "$jobs"
