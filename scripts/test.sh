#!/usr/bin/env bash
# One command: install what is missing, build, run every test (ctest). Non-zero on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/deps.sh"
bash "$root/scripts/build.sh"
build=${CTOK_BUILD_DIR:-$root/build}
cd "$build"
ctest --output-on-failure -j "${CTOK_JOBS:-$(nproc)}" --timeout 900
