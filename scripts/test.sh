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
if ls tests/interop/test_*.py >/dev/null 2>&1; then
  ESPGW_BUILD="$ROOT/$BUILD_DIR" $PY -m pytest -q -p no:cacheprovider tests/interop \
    --junitxml="$REPORTS/pytest.xml"
  rc=$?
  # 5 = no tests collected: not a failure of ours, but say so.
  [ $rc -ne 0 ] && [ $rc -ne 5 ] && status=1
fi

$PY scripts/junit_summary.py "$REPORTS"/*.xml || status=1
exit $status
