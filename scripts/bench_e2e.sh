#!/usr/bin/env bash
# End-to-end throughput: espgw vs DPDK's ipsec-secgw, one worker core,
# net_pcap (infinite_rx) source -> net_null sink. See bench/e2e/README.md.
#
#   scripts/bench_e2e.sh [--quick] [--hugepages] [--out FILE] [other options of bench_e2e.py]
#   scripts/bench_e2e.sh --build-only     (steps 1-2; scripts/bench.sh uses it)
#
# scripts/bench.sh is the full harness (AES-256, IMIX, ESP-in-UDP, testpmd,
# crypto-perf, micro-benchmarks, chart): see bench/README.md.
#
# 1. builds espgw in build-bench/ with scripts/build_release.sh (release,
#    profile-guided; trained again only when the sources changed);
# 2. builds ipsec-secgw from Debian's dpdk-doc examples in /tmp/secgw-build,
#    with bench/e2e/ipsec-secgw-rx-offload-mask.patch applied;
# 3. runs scripts/bench_e2e.py (pcaps with scapy, a scapy check of espgw's
#    output, then the matrix), which prints the table and writes the JSON.
# Environment: BUILD_DIR (default build-bench), SECGW_BUILD (/tmp/secgw-build).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$REPO/build-bench}"
SECGW_SRC=/usr/share/dpdk/examples/ipsec-secgw
SECGW_BUILD="${SECGW_BUILD:-/tmp/secgw-build}"
PATCH="$REPO/bench/e2e/ipsec-secgw-rx-offload-mask.patch"
PY=/usr/bin/python3   # Debian's interpreter (scapy, yaml); python3 on PATH may be a pyenv without them

hugepages=0
build_only=0
args=()
for a in "$@"; do
  case "$a" in
    --hugepages) hugepages=1; args+=("$a") ;;
    --build-only) build_only=1 ;;
    -h|--help) sed -n 2,17p "$0"; "$PY" "$REPO/scripts/bench_e2e.py" --help; exit 0 ;;
    *) args+=("$a") ;;
  esac
done

# --- espgw --------------------------------------------------------------
# The release build, profile-guided (scripts/build_release.sh: trained on
# the gateway's own forwarding, rebuilt with the profile; PGO=0 for a plain
# release build); the Google Benchmark binaries too (scripts/bench.sh --micro).
MESON_OPTS="-Dbench=true" bash "$REPO/scripts/build_release.sh" "$BUILD_DIR"

# --- ipsec-secgw --------------------------------------------------------
if [[ ! -d "$SECGW_SRC" ]]; then
  echo "no $SECGW_SRC: install Debian's dpdk-doc (and libdpdk-dev)" >&2; exit 1
fi
stamp="$SECGW_BUILD/.espgw-bench-patched"
if [[ ! -x "$SECGW_BUILD/build/ipsec-secgw" || ! -f "$stamp" || "$PATCH" -nt "$stamp" ]]; then
  rm -rf "$SECGW_BUILD"
  cp -r "$SECGW_SRC" "$SECGW_BUILD"
  # vdevs offer no RX offloads: mask ipsec-secgw's request with the device's
  # capabilities instead of exiting (see the patch)
  patch -d "$SECGW_BUILD" -p1 --quiet < "$PATCH"
  make -C "$SECGW_BUILD" -j2 >/dev/null
  touch "$stamp"
fi
echo "ipsec-secgw: $SECGW_BUILD/build/ipsec-secgw ($(dpkg-query -W -f='${Version}' libdpdk-dev 2>/dev/null || pkg-config --modversion libdpdk))"

[[ $build_only == 1 ]] && exit 0

# --- hugepages ----------------------------------------------------------
HP=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
mounted_here=0
made_dir=0
release() {
  if [[ $hugepages == 1 ]]; then
    if [[ $mounted_here == 1 ]]; then umount /dev/hugepages || true; fi
    if [[ $made_dir == 1 ]]; then rmdir /dev/hugepages || true; fi
    echo 0 > "$HP" || true
    echo "hugepages released: $(cat "$HP")"
  fi
}
if [[ $hugepages == 1 ]]; then
  trap release EXIT
  echo 512 > "$HP"
  got=$(cat "$HP")
  if (( got < 300 )); then echo "only $got 2 MB hugepages could be reserved (need ~300)" >&2; exit 1; fi
  if ! grep -q hugetlbfs /proc/mounts; then
    if [[ ! -d /dev/hugepages ]]; then mkdir /dev/hugepages; made_dir=1; fi
    mount -t hugetlbfs nodev /dev/hugepages
    mounted_here=1
  fi
  echo "hugepages: $got x 2 MB reserved"
else
  echo "memory: --no-huge -m 1024 for both (pass --hugepages for 2 MB hugepages)"
fi

"$PY" "$REPO/scripts/bench_e2e.py" --espgw "$BUILD_DIR/control/espgw" --secgw "$SECGW_BUILD/build/ipsec-secgw" \
  ${args[@]+"${args[@]}"}
