#!/usr/bin/env bash
# Installs the kernel-espgw charon plugin built by meson into Debian's
# strongSwan: /usr/lib/ipsec/plugins/libstrongswan-kernel-espgw.so and
# /etc/strongswan.d/charon/kernel-espgw.conf (load = 2: before kernel-netlink,
# so it is charon's kernel-ipsec provider; see docs/strongswan.md).
#
#   scripts/install-plugin.sh [BUILD_DIR] [--socket PATH] [--timeout MS]
# A conf file already there keeps the settings an operator changed unless
# --socket/--timeout are given.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build
SOCKET=""
TIMEOUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --socket) SOCKET=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -*) echo "usage: $0 [BUILD_DIR] [--socket PATH] [--timeout MS]" >&2; exit 64 ;;
    *) BUILD_DIR=$1; shift ;;
  esac
done
SO=$BUILD_DIR/control/strongswan/libstrongswan-kernel-espgw.so
[ -f "$SO" ] || { echo "install-plugin: $SO not built (meson -Dstrongswan=enabled, scripts/strongswan-src.sh)" >&2; exit 1; }
PLUGINDIR=${PLUGINDIR:-/usr/lib/ipsec/plugins}
CONFDIR=${CONFDIR:-/etc/strongswan.d/charon}
# Atomically (a temporary file renamed over the old one): a charon running
# with the old plugin keeps its mapping instead of seeing the file rewritten.
mkdir -p "$PLUGINDIR"
install -m 0644 "$SO" "$PLUGINDIR/.libstrongswan-kernel-espgw.so.$$"
mv -f "$PLUGINDIR/.libstrongswan-kernel-espgw.so.$$" "$PLUGINDIR/libstrongswan-kernel-espgw.so"
CONF=$CONFDIR/kernel-espgw.conf
if [ ! -f "$CONF" ] || [ -n "$SOCKET$TIMEOUT" ]; then
  mkdir -p "$CONFDIR"
  cat >"$CONF.tmp" <<CONF
kernel-espgw {

    # Load before kernel-netlink (load = yes counts as 1): charon takes the
    # first kernel-ipsec provider in load order, so IPsec SAs go to espgw
    # while kernel-netlink keeps the host's addresses and routes.
    load = 2

    # espgw's control socket (espgw's control.socket).
    socket = ${SOCKET:-/run/espgw/espgw.sock}

    # How long one request may take, in milliseconds.
    timeout = ${TIMEOUT:-5000}
}
CONF
  mv "$CONF.tmp" "$CONF"
fi
echo "install-plugin: $PLUGINDIR/libstrongswan-kernel-espgw.so, $CONF"
