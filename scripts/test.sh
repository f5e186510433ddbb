#!/usr/bin/env bash
# Builds espgw and runs every test: the GoogleTest suites (through meson) and
# the interop tests against independent ESP implementations (pytest, scapy).
# Ends with one line: "N passed, N failed".
#
#   scripts/test.sh                 # debugoptimized build in build/
#   scripts/test.sh --sanitize      # also every GoogleTest suite and the interop
#                                   # tests under ASan+UBSan (build-asan/), the
#                                   # concurrency tests under TSan (build-tsan/)
#   SOAK_SECONDS=N                  # the soak's length (default 120, 0 skips it)
#   BUILD_DIR=... JOBS=... env vars override the defaults.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
SANITIZE=0
for a in "$@"; do
  case "$a" in
    --sanitize) SANITIZE=1 ;;
    *) echo "usage: $0 [--sanitize]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh || { echo "0 passed, 1 failed"; exit 1; }

PY=/usr/bin/python3   # Debian's interpreter: it has scapy and pytest
REPORTS="$ROOT/$BUILD_DIR/test-reports"
# Each stage's wall time, for the CI budget (docs/hardening.md).
STAGE_TIMES="$REPORTS/stage-times.txt"
stage_start() { STAGE_T0=$(date +%s); }
stage_end() { echo "stage $1: $(( $(date +%s) - STAGE_T0 )) s" | tee -a "$STAGE_TIMES"; }
junit_failure() {  # file suite case
  echo "<testsuites><testsuite name=\"$2\"><testcase name=\"$3\"><failure/></testcase></testsuite></testsuites>" >"$1"
}


configure() {  # dir [meson options...]
  local dir=$1; shift
  if [ ! -f "$dir/build.ninja" ]; then
    local log
    log=$(mktemp)
    meson setup "$dir" "$@" >"$log" 2>&1 || { cat "$log"; rm -f "$log"; return 1; }
    rm -f "$log"
  fi
}

build() {  # dir [meson options...]
  configure "$@" || return 1
  meson compile -C "$1" ${JOBS:+-j $JOBS} || return 1
}

status=0
BUILD_T0=$(date +%s)
if ! build "$BUILD_DIR"; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
rm -rf "$REPORTS"; mkdir -p "$REPORTS"
echo "stage build: $(( $(date +%s) - BUILD_T0 )) s" | tee "$REPORTS/stage-times.txt"

# GoogleTest suites (meson writes a JUnit report with one case per TEST()).
stage_start
meson test -C "$BUILD_DIR" --no-suite slow-interop --print-errorlogs --num-processes 2 \
  --timeout-multiplier 3 || status=1
cp "$BUILD_DIR/meson-logs/testlog.junit.xml" "$REPORTS/gtest.xml" 2>/dev/null
stage_end gtest

