#!/usr/bin/env bash
# Build the libFuzzer targets (tests/fuzz/, clang + ASan + UBSan) and run each for a bounded
# time, one after another. Non-zero if any target crashes, hangs, leaks or breaks an invariant.
#
#   scripts/fuzz.sh                       # every target, 60 s each
#   scripts/fuzz.sh -t 600 safetensors    # one target, 10 minutes
#   scripts/fuzz.sh -t 3 --fresh          # the CI smoke pass (tests/cli/test_fuzz_smoke.sh)
#
# Options: -t SECONDS per target (default $CTOK_FUZZ_SECONDS or 60); -b DIR build folder
# (default $CTOK_FUZZ_BUILD_DIR or build-fuzz); --fresh: start each working corpus from the
# committed seeds again; --no-build: use the targets already built.
#
# Per target, first every input under tests/fuzz/regressions/<target>/ is replayed (each one
# crashed once; a crash now is a regression), then the fuzzer runs on a working corpus
# <build>/work/corpus/<target> seeded from tests/fuzz/corpus/<target> and kept between runs.
# Crash inputs land in <build>/work/artifacts/<target>/; the figures go to
# <build>/work/summary.tsv. docs/reliability.md says what to do with a crash.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${CTOK_FUZZ_SECONDS:-60}
build=${CTOK_FUZZ_BUILD_DIR:-$root/build-fuzz}
fresh=0
do_build=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    -t) seconds=$2; shift 2 ;;
    -b) build=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all_targets=(clip_bpe sentencepiece safetensors token_file bundle_manifest deepfashion2)
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

dict_of() {
  case "$1" in
    clip_bpe|sentencepiece) echo text ;;
    safetensors|token_file) echo safetensors ;;
    *) echo json ;;
  esac
}

cxx=${CTOK_FUZZ_CXX:-$(command -v clang++-14 || command -v clang++ || true)}
cc=${CTOK_FUZZ_CC:-$(command -v clang-14 || command -v clang || true)}
if [ -z "$cxx" ] || [ -z "$cc" ]; then
  echo "fuzz.sh: clang not found (scripts/deps.sh installs clang-14 and libclang-rt-14-dev)" >&2
  exit 1
fi
if [ $do_build -eq 1 ]; then
  cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" >/dev/null
  cmake --build "$build" -j "${CTOK_JOBS:-2}" >/dev/null
fi

symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH=$symbolizer
export ASAN_OPTIONS=${ASAN_OPTIONS:-"detect_leaks=1:allocator_may_return_null=1"}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-"print_stacktrace=1:halt_on_error=1"}
export CTOK_SPM_SHIM=${CTOK_SPM_SHIM:-$build/libctok_spm_shim.so}

work=$build/work
mkdir -p "$work"
summary=$work/summary.tsv
printf 'target\tseconds\texecs\tcorpus_files\tcorpus_bytes\tregressions\tresult\n' >"$summary"
failed=0
for t in "${targets[@]}"; do
  bin=$build/fuzz_$t
  if [ ! -x "$bin" ]; then echo "fuzz.sh: no target $t ($bin)" >&2; exit 2; fi
  corpus=$work/corpus/$t
  artifacts=$work/artifacts/$t
  log=$work/$t.log
  [ $fresh -eq 1 ] && rm -rf "$corpus"
  mkdir -p "$corpus" "$artifacts"
  cp -n "$root/tests/fuzz/corpus/$t"/* "$corpus"/ 2>/dev/null || true

  result=ok
  regs=()
  if [ -d "$root/tests/fuzz/regressions/$t" ]; then
    while IFS= read -r -d '' f; do regs+=("$f"); done \
      < <(find "$root/tests/fuzz/regressions/$t" -type f ! -name '*.md' -print0 | sort -z)
  fi
  if [ ${#regs[@]} -gt 0 ]; then
    if ! "$bin" -timeout=30 "${regs[@]}" >"$work/$t.regressions.log" 2>&1; then
      result="REGRESSION (see $work/$t.regressions.log)"
      failed=1
    fi
  fi

  execs=0
  if [ "$result" = ok ]; then
    set +e
    "$bin" "$corpus" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -max_len=8192 \
      -dict="$root/tests/fuzz/dict/$(dict_of "$t").dict" -artifact_prefix="$artifacts/" \
      -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ $rc -ne 0 ]; then
      result="CRASH rc=$rc: $(grep -m1 -oE "Test unit written to [^ ]+" "$log" || echo "see $log")"
      failed=1
    fi
  fi
  files=$(find "$corpus" -type f | wc -l)
  bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$seconds" "${execs:-0}" "$files" "$bytes" "${#regs[@]}" "$result" >>"$summary"
  printf 'fuzz %-16s %4ss  execs %-9s corpus %5s files %8s bytes  regressions %s  %s\n' \
    "$t" "$seconds" "${execs:-0}" "$files" "$bytes" "${#regs[@]}" "$result"
done
exit $failed
