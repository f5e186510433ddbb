#!/usr/bin/env bash
# Fetches Intel IPsec-MB 2.x from Debian 13 (trixie) into .deps/ipsec-mb/ for
# espgw to link: Debian 12's libipsec-mb 1.3 has no VAES+VPCLMULQDQ AVX2
# AES-GCM code (an AVX2-only CPU with VAES, e.g. Zen 3 / Alder Lake, gets the
# plain AVX2 GCM), while 2.0 has it, and a faster small-packet AVX2 GCM.
# Nothing is installed system-wide: `apt-get download` fetches trixie's
# libipsec-mb2 and libipsec-mb-dev (signature-checked by apt against
# /usr/share/keyrings/debian-archive-keyring.gpg, which holds trixie's keys)
# and `dpkg-deb -x` unpacks them under .deps/ipsec-mb/usr. meson's
# -Dipsec_mb=auto (the default) links it from there, with an rpath; Debian
# 12's libipsec-mb-dev 1.3 (which libdpdk-dev depends on, so it stays
# installed) is the fallback when .deps/ipsec-mb is absent, or with
# -Dipsec_mb=system.
#
# apt runs with a PRIVATE configuration under .deps/apt-trixie/ (its own
# sources, lists, cache, state and config parts; only the Acquire settings,
# e.g. proxies, are copied from the system's): /etc/apt, /var/lib/apt and
# /var/cache/apt are never touched, and the system's apt hooks do not run.
# Root is not needed, only write access to .deps/.
#
# Idempotent: a .deps/ipsec-mb with the header and libIPSec_MB.so.2 is left
# alone (rm -rf .deps/ipsec-mb to fetch again). On failure it warns and exits
# 1, leaving no partial .deps/ipsec-mb. ESPGW_IPSEC_MB=system skips it.
#
#   scripts/ipsec-mb.sh        # -> .deps/ipsec-mb/usr/{include/intel-ipsec-mb.h,lib/x86_64-linux-gnu/libIPSec_MB.so*}
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.deps
APTDIR=$DEPS/apt-trixie
DEST=$DEPS/ipsec-mb
HDR=$DEST/usr/include/intel-ipsec-mb.h
LIBDIR=$DEST/usr/lib/x86_64-linux-gnu
SUITE=trixie
PKGS=(libipsec-mb2 libipsec-mb-dev)

warn() { echo "ipsec-mb: warning: $*" >&2; }
fail() { warn "$*; espgw builds with Debian 12's IPsec-MB 1.3 instead"; exit 1; }
trap 'fail "unexpected failure at line $LINENO"' ERR
hdr_version() { sed -n 's/^#define[[:space:]]\+IMB_VERSION_STR[[:space:]]\+"\([^"]*\)".*/\1/p' "$1" | head -1; }

if [ "${ESPGW_IPSEC_MB:-}" = system ]; then
  echo "ipsec-mb: ESPGW_IPSEC_MB=system: not fetching IPsec-MB 2.x (meson -Dipsec_mb=system links Debian 12's 1.3;" \
       "-Dipsec_mb=auto still uses a .deps/ipsec-mb already there)"
  exit 0
fi

if [ -f "$HDR" ] && [ -e "$LIBDIR/libIPSec_MB.so.2" ] && [ -e "$LIBDIR/libIPSec_MB.so" ]; then
  echo "ipsec-mb: .deps/ipsec-mb present (IPsec-MB $(hdr_version "$HDR"))"
  exit 0
fi