# --- sanitizer stages (engineer k; docs/hardening.md) -----------------------
if [ "$SANITIZE" = 1 ]; then
  # ASan+UBSan over everything: the daemon, espctl, esp-vector and every
  # GoogleTest suite, then the interop tests against that daemon.
  ASAN_DIR="$BUILD_DIR-asan"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  stage_start
  if build "$ASAN_DIR" -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false; then
    stage_end asan-build
    stage_start
    rm -f "$ASAN_DIR/meson-logs/testlog.junit.xml"
    meson test -C "$ASAN_DIR" --no-rebuild --no-suite slow-interop --print-errorlogs \
      --num-processes 2 --timeout-multiplier 6 || status=1
    # No report means meson could not run the suites at all: a failure.
    cp "$ASAN_DIR/meson-logs/testlog.junit.xml" "$REPORTS/gtest-asan.xml" 2>/dev/null ||
      junit_failure "$REPORTS/gtest-asan.xml" asan run
    stage_end asan-gtest
    stage_start
    # The interop tests against the ASan daemon (ESPGW_TIMEOUT_SCALE stretches
    # the harness's waits). The whole suite costs ~14 min here: CI runs the
    # files where bytes from outside meet the daemon's memory (packets both
    # ways, hostile input, reassembly, faults, the control socket's fuzz and
    # robustness tests), ~5 min; docs/hardening.md lists what is left out and
    # why. ASAN_INTEROP=tests/interop runs all of it.
    ASAN_INTEROP_DEFAULT="tests/interop/test_hostile.py tests/interop/test_hostile_classes.py
      tests/interop/test_accounting.py tests/interop/test_outer_reassembly.py tests/interop/test_esp_scapy.py
      tests/interop/test_outbound_path.py tests/interop/test_ecn_tfc.py tests/interop/test_natt_port.py
      tests/interop/test_replay_multiqueue.py tests/interop/test_exception_tap.py
      tests/interop/test_control_sa_state.py tests/interop/test_control_fuzz.py
      tests/interop/test_control_robust.py tests/interop/test_faults.py
      --deselect tests/interop/test_faults.py::test_control_flood_does_not_slow_the_workers"
    ESPGW_BUILD="$ROOT/$ASAN_DIR" ESPGW_TIMEOUT_SCALE=${ESPGW_TIMEOUT_SCALE:-4} ESPGW_SANITIZER=address \
      $PY -m pytest -q -p no:cacheprovider ${ASAN_INTEROP:-$ASAN_INTEROP_DEFAULT} -o junit_suite_name=interop-asan \
      --junitxml="$REPORTS/pytest-asan.xml"
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
    stage_end asan-interop
  else
    echo "ASan build failed"; status=1
    junit_failure "$REPORTS/gtest-asan.xml" asan-build build
  fi
  unset ASAN_OPTIONS UBSAN_OPTIONS

  # ThreadSanitizer over the concurrency tests (suite 'tsan'): RCU
  # publication and the SA database's handover, the replay window's writers,
  # the route table under readers, the neighbour table, the AEAD contexts.
  # DPDK's own code is not instrumented: tests/tsan.supp lists why each
  # suppression is there.
  TSAN_DIR="$BUILD_DIR-tsan"
  stage_start
  if configure "$TSAN_DIR" -Db_sanitize=thread -Db_lundef=false -Dbench=false &&
     ninja -C "$TSAN_DIR" build.ninja >/dev/null &&
     targets=$(meson introspect --tests "$TSAN_DIR" | $PY -c '
import json, os, sys
root = os.path.abspath(sys.argv[1])
for t in json.load(sys.stdin):
    if any(s.split(":")[-1] == "tsan" for s in t["suite"]):
        print(os.path.relpath(t["cmd"][0], root))' "$TSAN_DIR" | sort -u) &&
     meson compile -C "$TSAN_DIR" ${JOBS:+-j $JOBS} $targets; then
    stage_end tsan-build
    stage_start
    rm -f "$TSAN_DIR/meson-logs/testlog.junit.xml"
    TSAN_OPTIONS="suppressions=$ROOT/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0" \
      meson test -C "$TSAN_DIR" --no-rebuild --suite tsan --print-errorlogs --num-processes 1 \
      --timeout-multiplier 6 || status=1
    cp "$TSAN_DIR/meson-logs/testlog.junit.xml" "$REPORTS/gtest-tsan.xml" 2>/dev/null ||
      junit_failure "$REPORTS/gtest-tsan.xml" tsan run
    stage_end tsan-gtest
  else
    echo "TSan build failed"; status=1
    junit_failure "$REPORTS/gtest-tsan.xml" tsan-build build
  fi
fi
# --- end of the sanitizer stages --------------------------------------------

# Interop tests (scapy, tshark) against the binaries just built.
stage_start
if ls tests/interop/test_*.py >/dev/null 2>&1; then
  ESPGW_BUILD="$ROOT/$BUILD_DIR" $PY -m pytest -q -p no:cacheprovider tests/interop \
    --junitxml="$REPORTS/pytest.xml"
  rc=$?
  # 5 = no tests collected: not a failure of ours, but say so.
  [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
fi
stage_end interop

# --- soak (engineer k): SOAK_SECONDS of traffic (default 120; 0 skips) ------
if [ "${SOAK_SECONDS:-120}" != 0 ]; then
  stage_start
  BUILD_DIR="$BUILD_DIR" scripts/soak.sh "${SOAK_SECONDS:-120}" --junit "$REPORTS/soak.xml" ||
    { status=1; [ -f "$REPORTS/soak.xml" ] || junit_failure "$REPORTS/soak.xml" soak run; }
  stage_end soak
fi

$PY scripts/junit_summary.py "$REPORTS"/*.xml || status=1
exit $status
