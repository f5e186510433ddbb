#!/usr/bin/env bash
# The four-tunnel demo on a machine without a NIC: installs what it needs,
# builds, runs espgw on its embedded default (net_tap ports, no hugepages),
# sends traffic through it, fails tunnel 1 over and back, decrypts inbound
# ESP, and prints the counters. Needs root (apt-get, TAP devices).
set -euo pipefail
ROOT_WHY="demo: run as root (it installs packages and creates TAP interfaces)" . "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}

bash scripts/setup.sh
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  meson setup "$BUILD_DIR" >/dev/null
fi
echo "demo: building..."
meson compile -C "$BUILD_DIR" control/espgw control/espctl >/dev/null

ESPGW="$ROOT/$BUILD_DIR/control/espgw"
ESPCTL="$ROOT/$BUILD_DIR/control/espctl"
SOCK=/run/espgw/espgw.sock
LOG=$(mktemp /tmp/espgw-demo.XXXXXX.log)

"$ESPGW" >"$LOG" 2>&1 &
PID=$!
cleanup() {
  if kill -0 "$PID" 2>/dev/null; then
    kill -INT "$PID"
    wait "$PID" || true
    echo
    echo "=== espgw stopped (Ctrl-C / SIGTERM); its final report:"
    sed -n '/stopped; final counters/,$p' "$LOG"
  fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  [ -S "$SOCK" ] && "$ESPCTL" -s "$SOCK" tunnels >/dev/null 2>&1 && break
  if ! kill -0 "$PID" 2>/dev/null; then cat "$LOG"; echo "demo: espgw exited" >&2; exit 1; fi
  sleep 0.1
done
# Keep the host kernel quiet on the TAP links (no IPv6 autoconf chatter).
for i in espgw-lan espgw-wan; do
  sysctl -qw "net.ipv6.conf.$i.disable_ipv6=1" 2>/dev/null || true
done

echo "=== espgw is running on its embedded default (espgw --print-default-config shows it):"
echo "    LAN port espgw-lan (10.240.128.1), WAN port espgw-wan (198.51.100.10, .11),"
echo "    four tunnels to AWS endpoints 203.0.113.1/.2 (connection A) and .129/.130 (connection B)"
"$ESPCTL" -s "$SOCK" tunnels

/usr/bin/python3 scripts/demo.py --espgw "$ESPGW" --espctl "$ESPCTL" --socket "$SOCK"
