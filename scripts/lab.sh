#!/usr/bin/env bash
# The strongSwan lab: the interop guide's AWS topology in network namespaces,
# with espgw driven by a real IKEv2 daemon.
#
#   scripts/lab.sh up       build the lab, wait until every CHILD_SA is INSTALLED
#   scripts/lab.sh down     remove every namespace, process and file it made
#   scripts/lab.sh status   both sides' `swanctl --list-sas`, espgw's tunnels and SAs
#
# Three namespaces (LAB_PREFIX names them, so labs and tests coexist):
#   $P-aws  the "AWS side": charon with kernel-libipsec (userspace ESP, always
#           in UDP 4500), endpoints 203.0.113.1/.2 (connection A) and
#           203.0.113.129/.130 (connection B), the VPC host 172.31.0.10 (on lo);
#           connection A narrowed to the two /25 halves of 10.240.128.0/24,
#           B the whole /24 (the guide's way to make AWS prefer A); and a
#           policy-based connection P (203.0.113.3, one CIDR each side:
#           10.240.128.0/24 <-> 172.30.0.0/16, VPC host 172.30.0.10).
#   $P-gw   espgw (af_packet on the veths "wan" and "lan", the exception TAP
#           "exc" with the member addresses 198.51.100.10/.11) and charon with
#           kernel-espgw as its IKE agent (kernel-netlink keeps addresses and
#           routes; the plugin installs SAs in espgw).
#   $P-lan  a LAN host 10.240.128.10/24, default route via espgw.
# IKEv2, a PSK per tunnel, AES-128-GCM on a1, b1, b2 and p1, AES-256-GCM on
# a2, PFS on rekey, DPD. Root only.
#
# Environment:
#   LAB_PREFIX   namespace prefix (default egl; at most 10 characters)
#   LAB_DIR      where configs, logs and sockets go (default /tmp/espgw-lab-$LAB_PREFIX)
#   ESPGW_BUILD  the meson build with control/espgw and control/espctl (default ./build)
#   LAB_TIMEOUT  seconds `up` waits for the CHILD_SAs (default 20)
#   LAB_GW_KERNEL espgw (default) | libipsec: the gateway charon's kernel-ipsec
#                provider; libipsec only brings IKE up (espgw drops its ESP),
#                for working on the topology without the plugin
#   LAB_DPD      DPD delay in seconds on both sides (default 1)
#   LAB_POLICY   1 (default) adds the policy-based tunnel p1; 0 leaves it out
#   LAB_KEEP     1: a failed `up` leaves the lab as it was, for a look
#   LAB_PLUGIN_SOCKET  the socket kernel-espgw connects to (default espgw's;
#                e.g. a recording proxy in front of it)
set -euo pipefail

ROOT_WHY="lab: run as root (namespaces, DPDK)" . "$(dirname "$0")/as-root.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
P=${LAB_PREFIX:-egl}
DIR=${LAB_DIR:-/tmp/espgw-lab-$P}
BUILD=${ESPGW_BUILD:-$ROOT/build}
TIMEOUT=${LAB_TIMEOUT:-20}
GW_KERNEL=${LAB_GW_KERNEL:-espgw}
DPD=${LAB_DPD:-1}
POLICY=${LAB_POLICY:-1}
NS_AWS=$P-aws NS_GW=$P-gw NS_LAN=$P-lan
ESPGW=$BUILD/control/espgw
ESPCTL=$BUILD/control/espctl
CHARON=/usr/lib/ipsec/charon

