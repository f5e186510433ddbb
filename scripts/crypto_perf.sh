#!/usr/bin/env bash
# Compares espgw's AEAD burst path (bench_aead, IPsec-MB direct GCM calls) with
# DPDK's crypto-only limit: dpdk-test-crypto-perf on the IPsec-MB AES-GCM PMD
# (crypto_aesni_gcm), same algorithm, sizes, AAD (8 B), IV (12 B), ICV (16 B)
# and burst (32), in the same invocation. Prints one row per size:
#
#   size  crypto-perf cyc/op  ours cyc/op  ours/crypto-perf
#
# Both figures are TSC cycles per operation (crypto-perf's "Cycles/Buf";
# bench_aead's cyc/op counter, __rdtsc around the timed loop), medians over
# --repeat interleaved rounds (crypto-perf, then bench_aead). Exit status: 0 when
# every ratio is <= 1.0, 1 when one is above, 2 on usage/tool errors.
#
#   scripts/crypto_perf.sh [--algo aes128|aes256] [--op encrypt|decrypt]
#                          [--sizes 64,512,1400] [--total-ops N] [--repeat N]
#                          [--lcores 0,1] [--timeout SECONDS]
#   BUILD_DIR (default: build) names the meson build holding bench_aead; it is
#   built there (meson compile) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ALGO=aes128
OP=encrypt
SIZES=64,512,1400
TOTAL_OPS=10000000
REPEAT=3
LCORES=0,1
TIMEOUT=300
BUILD_DIR=${BUILD_DIR:-build}
CRYPTO_PERF=${CRYPTO_PERF:-/usr/bin/dpdk-test-crypto-perf}
PY=/usr/bin/python3

die() { echo "crypto_perf: error: $*" >&2; exit 2; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --algo) ALGO=${2:?}; shift 2 ;;
    --op) OP=${2:?}; shift 2 ;;
    --sizes) SIZES=${2:?}; shift 2 ;;
    --total-ops) TOTAL_OPS=${2:?}; shift 2 ;;
    --repeat) REPEAT=${2:?}; shift 2 ;;
    --lcores) LCORES=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "crypto_perf: unknown argument: $1" >&2; usage ;;
  esac
done

case "$ALGO" in
  aes128) KEY_SZ=16 ;;
  aes256) KEY_SZ=32 ;;
  *) die "--algo must be aes128 or aes256" ;;
