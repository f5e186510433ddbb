#!/usr/bin/env bash
# Soak: espgw forwards both ways for DURATION while tunnels flap, SAs rekey,
# routes change and hostile frames arrive; then checks the accounting, the
# mempool, RSS and every ESP frame that left (tests/soak/soak.py says how).
#
#   scripts/soak.sh DURATION [soak.py options]   # DURATION: 120, 90s, 60m, 1h
#   BUILD_DIR=build-asan scripts/soak.sh 2m      # another build folder
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 DURATION [--junit FILE] [--keep] [--workdir DIR]" >&2; exit 64; }
d=$1; shift
case "$d" in
  *h) secs=$(( ${d%h} * 3600 )) ;;
  *m) secs=$(( ${d%m} * 60 )) ;;
  *s) secs=${d%s} ;;
  *) secs=$d ;;
esac
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "$0: bad duration '$d'" >&2; exit 64; }
BUILD_DIR=${BUILD_DIR:-build}
ESPGW_BUILD=${ESPGW_BUILD:-$PWD/$BUILD_DIR} exec /usr/bin/python3 tests/soak/soak.py --duration "$secs" "$@"