[ ${#P} -le 10 ] || { echo "lab: LAB_PREFIX is longer than 10 characters" >&2; exit 64; }
[[ $P =~ ^[a-z0-9-]+$ ]] || { echo "lab: LAB_PREFIX: only a-z 0-9 -" >&2; exit 64; }

# The guide's four tunnels (a1 a2 b1 b2) and the policy-based p1: gateway
# member, AWS endpoint, ESP proposal (with the PFS group a rekey negotiates),
# remote_ts on the AWS side.
declare -A LOCAL=([a1]=198.51.100.10 [a2]=198.51.100.10 [b1]=198.51.100.11 [b2]=198.51.100.11 [p1]=198.51.100.10)
declare -A REMOTE=([a1]=203.0.113.1 [a2]=203.0.113.2 [b1]=203.0.113.129 [b2]=203.0.113.130 [p1]=203.0.113.3)
declare -A ESP=([a1]=aes128gcm16-modp2048 [a2]=aes256gcm16-modp2048 [b1]=aes128gcm16-modp2048
                [b2]=aes128gcm16-modp2048 [p1]=aes128gcm16-modp2048)
declare -A IKE=([a1]=aes128-sha256-modp2048 [a2]=aes256-sha256-modp2048 [b1]=aes128-sha256-modp2048
                [b2]=aes128-sha256-modp2048 [p1]=aes128-sha256-modp2048)
LAN_NET=10.240.128.0/24
# Connection A: the LAN split in two /25s (more specific: AWS prefers A).
declare -A AWS_REMOTE_TS=([a1]="10.240.128.0/25,10.240.128.128/25" [a2]="10.240.128.0/25,10.240.128.128/25"
                          [b1]=$LAN_NET [b2]=$LAN_NET [p1]=$LAN_NET)
declare -A VPC_NET=([a1]=172.31.0.0/16 [a2]=172.31.0.0/16 [b1]=172.31.0.0/16 [b2]=172.31.0.0/16 [p1]=172.30.0.0/16)
[ "$POLICY" = 1 ] && ALL=(a1 a2 b1 b2 p1) || ALL=(a1 a2 b1 b2)

exec 3>&2  # stderr, also inside wait_for's silenced checks
log() { echo "lab: $*" >&2; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
now() { date +%s.%N; }

swanctl_side() {  # aws|gw --command args...  (swanctl wants the command first)
  local side=$1 cmd=$2; shift 2
  timeout 10 swanctl "$cmd" --uri "unix://$DIR/$side/charon.vici" "$@"
}

espctl() { timeout 10 "$ESPCTL" -s "$DIR/espgw.sock" "$@"; }

# TX checksum offload off (veths hand af_packet frames with partial checksums
# otherwise); no ethtool on the machine: ETHTOOL_STXCSUM through ioctl.
tx_csum_off() {  # ns ifname
  nsx "$1" /usr/bin/python3 - "$2" <<'EOF'
import ctypes, fcntl, socket, struct, sys
ETHTOOL_STXCSUM, SIOCETHTOOL = 0x17, 0x8946
cmd = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(cmd))
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), SIOCETHTOOL, ifr)
EOF
}

write_espgw_config() {
  local src=$ROOT/examples/lab-route-based.yaml
  sed -e "s|socket: /run/espgw/espgw-lab.sock|socket: $DIR/espgw.sock|" \
      -e "s|--file-prefix, espgw-lab,|--file-prefix, $P-espgw,|" "$src" >"$DIR/espgw.yaml"
  if [ "$POLICY" = 1 ]; then
    # The guide's policy-based connection: one SA pair over one CIDR each
    # side, on its own AWS endpoint; espgw enforces the SA's selectors.
    cat >>"$DIR/espgw.yaml" <<EOF
  - prefix: ${VPC_NET[p1]}
    via: [{ tunnel: aws-p1, priority: 10 }]
EOF
    /usr/bin/python3 - "$DIR/espgw.yaml" <<'EOF'
import sys, yaml
p = sys.argv[1]
c = yaml.safe_load(open(p))
c["tunnels"].append({"name": "aws-p1", "port": "wan", "local": "198.51.100.10", "remote": "203.0.113.3",
                     "udp_encap": True, "mss_clamp": 1379, "policy_based": True})
open(p, "w").write(yaml.safe_dump(c, sort_keys=False))
EOF
  fi
  grep -q "socket: $DIR/espgw.sock" "$DIR/espgw.yaml" || { log "cannot set the socket in $DIR/espgw.yaml"; return 1; }
}

