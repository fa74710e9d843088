# Kill-and-resume harness, sourced by tests/cli/test_kill_resume_<tool>.sh (docs/reliability.md).
#
# A tool's test defines how to run it and how to resume it, then calls kr_scenario once per
# kill point. A kill point is a CTOK_FAULT spec for tests/fault/fault_inject.c
# (WHEN:OP:PATTERN:N: SIGKILL before/after the N-th write/fsync/rename/unlink on a matching
# path), so every kill lands at the same place on every run and machine, and a kill point
# that is never reached fails the test instead of passing silently.
#
#   source tests/fault/kill_resume.sh
#   kr_setup "$work" ctok-learn
#   kr_fresh() { ...; }     # start the tool from nothing, outputs in $KR_RUN (args: none)
#   kr_resume() { ...; }    # continue after a kill (whatever the tool offers: --resume, rerun)
#   kr_reset() { ...; }     # clear $KR_RUN for the next scenario (caches included or not)
#   kr_check() { ...; }     # compare $KR_RUN's outputs with the reference; non-zero + message if not
#   kr_scenario "mid-optimisation: after the step-2 checkpoint" after:rename:.ckpt:1
#   kr_finish               # summary (copied to $KR_KEEP when set); exit status
#
# Every kr_fresh / kr_resume runs under LD_PRELOAD of the fault library with $CTOK_FAULT set
# for the kill being tried (unset otherwise). After each kill the run folder is audited
# (tests/fault/compare.py audit): no partial or corrupt file may sit where a reader would
# take it for a result.

KR_SRC=${KR_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
KR_PY=${KR_PY:-/usr/bin/python3}

# kr_setup WORK TOOL [BINARY]: BINARY, when given, is checked for a sanitizer runtime, which
# must come first in LD_PRELOAD (scripts/sanitize.sh builds).
kr_setup() {
  KR_WORK=$1
  KR_TOOL=$2
  KR_RUN=$KR_WORK/run
  KR_SUMMARY=$KR_WORK/kill_resume.tsv
  KR_FAILED=0
  KR_KILLS=0
  KR_SCENARIOS=0
  mkdir -p "$KR_WORK" "$KR_RUN"
  KR_LIB=$KR_WORK/libctok_fault.so
  cc -shared -fPIC -O1 -o "$KR_LIB" "$KR_SRC/tests/fault/fault_inject.c" -ldl -lpthread
  KR_PRELOAD=$KR_LIB
  if [ -n "${3:-}" ]; then
    local asan
    asan=$(ldd "$3" 2>/dev/null | awk '/libasan\.so/ {print $3; exit}')
    [ -n "$asan" ] && KR_PRELOAD="$asan $KR_LIB"
  fi
  printf 'tool\tscenario\tkills\tresumes\tstatus\tdetail\n' >"$KR_SUMMARY"
}

# Runs "$@" with the fault library; the command must die by SIGKILL at the kill point.
kr_killed() {
  local spec=$1
  shift
  local rc=0
  CTOK_FAULT=$spec LD_PRELOAD=$KR_PRELOAD "$@" >>"$KR_WORK/scenario.log" 2>&1 || rc=$?
  if [ "$rc" -ne 137 ]; then
    echo "kill point $spec not reached: exit status $rc (expected 137, SIGKILL)" >>"$KR_WORK/scenario.log"
    return 1
  fi
  KR_KILLS=$((KR_KILLS + 1))
  return 0
}

kr_audit() {
  "$KR_PY" "$KR_SRC/tests/fault/compare.py" audit "$KR_RUN" >>"$KR_WORK/scenario.log" 2>&1
}

# kr_scenario NAME SPEC [SPEC...]: kr_reset; kr_fresh killed at SPEC; for each further SPEC,
# kr_resume killed there; then kr_resume to the end and kr_check.
kr_scenario() {
  local name=$1
  shift
  KR_SCENARIOS=$((KR_SCENARIOS + 1))
  : >"$KR_WORK/scenario.log"
  local result=ok kills=0 resumes=0 first=1
  kr_reset
  for spec in "$@"; do
    if [ $first -eq 1 ]; then
      kr_killed "$spec" kr_fresh || result="kill point not reached: $spec"
      first=0
    else
      resumes=$((resumes + 1))
      kr_killed "$spec" kr_resume || result="kill point not reached: $spec"
    fi
    [ "$result" = ok ] || break
    kills=$((kills + 1))
    kr_audit || { result="partial/corrupt file after kill at $spec"; break; }
  done
  if [ "$result" = ok ]; then
    resumes=$((resumes + 1))
    if ! kr_resume >>"$KR_WORK/scenario.log" 2>&1; then
      result="resume failed"
    elif ! kr_audit; then
      result="partial/corrupt file after the resumed run"
    elif ! kr_check >>"$KR_WORK/scenario.log" 2>&1; then
      result="DIFFERS"
    fi
  fi
  # What the comparison said, one line: "token tensors bit-identical; ... differs; ...".
  local said
  said=$(grep '^compare: ' "$KR_WORK/scenario.log" | sed 's/^compare: //; s/:$//' | paste -sd ';' - | sed 's/;/; /g')
  local status=$result
  [ -n "$said" ] && result="$result ($said)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$KR_TOOL" "$name" "$kills" "$resumes" "$status" "$result" >>"$KR_SUMMARY"
  printf 'kill-resume %s: %-58s kills %s resumes %s  %s\n' "$KR_TOOL" "$name" "$kills" "$resumes" "$result"
  if [ "$status" != ok ]; then
    KR_FAILED=1
    grep -v 'warning:' "$KR_WORK/scenario.log" | sed 's/^/    | /' | tail -25
  fi
}

kr_finish() {
  local failed
  failed=$(awk -F'\t' 'NR > 1 && $5 != "ok"' "$KR_SUMMARY" | wc -l)
  echo "kill-resume $KR_TOOL: $KR_SCENARIOS scenario(s), $KR_KILLS kill(s), $((KR_SCENARIOS - failed)) equal to the uninterrupted run, $failed not"
  [ -n "${KR_KEEP:-}" ] && cp "$KR_SUMMARY" "$KR_KEEP"
  return $KR_FAILED
}
