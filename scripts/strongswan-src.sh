#!/usr/bin/env bash
# Prepares strongSwan's configured source tree for building the kernel-espgw
# charon plugin out of tree (control/strongswan/): Debian has no strongSwan
# headers package, so we fetch Debian's source package (`apt-get source`, the
# same version as the installed libstrongswan when the archive still has it)
# and run ./configure with debian/rules' arguments. Only config.h is needed
# (its defines change struct layouts, hence Debian's full configure line); no
# make.
#
# apt runs with a PRIVATE configuration under .deps/apt/ (a deb-src entry, its
# own lists and cache): /etc/apt is never touched. Idempotent: a tree whose
# config.h exists is left alone.
#
#   scripts/strongswan-src.sh            # -> .deps/strongswan-<upstream version>/config.h
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/.deps
APTDIR=$DEPS/apt

installed=$(dpkg-query -W -f='${Version}' libstrongswan 2>/dev/null || true)
if [ -z "$installed" ]; then
  echo "strongswan-src: libstrongswan is not installed (scripts/setup.sh installs strongswan-charon)" >&2
  exit 1
fi
upstream=${installed#*:}; upstream=${upstream%%-*}        # 5.9.8-5+deb12u6 -> 5.9.8
SRC=$DEPS/strongswan-$upstream

if [ -f "$SRC/config.h" ] && [ -f "$SRC/src/libcharon/kernel/kernel_ipsec.h" ]; then
  echo "strongswan-src: $SRC/config.h present"
  exit 0
fi

# Build prerequisites of configure with debian/rules' arguments (the
# Build-Depends of debian/control that configure checks for).
PREREQS=(
  dpkg-dev bison flex gperf pkg-config libtool
  libiptc-dev libcap-dev libcurl4-openssl-dev libgcrypt20-dev libgmp-dev libkrb5-dev libldap2-dev
  libnm-dev libpam0g-dev libsqlite3-dev libssl-dev libsystemd-dev libtss2-dev libxml2-dev
  libjansson-dev
)
missing=()
for p in "${PREREQS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Private apt configuration: deb-src entries for the suites the system's own
# sources name (same mirror, same keyring), lists and caches under .deps/apt.
mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
srcfile=$APTDIR/sources.list.d/debian-src.sources
: >"$srcfile.new"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  # Copy every deb822 stanza of Debian's archive, with Types: deb-src.
  awk 'BEGIN { RS=""; ORS="\n\n" }
       /URIs:[ \t]*[^ \t\n]*debian/ { gsub(/Types:[^\n]*/, "Types: deb-src"); print }' "$f" >>"$srcfile.new"
done
if [ -f /etc/apt/sources.list ]; then
  # One-line format: deb [OPTIONS] URI SUITE COMPONENTS -> a deb-src stanza.
  grep -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list | grep debian | while read -r _ rest; do
    # shellcheck disable=SC2086
    set -- $rest
    case $1 in \[*) while [ $# -gt 0 ] && [[ $1 != *\] ]]; do shift; done; shift ;; esac
    uri=$1; suite=$2; shift 2
    printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' "$uri" "$suite" "$*"
  done >>"$srcfile.new"
fi
if ! grep -q 'deb-src' "$srcfile.new"; then
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    >"$srcfile.new"
fi
mv "$srcfile.new" "$srcfile"
: >"$APTDIR/sources.list"
cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc::SourceList "$APTDIR/sources.list";
Dir::Etc::SourceParts "$APTDIR/sources.list.d";
Dir::State::Lists "$APTDIR/lists";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/cache/archives";
EOF

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "strongswan-src: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  echo "strongswan-src: installing ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
fi

echo "strongswan-src: fetching Debian's strongswan source ($installed) into .deps/"
APT_CONFIG=$APTDIR/apt.conf apt-get update -qq
rm -rf "$SRC"
# The installed version's source, so the headers match the binaries; if the
# mirror does not serve it (a security update's pool can lag its index),
# another Debian revision of the same upstream release, newest first.
versions=$(APT_CONFIG=$APTDIR/apt.conf apt-cache showsrc strongswan | sed -n 's/^Version: //p' |
  grep -F "$upstream-" | grep -vxF "$installed" | sort -rV || true)
fetched=""
for v in "$installed" $versions; do
  if (cd "$DEPS" && APT_CONFIG=$APTDIR/apt.conf apt-get source -qq "strongswan=$v" >"$DEPS/apt-source.log" 2>&1); then
    fetched=$v; break
  fi
  rm -rf "$SRC"
  echo "strongswan-src: source $v not fetched ($(grep -m1 '^E:' "$DEPS/apt-source.log" || echo '?'))"
done
[ -n "$fetched" ] || { cat "$DEPS/apt-source.log" >&2; exit 1; }
[ "$fetched" = "$installed" ] || echo "strongswan-src: using source $fetched for installed $installed"
echo "$fetched" >"$DEPS/strongswan-src.version"
[ -d "$SRC" ] || { echo "strongswan-src: apt-get source did not produce $SRC" >&2; exit 1; }

# debian/rules' CONFIGUREARGS for amd64/linux, plus what dh_auto_configure
# adds (--prefix=/usr --sysconfdir=/etc --localstatedir=/var ...), read from
# the rules file itself so a Debian update is followed.
args=$(make -s -f - print-args <<EOF
DEB_HOST_ARCH_CPU := $(dpkg-architecture -qDEB_HOST_ARCH_CPU)
DEB_HOST_ARCH_OS := $(dpkg-architecture -qDEB_HOST_ARCH_OS)
$(sed -n '/^CONFIGUREARGS :=/,/^override_dh_auto_configure:/p' "$SRC/debian/rules" | grep -v '^override_dh_auto_configure:' | grep -v '^include ')
print-args:
	@echo \$(CONFIGUREARGS)
EOF
)
case $args in *--enable-kernel-libipsec*) ;; *) echo "strongswan-src: could not read CONFIGUREARGS from debian/rules" >&2; exit 1 ;; esac
echo "strongswan-src: configuring (debian/rules' arguments, config.h only)"
(
  cd "$SRC"
  # shellcheck disable=SC2086
  ./configure --build="$(dpkg-architecture -qDEB_BUILD_GNU_TYPE)" --prefix=/usr --includedir=/usr/include \
    --mandir=/usr/share/man --infodir=/usr/share/info --sysconfdir=/etc --localstatedir=/var \
    --disable-option-checking --disable-silent-rules --runstatedir=/run --disable-maintainer-mode \
    --disable-dependency-tracking $args >"$DEPS/strongswan-configure.log" 2>&1
) || { tail -20 "$DEPS/strongswan-configure.log" >&2; echo "strongswan-src: configure failed" >&2; exit 1; }
[ -f "$SRC/config.h" ] || { echo "strongswan-src: configure produced no config.h" >&2; exit 1; }
echo "strongswan-src: $SRC/config.h ready"