strongswan_conf() {  # side load-list
  local side=$1 load=$2 extra=""
  if [ "$side" = gw ] && [ "$GW_KERNEL" = espgw ]; then
    extra="kernel-espgw { socket = ${LAB_PLUGIN_SOCKET:-$DIR/espgw.sock} }"
  fi
  # chd = 4 on the AWS side logs CHILD_SA keys: a test tool (the policy test
  # forges an out-of-selector packet under the AWS side's key), never in
  # production. ike stays at 1: at 4 it would print the PSKs.
  local chd=2
  [ "$side" = aws ] && chd=4
  cat >"$DIR/$side/strongswan.conf" <<EOF
charon {
  load = $load
  # The gateway's routes are espgw's (the seed's priorities), not charon's.
  install_routes = $([ "$side" = aws ] && echo yes || echo no)
  # Lab timers: DPD declares a peer dead after 3 x 0.5 s without an answer
  # (production: the defaults, 165 s).
  retransmit_timeout = 0.5
  retransmit_base = 1.0
  retransmit_tries = 2
  delete_rekeyed_delay = 2
  plugins {
    vici { socket = unix://$DIR/$side/charon.vici }
    $extra
  }
  filelog {
    lab {
      path = $DIR/$side/charon.log
      append = yes
      flush_line = yes
      time_format = %H:%M:%S
      default = 1
      ike = 1
      chd = $chd
      knl = 2
      cfg = 1
    }
  }
  syslog { daemon { default = -1 } }
}
EOF
}

swanctl_conf() {  # side
  local side=$1 t
  local f="$DIR/$side/swanctl.conf"
  {
    echo "connections {"
    for t in "${ALL[@]}"; do
      local me=${LOCAL[$t]} peer=${REMOTE[$t]} lts=$LAN_NET rts=${VPC_NET[$t]}
      local start="start_action = start" dpd_action="dpd_action = restart" keying="keyingtries = 0"
      if [ "$side" = aws ]; then
        me=${REMOTE[$t]} peer=${LOCAL[$t]} lts=${VPC_NET[$t]} rts=${AWS_REMOTE_TS[$t]}
        # AWS: startup action "add" (waits for the customer gateway), DPD
        # timeout action "clear".
        start="start_action = none" dpd_action="dpd_action = clear" keying="keyingtries = 1"
      fi
      cat <<EOF
  $t {
    version = 2
    local_addrs = $me
    remote_addrs = $peer
    proposals = ${IKE[$t]}
    rekey_time = 28800s
    dpd_delay = ${DPD}s
    mobike = no
    $keying
    local { auth = psk
            id = $me }
    remote { auth = psk
             id = $peer }
    children {
      $t {
        local_ts = $lts
        remote_ts = $rts
        esp_proposals = ${ESP[$t]}
        replay_window = 1024
        rekey_time = 2700s
        life_time = 3600s
        $dpd_action
        $start
      }
    }
  }
EOF
    done
    echo "}"
    echo "secrets {"
    for t in "${ALL[@]}"; do
      cat <<EOF
  ike-$t {
    id-gw = ${LOCAL[$t]}
    id-aws = ${REMOTE[$t]}
    secret = "$(cat "$DIR/psk-$t")"
  }
EOF
    done
    echo "}"
    # Tests add per-child options here (e.g. rekey_bytes) and reload.
    echo "include $DIR/$side/swanctl.d/*.conf"
  } >"$f"
}

start_charon() {  # side ns
  local side=$1 ns=$2
  # A private /run (ip netns exec gives the command its own mount namespace):
  # charon's pid file path is compiled in.
  setsid ip netns exec "$ns" sh -c "mount -t tmpfs lab /run && exec env STRONGSWAN_CONF=$DIR/$side/strongswan.conf $CHARON" \
    </dev/null >"$DIR/$side/charon.out" 2>&1 3>&- &
  echo $! >"$DIR/$side/charon.pid"
}

wait_for() {  # seconds description command...
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s%N) + limit * 1000000000 ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s%N)" -gt "$end" ]; then log "timed out after ${limit}s waiting for $what"; return 1; fi
    sleep 0.02
  done
}

installed_count() {  # side
  swanctl_side "$1" --list-sas 2>/dev/null | grep -c "INSTALLED" || true
}

