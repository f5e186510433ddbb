#!/usr/bin/env bash
# The release build of espgw, profile-guided (GCC PGO): what the benchmarks
# run and what a deployment should run.
#
#   scripts/build_release.sh [BUILD_DIR]        (default: build-release)
#   PGO=0 scripts/build_release.sh [BUILD_DIR]  (a plain release build, no training)
#
# 1. builds control/espgw with -fprofile-generate (meson -Db_pgo=generate);
# 2. trains it: the gateway's own forwarding through virtual devices (a
#    net_pcap source, a net_null sink; no NIC, no hugepages), both directions,
#    64 / 512 / 1400 B and IMIX, AES-128 and AES-256, ESP and ESP-in-UDP, one
#    SA and 1,000 SAs with random tunnels (scripts/bench_e2e.py --impls espgw
#    and --curve; about 2 minutes). Nothing in the training is a drop path:
#    drops stay where the branch hints put them (cold);
# 3. rebuilds everything with -fprofile-use (-Db_pgo=use).
# The profile is kept while the sources are unchanged (a stamp of their hash
# in BUILD_DIR/.pgo-stamp); any change retrains. bench/README.md has what it
# buys (about 10 cycles per 64-byte packet in each direction on the VM there).
# Extra meson options for the build: MESON_OPTS (e.g. "-Dbench=true").
set -euo pipefail
ROOT_WHY="build_release: run as root (the training runs DPDK)" . "$(dirname "$0")/as-root.sh"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${1:-$REPO/build-release}"
PY=/usr/bin/python3   # Debian's interpreter (scapy, yaml)
read -r -a extra <<< "${MESON_OPTS:-}"

if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  meson setup "$BUILD_DIR" --buildtype=release -Dtests=false ${extra[@]+"${extra[@]}"} >/dev/null
elif (( ${#extra[@]} )); then
  meson configure "$BUILD_DIR" "${extra[@]}" >/dev/null
fi

if [[ "${PGO:-1}" == 0 ]]; then
  meson configure "$BUILD_DIR" -Db_pgo=off >/dev/null
  ninja -C "$BUILD_DIR" >/dev/null
  echo "espgw: $BUILD_DIR/control/espgw (release, no PGO)"
  exit 0
fi

# The sources espgw is built from, as they are now (tests and benchmarks
# left out: editing them needs no new profile), and the compiler.
sources() {
  if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$REPO" ls-files -z -- control crypto dataplane lpm meson.build meson_options.txt
  else  # an unpacked tarball
    (cd "$REPO" && find control crypto dataplane lpm meson.build meson_options.txt -type f -print0)
  fi
}
stamp="$( (cd "$REPO" && sources | xargs -0 sha1sum; c++ --version | head -1) | sha1sum | cut -d' ' -f1)"
if [[ "$(cat "$BUILD_DIR/.pgo-stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "PGO: building the instrumented espgw in $BUILD_DIR"
  find "$BUILD_DIR" -name '*.gcda' -delete
  meson configure "$BUILD_DIR" -Db_pgo=generate >/dev/null
  ninja -C "$BUILD_DIR" control/espgw >/dev/null
  work="$(mktemp -d /tmp/espgw-pgo.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  echo "PGO: training (the matrix, then the cost curve; logs in $work until it ends)"
  train=(--espgw "$BUILD_DIR/control/espgw" --impls espgw --no-verify --reps 1 --interval 1 --warmup 0.5)
  "$PY" "$REPO/scripts/bench_e2e.py" "${train[@]}" --sizes 64,512,1400,imix --dirs out,in \
    --algos aes128,aes256 --encaps esp,udp --work "$work/matrix" --out "$work/matrix.json" > "$work/matrix.log" 2>&1 ||
    { cat "$work/matrix.log" >&2; echo "PGO: training failed" >&2; exit 1; }
  "$PY" "$REPO/scripts/bench_e2e.py" "${train[@]}" --curve --curve-counts 1,1000 --curve-routes 1000 \
    --curve-windows 0,4096 --curve-frames 2048 --work "$work/curve" --out "$work/curve.json" > "$work/curve.log" 2>&1 ||
    { cat "$work/curve.log" >&2; echo "PGO: training failed" >&2; exit 1; }
  n=$(find "$BUILD_DIR" -name '*.gcda' | wc -l)
  if (( n == 0 )); then echo "PGO: the training wrote no profile (*.gcda)" >&2; exit 1; fi
  echo "PGO: $n profiles"
  echo "$stamp" > "$BUILD_DIR/.pgo-stamp"
fi
meson configure "$BUILD_DIR" -Db_pgo=use >/dev/null
ninja -C "$BUILD_DIR" >/dev/null
echo "espgw: $BUILD_DIR/control/espgw (release, PGO)"
