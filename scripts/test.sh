#!/usr/bin/env bash
# Builds espgw and runs every test: the GoogleTest suites (through meson) and
# the interop tests against independent ESP implementations (pytest, scapy).
# Ends with one line: "N passed, N failed".
#
#   scripts/test.sh                 # debugoptimized build in build/
#   scripts/test.sh --sanitize      # also an ASan+UBSan build (build-asan/) of
#                                   # the concurrency-sensitive suites
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
if ! build "$BUILD_DIR"; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
rm -rf "$REPORTS"; mkdir -p "$REPORTS"

# GoogleTest suites (meson writes a JUnit report with one case per TEST()).
meson test -C "$BUILD_DIR" --no-suite slow-interop --print-errorlogs --num-processes 2 \
  --timeout-multiplier 3 || status=1
cp "$BUILD_DIR/meson-logs/testlog.junit.xml" "$REPORTS/gtest.xml" 2>/dev/null

if [ "$SANITIZE" = 1 ]; then
  ASAN_DIR="$BUILD_DIR-asan"
  # Build only the executables of the 'sanitize' suite (the daemon and the
  # rest are covered by the main build): halves CI time on 2 cores.
  # build.ninja first: a build folder configured before a test was added
  # regenerates, so introspection lists every test of the suite.
  if configure "$ASAN_DIR" -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false &&
     ninja -C "$ASAN_DIR" build.ninja >/dev/null &&
     targets=$(meson introspect --tests "$ASAN_DIR" | $PY -c '
import json, os, sys
root = os.path.abspath(sys.argv[1])
for t in json.load(sys.stdin):
    if any(s.split(":")[-1] == "sanitize" for s in t["suite"]):
        print(os.path.relpath(t["cmd"][0], root))' "$ASAN_DIR" | sort -u) &&
     meson compile -C "$ASAN_DIR" ${JOBS:+-j $JOBS} $targets; then
    rm -f "$ASAN_DIR/meson-logs/testlog.junit.xml"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C "$ASAN_DIR" --no-rebuild --suite sanitize --print-errorlogs --num-processes 1 \
      --timeout-multiplier 6 || status=1
    # No report means meson could not run the suite at all: count it as a failure.
    cp "$ASAN_DIR/meson-logs/testlog.junit.xml" "$REPORTS/gtest-asan.xml" 2>/dev/null ||
      echo '<testsuites><testsuite name="asan"><testcase name="run"><failure/></testcase></testsuite></testsuites>' \
        >"$REPORTS/gtest-asan.xml"
  else
    echo "sanitizer build failed"; status=1
    echo '<testsuites><testsuite name="asan-build"><testcase name="build"><failure/></testcase></testsuite></testsuites>' \
      >"$REPORTS/gtest-asan.xml"
  fi
fi

# Interop tests (scapy, tshark) against the binaries just built.
if ls tests/interop/test_*.py >/dev/null 2>&1; then
  ESPGW_BUILD="$ROOT/$BUILD_DIR" $PY -m pytest -q -p no:cacheprovider tests/interop \
    --junitxml="$REPORTS/pytest.xml"
  rc=$?
  # 5 = no tests collected: not a failure of ours, but say so.
  [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
fi

$PY scripts/junit_summary.py "$REPORTS"/*.xml || status=1
exit $status