all_installed() {
  [ "$(installed_count aws)" -ge ${#ALL[@]} ] && [ "$(installed_count gw)" -ge ${#ALL[@]} ]
}

tunnels_up() {  # espgw: every lab tunnel has an outbound SA
  [ "$GW_KERNEL" = espgw ] || return 0
  local n
  n=$(espctl --json tunnels | /usr/bin/python3 -c 'import json,sys; print(sum(t["oper"]=="up" for t in json.load(sys.stdin)["tunnels"]))')
  [ "$n" -ge ${#ALL[@]} ]
}

espgw_answers() {  # fails at once (exit) when espgw is gone
  if ! kill -0 "$(cat "$DIR/espgw.pid")" 2>/dev/null; then
    { log "espgw exited:"; tail -20 "$DIR/espgw.log"; } >&3 2>&3; exit 1
  fi
  espctl raw '{"op":"ping"}'
}

next_hops_resolved() {
  espctl --json neighbors | /usr/bin/python3 -c '
import json, sys
n = [e for e in json.load(sys.stdin)["neighbors"] if e["tunnel_next_hop"]]
sys.exit(0 if n and all(e["mac"] for e in n) else 1)'
}

up() {
  local t0 t1
  t0=$(now)
  [ -x "$ESPGW" ] || { log "no espgw at $ESPGW (build first, or set ESPGW_BUILD)"; exit 1; }
  if ip netns list | grep -qw "$NS_GW"; then log "lab $P is already up (scripts/lab.sh down first)"; exit 1; fi
  if [ "$GW_KERNEL" = espgw ]; then
    # The plugin this build made (scripts/install-plugin.sh puts it where
    # charon loads plugins from), unless that one is installed already.
    local so=$BUILD/control/strongswan/libstrongswan-kernel-espgw.so
    if [ -f "$so" ] && ! cmp -s "$so" /usr/lib/ipsec/plugins/libstrongswan-kernel-espgw.so; then
      bash "$ROOT/scripts/install-plugin.sh" "$BUILD" >&2
    fi
    [ -f /usr/lib/ipsec/plugins/libstrongswan-kernel-espgw.so ] ||
      { log "kernel-espgw is not built or installed (meson -Dstrongswan=enabled; or LAB_GW_KERNEL=libipsec)"; exit 1; }
  fi
  # From here on, a failed bring-up leaves nothing behind (LAB_KEEP=1: keep
  # it to look at).
  # shellcheck disable=SC2154  # rc is set inside the trap
  trap 'rc=$?; if [ $rc -ne 0 ] && [ "${LAB_KEEP:-0}" != 1 ]; then log "bring-up failed; removing the lab"; down; fi' EXIT
  rm -rf "$DIR"; mkdir -p "$DIR"/{aws,gw}/swanctl.d
  touch "$DIR/aws/swanctl.d/empty.conf" "$DIR/gw/swanctl.d/empty.conf"
  for t in "${ALL[@]}"; do head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DIR/psk-$t"; done
  chmod 600 "$DIR"/psk-*

  for ns in "$NS_AWS" "$NS_GW" "$NS_LAN"; do
    ip netns add "$ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$ns" ip link set lo up
  done
  # The gateway's kernel sees the veths' frames too (af_packet is a tap, not
  # an owner): no ARP from it there, and strict reverse-path filtering so it
  # never takes a packet to a member address (its addresses are on "exc").
  nsx "$NS_GW" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1
  ip -n "$NS_GW" link add name wan type veth peer name eth0 netns "$NS_AWS"
  ip -n "$NS_GW" link add name lan type veth peer name eth0 netns "$NS_LAN"
  for i in wan lan; do ip -n "$NS_GW" link set "$i" arp off up; done
  tx_csum_off "$NS_AWS" eth0
  tx_csum_off "$NS_LAN" eth0

  # AWS side: the tunnel endpoints on the link, the VPC hosts on lo. The
  # drop device takes what a test blackholes (tc redirects to it; it is down).
  ip -n "$NS_AWS" link set eth0 up
  for t in "${ALL[@]}"; do ip -n "$NS_AWS" addr add "${REMOTE[$t]}/32" dev eth0; done
  ip -n "$NS_AWS" route add 198.51.100.0/24 dev eth0
  ip -n "$NS_AWS" addr add 172.31.0.10/32 dev lo
  ip -n "$NS_AWS" addr add 172.30.0.10/32 dev lo
  ip -n "$NS_AWS" link add name drop0 type veth peer name drop1
  nsx "$NS_AWS" tc qdisc add dev eth0 clsact

  ip -n "$NS_LAN" addr add 10.240.128.10/24 dev eth0
  ip -n "$NS_LAN" link set eth0 up
  ip -n "$NS_LAN" route add default via 10.240.128.1

  write_espgw_config
  setsid ip netns exec "$NS_GW" "$ESPGW" --config "$DIR/espgw.yaml" </dev/null >"$DIR/espgw.log" 2>&1 3>&- &
  echo $! >"$DIR/espgw.pid"

  strongswan_conf aws "random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici"
  if [ "$GW_KERNEL" = espgw ]; then
    strongswan_conf gw "random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 pubkey kernel-espgw kernel-netlink socket-default vici"
  else
    strongswan_conf gw "random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici"
  fi
  swanctl_conf aws
  swanctl_conf gw
  start_charon aws "$NS_AWS"

  wait_for 20 "espgw's control socket" espgw_answers || { tail -20 "$DIR/espgw.log" >&2; exit 1; }
  nsx "$NS_GW" ip addr add 198.51.100.10/32 dev exc
  nsx "$NS_GW" ip addr add 198.51.100.11/32 dev exc
  nsx "$NS_GW" ip link set exc up
  nsx "$NS_GW" ip route add 203.0.113.0/24 dev exc
  # IKE to a tunnel peer leaves by the tunnel's next hop: resolved first, so
  # the first IKE_SA_INIT is not dropped as no_neighbor.
  wait_for 5 "espgw to resolve the AWS endpoints" next_hops_resolved || true
  if [ "$GW_KERNEL" = libipsec ]; then
    # kernel-libipsec routes from an address inside each local selector.
    nsx "$NS_GW" ip addr add 10.240.128.1/32 dev lo
    nsx "$NS_GW" ip addr add 10.240.128.129/32 dev lo
  fi
  start_charon gw "$NS_GW"

  wait_for 10 "the AWS side's vici socket" test -S "$DIR/aws/charon.vici"
  swanctl_side aws --load-all --file "$DIR/aws/swanctl.conf" >"$DIR/aws/load.out" 2>&1
  wait_for 10 "the gateway's vici socket" test -S "$DIR/gw/charon.vici"
  swanctl_side gw --load-all --file "$DIR/gw/swanctl.conf" >"$DIR/gw/load.out" 2>&1
  if ! wait_for "$TIMEOUT" "${#ALL[@]} CHILD_SAs INSTALLED on both sides" all_installed; then
    status >&2 || true; exit 1
  fi
  wait_for 5 "espgw's tunnels to come up" tunnels_up || { status >&2 || true; exit 1; }
  # libipsec's routes in table 220 are per policy and removed with the tunnel
  # that owns them: a fallback keeps the VPC's answers on ipsec0.
  ip -n "$NS_AWS" route add $LAN_NET dev ipsec0 src 172.31.0.10 metric 1000
  t1=$(now)
  awk -v a="$t0" -v b="$t1" -v p="$P" -v n="${#ALL[@]}" 'BEGIN { printf "lab %s up in %.2f s (%d tunnels)\n", p, b - a, n }'
}

running() {  # pid: alive and not a zombie (init reaps late: charon stays one for ~1.5 s)
  [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null
}

down() {
  # The charons by SIGKILL (a graceful stop sends DELETEs and waits for a
  # peer that is going away too), espgw by SIGTERM (its final report and
  # DPDK's cleanup), all at once; then wait for them.
  local f pid pids=()
  for f in "$DIR/gw/charon.pid" "$DIR/aws/charon.pid" "$DIR/espgw.pid"; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    if [ "$f" = "$DIR/espgw.pid" ]; then kill -TERM "$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 400); do running "$pid" || break; sleep 0.025; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for ns in "$NS_GW" "$NS_AWS" "$NS_LAN"; do
    ip netns list | grep -qw "$ns" || continue
    # Anything else a test started inside the lab's namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
  rm -rf "/var/run/dpdk/$P-espgw" "$DIR"
}

status() {
  echo "== AWS side ($NS_AWS): swanctl --list-sas"
  swanctl_side aws --list-sas || true
  echo "== gateway ($NS_GW): swanctl --list-sas"
  swanctl_side gw --list-sas || true
  echo "== espgw: tunnels"
  espctl tunnels || true
  echo "== espgw: routes"
  espctl routes || true
  echo "== espgw: SAs"
  espctl sas || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status   (env: LAB_PREFIX, LAB_DIR, ESPGW_BUILD, LAB_TIMEOUT)" >&2; exit 64 ;;
esac
