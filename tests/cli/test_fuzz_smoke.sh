#!/usr/bin/env bash
# CI's short fuzz pass: builds the libFuzzer targets (tests/fuzz/, clang + ASan + UBSan) once
# into <build>/fuzz, replays every committed regression input, then fuzzes each target for a
# few seconds from the committed seeds. Fails on any crash, so a regression surfaces in ctest.
# The long run is scripts/fuzz.sh (docs/reliability.md).
#
#   bash tests/cli/test_fuzz_smoke.sh <build>/bin <source dir>
set -euo pipefail
bin=$1
src=$2
build=$(cd "$bin/.." && pwd)/fuzz
seconds=${CTOK_FUZZ_SMOKE_SECONDS:-3}
CTOK_JOBS=${CTOK_JOBS:-2} CTOK_FUZZ_BUILD_DIR="$build" bash "$src/scripts/fuzz.sh" -t "$seconds" --fresh
