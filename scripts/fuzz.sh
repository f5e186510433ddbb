#!/usr/bin/env bash
# Runs one libFuzzer harness (tests/fuzz/NAME.cpp) on its corpus for a while.
#
#   scripts/fuzz.sh NAME SECONDS [extra libFuzzer flags...]
#   scripts/fuzz.sh --list
#
# Builds the clang ASan+UBSan fuzz build (FUZZ_BUILD_DIR, default build-fuzz)
# if needed and only NAME in it, then runs NAME with -max_total_time=SECONDS
# on the checked-in seeds (tests/fuzz/corpus/NAME, read only) plus a working
# corpus that keeps what it finds between runs (FUZZ_WORK, default
# FUZZ_BUILD_DIR/fuzz-work/NAME). Prints libFuzzer's final stats and one
# summary line: "NAME: executions E, cov C, ft F, corpus N, OK|FAILED".
# A crash, leak, sanitizer report or harness invariant leaves its input in
# FUZZ_BUILD_DIR/fuzz-artifacts/NAME/ (path printed; exit status 1).
# Reproduce one with: FUZZ_BUILD_DIR/tests/fuzz/NAME FILE
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGETS="fuzz_inbound fuzz_outbound fuzz_host_path fuzz_control fuzz_config fuzz_xfrm fuzz_espgw_client"

if [ "${1:-}" = "--list" ]; then
  for t in $TARGETS; do
    # the plugin's client is built only with jansson (control/strongswan)
    [ "$t" = fuzz_espgw_client ] && ! pkg-config --exists jansson && continue
    [ -f "tests/fuzz/$t.cpp" ] && echo "$t"
  done
  exit 0
fi
if [ $# -lt 2 ]; then
  echo "usage: $0 NAME SECONDS [libFuzzer flags...] | $0 --list" >&2
  exit 2
fi
NAME=$1 SECONDS_=$2
shift 2
if [ ! -f "tests/fuzz/$NAME.cpp" ]; then
  echo "$0: no harness tests/fuzz/$NAME.cpp (try --list)" >&2
  exit 2
fi

BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang CXX=clang++ meson setup "$BUILD" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dtests=false -Dbench=false >"$BUILD.setup.log" 2>&1 || { cat "$BUILD.setup.log"; exit 1; }
fi
# FUZZ_NO_BUILD=1: the caller built it (scripts/test.sh runs two at once).
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  ninja -C "$BUILD" -j "${JOBS:-2}" "tests/fuzz/$NAME" >"$BUILD/fuzz-build-$NAME.log" 2>&1 ||
    { tail -n 40 "$BUILD/fuzz-build-$NAME.log"; echo "$NAME: build FAILED"; exit 1; }
fi

WORK=${FUZZ_WORK:-$BUILD/fuzz-work/$NAME}
ART="$BUILD/fuzz-artifacts/$NAME"
mkdir -p "$WORK" "$ART"
DICT=()
[ -f "tests/fuzz/$NAME.dict" ] && DICT=(-dict="tests/fuzz/$NAME.dict")
EXTRA=()
case "$NAME" in
  fuzz_config) MAXLEN=8192 ;;
  # The mirror logs every event it cannot map to stderr (as the daemon
  # does): closed, or the log grows by megabytes a second. libFuzzer keeps
  # its own output and the sanitizers' reports on a copy of stderr.
  fuzz_xfrm) MAXLEN=4096 EXTRA=(-close_fd_mask=2) ;;
  *) MAXLEN=4096 ;;
esac
LOG="$BUILD/fuzz-$NAME.log"
# UBSan findings abort (a report is a failure); leaks are checked per input.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:abort_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
"$BUILD/tests/fuzz/$NAME" -max_total_time="$SECONDS_" -print_final_stats=1 -max_len="$MAXLEN" -timeout=20 \
  -artifact_prefix="$ART/" "${DICT[@]}" "${EXTRA[@]}" "$@" "$WORK" "tests/fuzz/corpus/$NAME" >"$LOG" 2>&1
rc=$?
grep -E '^stat::|^#[0-9]+[[:space:]]+(INITED|DONE)' "$LOG"
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -n 1)
last=$(grep -E '^#[0-9]+[[:space:]]' "$LOG" | grep -E ' cov: ' | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
if [ $rc -eq 0 ]; then
  echo "$NAME: executions ${execs:-?}, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, OK"
else
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$LOG" | tail -n 1)
  grep -E 'ERROR: |==FUZZ INVARIANT==|SUMMARY: ' "$LOG" | head -n 5
  echo "$NAME: executions ${execs:-?}, cov ${cov:-?}, ft ${ft:-?}, FAILED (rc $rc); input: ${crash:-none written}; log: $LOG"
  exit 1
fi
