#!/usr/bin/env bash
# Installs espgw's build and test dependencies from Debian 12's archive.
# Idempotent: packages already present are skipped; nothing is fetched from
# anywhere but apt. Also unpacks Intel IPsec-MB 2.x from Debian 13 into
# .deps/ipsec-mb (scripts/ipsec-mb.sh; nothing installed system-wide;
# ESPGW_IPSEC_MB=system skips it).
set -euo pipefail

PKGS=(
  build-essential pkg-config meson ninja-build
  libdpdk-dev dpdk dpdk-doc dpdk-dev
  libipsec-mb-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev nlohmann-json3-dev libmnl-dev libcli11-dev libfmt-dev
  python3-scapy python3-pytest python3-yaml python3-matplotlib python3-cryptography tshark
  clang libclang-rt-14-dev
  libpcap-dev iproute2 procps
)
# The kernel-espgw charon plugin (control/strongswan/) and its tests: on by
# default; ESPGW_STRONGSWAN=0 skips it (meson's -Dstrongswan=auto then
# builds without it).
STRONGSWAN=${ESPGW_STRONGSWAN:-1}
if [ "$STRONGSWAN" != 0 ]; then
  PKGS+=(libjansson-dev strongswan-charon strongswan-swanctl libcharon-extra-plugins
         libstrongswan-standard-plugins libstrongswan-extra-plugins iputils-ping)
fi
strongswan_src() {
  # Debian's strongSwan source, configured (config.h only): scripts/strongswan-src.sh
  if [ "$STRONGSWAN" != 0 ]; then
    bash "$(dirname "$0")/strongswan-src.sh"
  fi
}

ipsec_mb() {
  # Intel IPsec-MB 2.x from Debian 13 under .deps/ipsec-mb (scripts/ipsec-mb.sh):
  # VAES AVX2 AES-GCM; optional, meson falls back to Debian 12's 1.3.
  bash "$(dirname "$0")/ipsec-mb.sh" || echo "setup: IPsec-MB 2.0 unavailable; building with Debian 12's IPsec-MB 1.3" >&2
}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  strongswan_src
  ipsec_mb
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no, quietly.
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
strongswan_src
ipsec_mb
echo "setup: done"
