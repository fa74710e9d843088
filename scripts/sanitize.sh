#!/usr/bin/env bash
# One command: build the unit tests and tools with AddressSanitizer + UndefinedBehaviorSanitizer
# (gcc) into ${CTOK_ASAN_BUILD_DIR:-build-asan} and run them with ctest. Non-zero on any
# failure, sanitizer report included (UBSan is made fatal, so a report fails its test).
#
#   scripts/sanitize.sh                 # build + every unit and command-line test
#   scripts/sanitize.sh -R SafeTensors  # extra arguments go to ctest
#
# Left out of the run: the Python tests (not instrumented) and the fuzz smoke test (it has its
# own clang build, scripts/fuzz.sh). docs/reliability.md says what this covers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CTOK_ASAN_BUILD_DIR:-$root/build-asan}
jobs=${CTOK_JOBS:-$(nproc)}

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
mkdir -p "$build"

# Leak checking stays on for our code; libtorch's and OpenMP's process-lifetime allocations
# (thread pools, registries, caches freed by the OS at exit) are suppressed by library name.
# Set before the build too: gtest_discover_tests runs each test binary at build time.
supp="$build/lsan.supp"
cat >"$supp" <<'EOF2'
leak:libtorch_cpu.so
leak:libc10.so
leak:libgomp.so
leak:libopenblas
leak:libopencv_
leak:libsentencepiece.so
EOF2
export ASAN_OPTIONS=${ASAN_OPTIONS:-"detect_leaks=1:abort_on_error=0"}
export LSAN_OPTIONS=${LSAN_OPTIONS:-"suppressions=$supp:print_suppressions=0"}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-"print_stacktrace=1:halt_on_error=1"}

# The SentencePiece shim must stay uninstrumented: sanitizer builds load it into a link
# namespace of its own (dlmopen, src/text/sentencepiece_tokenizer.cpp), where a second ASan
# runtime refuses to start. A project-include hook switches the sanitizers off for that one
# target once the main CMakeLists has defined it; it is the only shared library, so the
# shared-library link flags carry no sanitizer either.
hook="$build/sanitize-hook.cmake"
cat >"$hook" <<'EOF2'
function(ctok_unsanitize_shim)
  if(TARGET ctok_spm_shim)
    target_compile_options(ctok_spm_shim PRIVATE -fno-sanitize=all)
    target_link_options(ctok_spm_shim PRIVATE -fno-sanitize=all)
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL ctok_unsanitize_shim)
EOF2

cmake -S "$root" -B "$build" -DCMAKE_PROJECT_INCLUDE="$hook" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_C_FLAGS="$san" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="" \
  -DCTOK_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$jobs"

cd "$build"
ctest --output-on-failure -j "${CTOK_TEST_JOBS:-$jobs}" --timeout 1800 \
  -E '^python\.|^cli\.test_fuzz_smoke$' "$@"
