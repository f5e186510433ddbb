#!/usr/bin/env bash
# espgw's performance harness: espgw against DPDK's ipsec-secgw and the
# I/O + crypto limit, in one run, with a table, a JSON report and a chart.
# See bench/README.md.
#
#   scripts/bench.sh            full matrix: out/in x AES-128/256-GCM x ESP/ESP-in-UDP
#                               x 64/512/1400/IMIX; espgw, ipsec-secgw, testpmd io
#                               (I/O only), dpdk-test-crypto-perf (crypto only),
#                               3 reps; plus the Google Benchmark micro-benchmarks
#   scripts/bench.sh --quick    AES-128, ESP, 64 and 1400 B, 1 rep, short intervals
#   scripts/bench.sh --workers N   espgw with N workers over N rx queues (scaling /
#                               correctness), same rows as the chosen matrix
#   scripts/bench.sh --curve    the cost curve: espgw's cycles/packet against 1..10,000
#                               tunnels/SAs, 1k..1M routes, replay windows (~5 min;
#                               bench/results/curve-latest.json/.png)
#   scripts/bench.sh --latency  latency under load: p50/p99/p99.9 at 10/50/90% of espgw's
#                               maximum, espgw vs ipsec-secgw vs testpmd io, over memif with
#                               bench/e2e/latency_gen (~8 min; bench/results/latency-latest.*)
#   options: --micro (also in --quick) / --no-micro, --no-huge (skip hugepages),
#            --out FILE.json (default bench/results/latest.json; the chart goes next
#            to it as .png), --reps N, --interval S, --warmup S, and any other
#            option of scripts/bench_e2e.py (e.g. --sizes 64,imix --dirs out)
#
# Needs root (DPDK, hugepages) and Debian's dpdk-doc, libdpdk-dev, dpdk (testpmd),
# dpdk-dev (test-crypto-perf), python3-scapy, python3-yaml, python3-matplotlib
# (scripts/setup.sh installs them). Build: build-bench/ (release), ipsec-secgw in
# /tmp/secgw-build. Hugepages: 2 MB pages reserved when possible, always released.
set -euo pipefail

ROOT_WHY="bench: run as root (DPDK, hugepages)" . "$(dirname "$0")/as-root.sh"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
export BUILD_DIR="${BUILD_DIR:-$REPO/build-bench}"
export SECGW_BUILD="${SECGW_BUILD:-/tmp/secgw-build}"
PY=/usr/bin/python3
OUT=""

quick=0 micro=default huge=1 workers=1 curve=0 latency=0
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --curve) curve=1; shift ;;
    --latency) latency=1; shift ;;
    --micro) micro=1; shift ;;
    --no-micro) micro=0; shift ;;
    --no-huge) huge=0; shift ;;
    --workers) workers=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) sed -n 2,27p "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --workers takes a positive integer" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "bench: needs root (DPDK, hugepages)" >&2; exit 2; }
for t in dpdk-testpmd dpdk-test-crypto-perf; do
  command -v $t >/dev/null || { echo "bench: $t missing (scripts/setup.sh)" >&2; exit 2; }
done
"$PY" -c 'import matplotlib, scapy, yaml' 2>/dev/null ||
  { echo "bench: $PY lacks matplotlib/scapy/yaml: apt-get install python3-matplotlib python3-scapy python3-yaml" >&2; exit 2; }

# --- build (release espgw + bench binaries, patched ipsec-secgw) ---------------
"$REPO/scripts/bench_e2e.sh" --build-only

# --- the matrix ------------------------------------------------------------------
if [[ $latency == 1 ]]; then
  # 2 directions x 3 gateways x 4 points x 3 reps of 1 + 3 s (bench/README.md, "Latency under load")
  OUT=${OUT:-$REPO/bench/results/latency-latest.json}
  m=(--latency --impls espgw,secgw,testpmd --reps 3 --interval 3 --warmup 1)
elif [[ $curve == 1 ]]; then
  # espgw only; 21 cases x 2 reps of 1 + 2 s (see bench/README.md, "The cost curve")
  OUT=${OUT:-$REPO/bench/results/curve-latest.json}
  m=(--curve --reps 2 --interval 2 --warmup 1)
elif [[ $quick == 1 ]]; then
  m=(--quick --algos aes128 --encaps esp --sizes 64,1400 --reps 1 --interval 2 --warmup 1)
  [[ $micro == 1 ]] && m+=(--micro)
else
  m=(--algos aes128,aes256 --encaps esp,udp --sizes 64,512,1400,imix --reps 3 --interval 3 --warmup 1.5)
  [[ $micro != 0 ]] && m+=(--micro)
fi
OUT=${OUT:-$REPO/bench/results/latest.json}
if [[ $curve == 1 || $latency == 1 ]]; then
  :
elif [[ $workers -gt 1 ]]; then
  m+=(--workers "$workers")
else
  m+=(--impls espgw,secgw,testpmd,cperf)
fi

# --- hugepages: reserve when possible, else --no-huge; always release -----------
HP=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
mounted_here=0 made_dir=0 reserved=0 before=0
release() {
  if [[ $reserved == 1 ]]; then
    if [[ $mounted_here == 1 ]]; then umount /dev/hugepages 2>/dev/null || true; fi
    if [[ $made_dir == 1 ]]; then rmdir /dev/hugepages 2>/dev/null || true; fi
    echo "$before" > "$HP" 2>/dev/null || true
    echo "bench: hugepages released (nr_hugepages $(cat "$HP" 2>/dev/null || echo ?))"
  fi
}
trap release EXIT
trap 'exit 130' INT TERM
mem=()
if [[ $huge == 1 && -w $HP ]]; then
  before=$(cat "$HP")
  if echo 512 > "$HP" 2>/dev/null; then
    reserved=1
    got=$(cat "$HP")
    if (( got >= 300 )); then
      if ! grep -q hugetlbfs /proc/mounts; then
        if [[ ! -d /dev/hugepages ]]; then mkdir /dev/hugepages; made_dir=1; fi
        mount -t hugetlbfs nodev /dev/hugepages && mounted_here=1
      fi
      if grep -q hugetlbfs /proc/mounts; then
        mem=(--hugepages)
        echo "bench: memory: $got x 2 MB hugepages reserved (released at exit)"
      fi
    else
      echo "bench: only $got 2 MB hugepages could be reserved (need ~300)"
    fi
  fi
fi
if [[ ${#mem[@]} == 0 ]]; then
  echo "bench: memory: NO hugepages (--no-huge -m 1024 for every program)$([[ $huge == 0 ]] && echo ': --no-huge given')"
fi

mkdir -p "$(dirname "$OUT")"
"$PY" "$REPO/scripts/bench_e2e.py" --espgw "$BUILD_DIR/control/espgw" --secgw "$SECGW_BUILD/build/ipsec-secgw" \
  --build "$BUILD_DIR" --out "$OUT" --chart "${OUT%.json}.png" \
  ${mem[@]+"${mem[@]}"} "${m[@]}" ${args[@]+"${args[@]}"}