[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || fail "only amd64 is supported (this is $(dpkg --print-architecture 2>/dev/null || uname -m))"
for tool in apt-get apt-config dpkg-deb; do
  command -v "$tool" >/dev/null || fail "$tool not found"
done
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || fail "$KEYRING not readable (package debian-archive-keyring)"
if ! mkdir -p "$DEPS" 2>/dev/null || [ ! -w "$DEPS" ]; then
  fail "no write access to $DEPS (run as its owner, or as root)"
fi

# Private apt configuration. APT_CONFIG is read before Dir::Etc::Parts, so
# pointing Parts/Main at private (empty but for acquire.conf) places keeps
# /etc/apt/apt.conf.d out entirely: its hooks (APT::Update::Post-Invoke*,
# e.g. appstreamcli refreshing /var/cache/swcatalog) would otherwise run on
# our update. Acquire::* (proxy, Check-Valid-Until, ...) is kept from the
# system's configuration.
mkdir -p "$APTDIR/apt.conf.d" "$APTDIR/sources.list.d" "$APTDIR/preferences.d" "$APTDIR/trusted.gpg.d" \
  "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/state" "$APTDIR/log"
: >"$APTDIR/state/status"        # no installed packages: candidates are trixie's, nothing read from /var/lib/dpkg
: >"$APTDIR/sources.list"
: >"$APTDIR/preferences"
cat >"$APTDIR/sources.list.d/trixie.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Architectures: amd64
Signed-By: $KEYRING
EOF
apt-config dump Acquire >"$APTDIR/apt.conf.d/50acquire.conf.new" 2>/dev/null || : >"$APTDIR/apt.conf.d/50acquire.conf.new"
mv "$APTDIR/apt.conf.d/50acquire.conf.new" "$APTDIR/apt.conf.d/50acquire.conf"
cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc::Main "$APTDIR/apt.conf.main";
Dir::Etc::Parts "$APTDIR/apt.conf.d";
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/sources.list.d";
Dir::Etc::Preferences "$APTDIR/preferences";
Dir::Etc::PreferencesParts "$APTDIR/preferences.d";
Dir::Etc::Trusted "$APTDIR/trusted.gpg";
Dir::Etc::TrustedParts "$APTDIR/trusted.gpg.d";
Dir::State "$APTDIR/state";
Dir::State::Lists "$APTDIR/lists";
Dir::State::status "$APTDIR/state/status";
Dir::State::extended_states "$APTDIR/state/extended_states";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/cache/archives";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Dir::Log "$APTDIR/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
EOF
: >"$APTDIR/apt.conf.main"
apt_() { APT_CONFIG=$APTDIR/apt.conf apt-get -o APT::Architecture=amd64 "$@"; }

TMP=$(mktemp -d "$DEPS/ipsec-mb.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "ipsec-mb: fetching ${PKGS[*]} from Debian $SUITE (private apt config in .deps/apt-trixie)"
apt_ update -qq -o APT::Update::Error-Mode=any >"$APTDIR/update.log" 2>&1 || {
  sed 's/^/  /' "$APTDIR/update.log" >&2
  fail "apt-get update of $SUITE failed (no network, or the archive's signature did not verify)"
}
mkdir "$TMP/debs"
# As root, apt downloads as the unprivileged _apt user: let it write there.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
  chmod 755 "$TMP" && chown _apt "$TMP/debs"
fi
(cd "$TMP/debs" && apt_ download -qq "${PKGS[@]}") >"$APTDIR/download.log" 2>&1 || {
  sed 's/^/  /' "$APTDIR/download.log" >&2
  fail "apt-get download ${PKGS[*]} from $SUITE failed"
}
mkdir "$TMP/root"
for p in "${PKGS[@]}"; do
  debs=("$TMP/debs/${p}_"*_amd64.deb)
  deb=${debs[0]}
  [ -f "$deb" ] || fail "apt-get download left no $p .deb"
  dpkg-deb -x "$deb" "$TMP/root" || fail "dpkg-deb -x $(basename "$deb") failed"
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" >>"$TMP/root/packages"
done

T=$TMP/root/usr
[ -f "$T/include/intel-ipsec-mb.h" ] || fail "the packages have no usr/include/intel-ipsec-mb.h"
if [ ! -e "$T/lib/x86_64-linux-gnu/libIPSec_MB.so.2" ] || [ ! -e "$T/lib/x86_64-linux-gnu/libIPSec_MB.so" ]; then
  fail "the packages have no usr/lib/x86_64-linux-gnu/libIPSec_MB.so{,.2} (a new soname in $SUITE? this script expects .so.2)"
fi
version=$(hdr_version "$T/include/intel-ipsec-mb.h")
[ -n "$version" ] || fail "no IMB_VERSION_STR in the downloaded intel-ipsec-mb.h"

rm -rf "$DEST"
mv "$TMP/root" "$DEST"
echo "ipsec-mb: .deps/ipsec-mb ready: IPsec-MB $version ($(tr '\n' ' ' <"$DEST/packages" | sed 's/ $//; s/ \(libipsec\)/, \1/g'))"
