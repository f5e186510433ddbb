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
#   RELEASE_BUILD=0                 # skips the release (PGO) build and its check
#   BUILD_DIR=... JOBS=... env vars override the defaults.
set -uo pipefail
# The DPDK and TAP tests need root: as another user, the same command again
# under sudo when there is one (a root shell often has no sudo).
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  exec sudo -E bash "$0" "$@"
fi
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

# ---- Fuzz stage (engineer f; tests/fuzz, scripts/fuzz.sh) ----------------
# Every libFuzzer harness for FUZZ_SECONDS (default 60; 0 skips the stage),
# two at a time, on the clang ASan+UBSan fuzz build ($BUILD_DIR-fuzz), from
# the checked-in seeds. One JUnit test case per target in fuzz.xml: a crash,
# leak, sanitizer report or harness invariant fails it, with the input's path.
fuzz_stage() {
  local secs=${FUZZ_SECONDS:-60}
  [ "$secs" = 0 ] && return 0
  local dir="$ROOT/$BUILD_DIR-fuzz" targets t
  targets=$(scripts/fuzz.sh --list)
  local fail_xml='<testsuites><testsuite name="fuzz"><testcase name="build"><failure message="fuzz build failed"/></testcase></testsuite></testsuites>'
  if ! CC=clang CXX=clang++ configure "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
         -Dtests=false -Dbench=false ||
     ! ninja -C "$dir" ${JOBS:+-j $JOBS} $(for t in $targets; do echo "tests/fuzz/$t"; done); then
    echo "fuzz build failed"; echo "$fail_xml" >"$REPORTS/fuzz.xml"; status=1; return
  fi
  rm -rf "$dir/fuzz-ci" && mkdir -p "$dir/fuzz-ci"
  printf '%s\n' $targets | FUZZ_BUILD_DIR="$dir" FUZZ_NO_BUILD=1 xargs -P 2 -I{} sh -c \
    'FUZZ_WORK="$FUZZ_BUILD_DIR/fuzz-ci/{}.work" scripts/fuzz.sh {} '"$secs"' >"$FUZZ_BUILD_DIR/fuzz-ci/{}.txt" 2>&1
     echo $? >"$FUZZ_BUILD_DIR/fuzz-ci/{}.rc"'
  for t in $targets; do tail -n 1 "$dir/fuzz-ci/$t.txt"; done
  $PY - "$dir/fuzz-ci" "$REPORTS/fuzz.xml" $targets <<'PYEOF' || status=1
import sys, xml.etree.ElementTree as ET
d, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
suite = ET.Element("testsuite", name="fuzz")
bad = 0
for n in names:
    case = ET.SubElement(suite, "testcase", classname="fuzz", name=n)
    try:
        rc = int(open(f"{d}/{n}.rc").read().strip() or 1)
        lines = open(f"{d}/{n}.txt", errors="replace").read().splitlines()
    except OSError:
        rc, lines = 1, ["no result"]
    case.set("message", lines[-1] if lines else "")
    if rc != 0:
        bad += 1
        ET.SubElement(case, "failure", message=lines[-1] if lines else "failed").text = "\n".join(lines[-30:])
    else:
        ET.SubElement(case, "system-out").text = "\n".join(lines)
root = ET.Element("testsuites"); root.append(suite)
ET.ElementTree(root).write(out, encoding="unicode")
sys.exit(1 if bad else 0)
PYEOF
}
fuzz_stage

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

# --- the release build (scripts/build_release.sh) ----------------------------
# What the benchmarks run and a deployment should: built with GCC's profile
# instrumentation, trained on the gateway's own forwarding, rebuilt with the
# profile (~5 min). Then its wire output is checked by scapy both ways
# (bench_e2e.py's check: outbound frames decrypt to the input, inbound
# frames are the cleartext), 64 B and IMIX, ESP and ESP-in-UDP.
# RELEASE_BUILD=0 skips it.
if [ "${RELEASE_BUILD:-1}" != 0 ]; then
  stage_start
  rel="$ROOT/$BUILD_DIR-release"
  log="$REPORTS/release.log"
  case_name=pgo_build_trains_and_its_output_verifies
  if scripts/build_release.sh "$rel" >"$log" 2>&1 &&
     $PY scripts/bench_e2e.py --espgw "$rel/control/espgw" --impls espgw --sizes 64,imix --dirs out,in \
       --encaps esp,udp --reps 1 --interval 1 --warmup 0.5 --work "$rel/check" --out "$rel/check.json" >>"$log" 2>&1 &&
     grep -q "(release, PGO)" "$log"; then
    grep -E "^espgw:|verify espgw" "$log"
    echo "<testsuites><testsuite name=\"release\"><testcase classname=\"release\" name=\"$case_name\"/></testsuite></testsuites>" \
      >"$REPORTS/release.xml"
  else
    tail -n 40 "$log"
    junit_failure "$REPORTS/release.xml" release "$case_name"
    status=1
  fi
  stage_end release
fi

# --- soak (engineer k): SOAK_SECONDS of traffic (default 120; 0 skips) ------
if [ "${SOAK_SECONDS:-120}" != 0 ]; then
  stage_start
  BUILD_DIR="$BUILD_DIR" scripts/soak.sh "${SOAK_SECONDS:-120}" --junit "$REPORTS/soak.xml" ||
    { status=1; [ -f "$REPORTS/soak.xml" ] || junit_failure "$REPORTS/soak.xml" soak run; }
  stage_end soak
fi

$PY scripts/junit_summary.py "$REPORTS"/*.xml || status=1
exit $status