esac
case "$OP" in encrypt|decrypt) ;; *) die "--op must be encrypt or decrypt" ;; esac
[[ "$SIZES" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--sizes must be a comma-separated list of byte counts"
[[ "$TOTAL_OPS" =~ ^[0-9]+$ && "$REPEAT" =~ ^[1-9][0-9]*$ && "$TIMEOUT" =~ ^[0-9]+$ ]] ||
  die "--total-ops, --repeat and --timeout take positive integers"
for s in ${SIZES//,/ }; do
  [ "$s" -ge 16 ] && [ "$s" -le 1500 ] || die "size $s out of range (16..1500: bench_aead buffers)"
done

[ -x "$CRYPTO_PERF" ] || die "$CRYPTO_PERF not found: it ships in Debian's dpdk-dev package (scripts/setup.sh installs it)"
[ -x "$PY" ] || die "$PY not found"
command -v timeout >/dev/null || die "coreutils timeout not found"

# The worker lcore of crypto-perf (the last of --lcores); bench_aead is pinned
# to the same core so both measure one core's work.
WORKER=${LCORES##*,}
PIN=()
if command -v taskset >/dev/null && taskset -c "$WORKER" true 2>/dev/null; then
  PIN=(taskset -c "$WORKER")
fi

# --- build bench_aead if needed ----------------------------------------------
BENCH="$BUILD_DIR/bench/crypto/bench_aead"
if [ ! -x "$BENCH" ]; then
  echo "crypto_perf: building bench_aead in $BUILD_DIR" >&2
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    meson setup "$BUILD_DIR" >/dev/null || die "meson setup $BUILD_DIR failed"
  fi
  meson compile -C "$BUILD_DIR" -j 2 bench/crypto/bench_aead >/dev/null ||
    die "building bench_aead failed (meson compile -C $BUILD_DIR bench/crypto/bench_aead)"
fi

TMP=$(mktemp -d /tmp/espgw-crypto-perf.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# --- rounds: crypto-perf, then bench_aead, --repeat times (interleaved, so
# that load from other processes on a shared machine hits both alike) --------
# crypto_aesni_gcm is the IPsec-MB AES-GCM PMD in DPDK 22.11 (librte_crypto_ipsec_mb).
FILTER="^${OP}/ipsec-mb/burst32/${ALGO}-gcm/(${SIZES//,/|})\$"
for r in $(seq 1 "$REPEAT"); do
  log="$TMP/cperf.$r.log"
  rc=0
  timeout --kill-after=10 "$TIMEOUT" "$CRYPTO_PERF" \
    -l "$LCORES" --no-huge -m 1024 --no-pci --no-shconf --file-prefix "espgw-cperf-$$" \
    --vdev crypto_aesni_gcm0 --log-level=lib.eal:error -- \
    --ptest throughput --devtype crypto_aesni_gcm --optype aead \
    --aead-algo aes-gcm --aead-op "$OP" --aead-key-sz "$KEY_SZ" --aead-iv-sz 12 \
    --aead-aad-sz 8 --digest-sz 16 --buffer-sz "$SIZES" --burst-sz 32 \
    --total-ops "$TOTAL_OPS" >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$log" >&2
    [ "$rc" -eq 124 ] && die "dpdk-test-crypto-perf timed out after ${TIMEOUT}s (round $r)"
    die "dpdk-test-crypto-perf failed with status $rc (round $r); its log is above"
  fi

  rc=0
  timeout --kill-after=10 "$TIMEOUT" "${PIN[@]}" "$BENCH" \
    --benchmark_filter="$FILTER" --benchmark_min_time=0.5 \
    --benchmark_format=json --benchmark_out="$TMP/bench.$r.json" --benchmark_out_format=json \
    >"$TMP/bench.$r.log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$TMP/bench.$r.log" >&2
    [ "$rc" -eq 124 ] && die "bench_aead timed out after ${TIMEOUT}s (round $r)"
    die "bench_aead failed with status $rc (round $r)"
  fi
done

# --- table ---------------------------------------------------------------------
"$PY" - "$TMP" "$SIZES" "$REPEAT" "$ALGO" "$OP" <<'EOF'
import glob, json, re, statistics, sys

tmp, sizes, repeat, algo, op = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4], sys.argv[5]

# crypto-perf throughput rows:
#  lcore  BufSize  Burst  Enq  Deq  FailEnq  FailDeq  MOps  Gbps  Cycles/Buf
cperf = {s: [] for s in sizes}
for log in sorted(glob.glob(f"{tmp}/cperf.*.log")):
    text = open(log, errors="replace").read()
    if "Cycles/Buf" not in text:
        sys.exit(f"crypto_perf: error: no throughput table in {log}:\n{text[-2000:]}")
    for line in text.splitlines():
        f = line.split()
        if len(f) == 10 and all(re.fullmatch(r"[0-9.]+", x) for x in f):
            size, enq, deq, fenq = int(f[1]), int(f[3]), int(f[4]), int(f[5])
            if size in cperf:
                if deq == 0:
                    sys.exit(f"crypto_perf: error: crypto-perf dequeued nothing at {size} B")
                cperf[size].append(float(f[9]))
missing = [s for s in sizes if len(cperf[s]) != repeat]
if missing:
    sys.exit(f"crypto_perf: error: crypto-perf reported no result for sizes {missing}")

ours = {s: [] for s in sizes}
data = {}
for path in sorted(glob.glob(f"{tmp}/bench.*.json")):
    data = json.load(open(path))
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        if b.get("error_occurred"):
            sys.exit(f"crypto_perf: error: bench_aead {b['name']}: {b.get('error_message')}")
        m = re.fullmatch(rf"{op}/ipsec-mb/burst32/{algo}-gcm/(\d+)", b["run_name"])
        if m and int(m.group(1)) in ours:
            ours[int(m.group(1))].append(float(b["cyc/op"]))
missing = [s for s in sizes if not ours[s]]
if missing:
    sys.exit(f"crypto_perf: error: bench_aead reported no result for sizes {missing}")

ctx = data.get("context", {})
print(f"# {algo}-gcm {op}, burst 32, AAD 8 B, ICV 16 B; TSC cycles/op, medians of "
      f"{repeat} interleaved round(s) of crypto-perf and bench_aead")
print(f"# crypto-perf: crypto_aesni_gcm PMD; ours: IPsec-MB {ctx.get('ipsec_mb_version', '?')} "
      f"direct GCM calls, arch {ctx.get('ipsec_mb_arch', '?')}")
print(f"{'size':>6} {'crypto-perf cyc/op':>19} {'ours cyc/op':>12} {'ours/crypto-perf':>17}")
worst = 0.0
for s in sizes:
    c, o = statistics.median(cperf[s]), statistics.median(ours[s])
    r = o / c
    worst = max(worst, r)
    print(f"{s:>6} {c:>19.1f} {o:>12.1f} {r:>17.3f}{'' if r <= 1.0 else '  > 1.0'}")
if worst > 1.0:
    print("crypto_perf: FAIL: ours is slower than dpdk-test-crypto-perf at some size")
    sys.exit(1)
print("crypto_perf: OK: ours/crypto-perf <= 1.0 at every size")
EOF
