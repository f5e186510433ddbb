#include "tests/fuzz/fuzz_gateway.h"

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_ring.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "control/config.h"
#include "dataplane/counters.h"
#include "dataplane/dataplane.h"
#include "dataplane/neighbor_info.h"

namespace fuzz {
namespace dp = espgw::dataplane;

namespace {

std::string key_hex(const SaKeys& k) {
  std::string s = "0x";
  const int n = k.aes256 ? 36 : 20;
  for (int i = 0; i < n; i++) s += fmt::format("{:02x}", uint8_t(k.key_base + i));
  return s;
}

// One protected port (a /24 with the LAN router as gateway, a static
// neighbour, ARP for the rest), one unprotected port with two addresses and
// an upstream gateway, the exception path, three tunnels: t1 plain ESP with
// a small MTU (pre-encryption fragmentation, ICMP frag-needed) and MSS
// clamping, t2 ESP-in-UDP on NAT-T port 4501 with ESN, resolved by ARP
// through the WAN gateway, t3 administratively down without SAs.
std::string config_yaml() {
  std::string y = R"(
eal: [--no-huge, -m, "256", --no-pci, --no-shconf, --no-telemetry, -l, "0,1", --log-level, "*:error"]
workers: [1]
mbufs: 8192
ports:
  - name: lan
    device: net_ring0
    role: protected
    addresses: [10.0.0.1/24]
    mac: "02:00:00:00:00:01"
    peer_ip: 10.0.0.254
    peer_mac: "02:00:00:00:00:fe"
    neighbors: [{ip: 10.0.0.10, mac: "02:00:00:00:00:10"}]
    rx_desc: 64
    tx_desc: 64
  - name: wan
    device: net_ring1
    role: unprotected
    addresses: [198.51.100.10/24, 198.51.100.11/24]
    mac: "02:00:00:00:00:02"
    gateway: 198.51.100.1
    rx_desc: 64
    tx_desc: 64
exception: { enabled: true, device: net_ring2 }
tunnels:
  - { name: t1, port: wan, local: 198.51.100.10, remote: 203.0.113.1, next_hop_mac: "02:00:00:00:02:fe",
      mtu: 576, mss_clamp: 1379 }
  - { name: t2, port: wan, local: 198.51.100.11, remote: 203.0.113.2, udp_encap: true, udp_src_port: 4501,
      udp_dst_port: 4500, dscp: 10, df: clear, ttl: 30 }
  - { name: t3, port: wan, local: 198.51.100.10, remote: 198.51.100.20, df: set, up: false }
routes:
  - { prefix: 172.16.0.0/16, via: [{ tunnel: t1 }] }
  - { prefix: 172.17.0.0/16, via: [{ tunnel: t2 }] }
  - { prefix: 172.18.0.0/16, via: [{ tunnel: t3 }, { tunnel: t1, priority: 5 }] }
sas:
)";
  for (const SaKeys& k : sa_keys()) {
    const char* tunnel = k.udp ? "t2" : "t1";
    y += fmt::format("  - {{ direction: {}, spi: {}, tunnel: {}, algo: {}, key: \"{}\", esn: {}", k.inbound ? "in" : "out",
                     k.spi, tunnel, k.aes256 ? "aes256-gcm" : "aes128-gcm", key_hex(k), k.esn ? "true" : "false");
    if (k.inbound) {
      if (k.spi == 0x2001) y += ", replay_window: 64";
      if (k.spi == 0x2003) y += ", replay_window: 0, local_selectors: [10.0.0.0/24], remote_selectors: [172.16.0.0/16]";
    }
    y += " }\n";
  }
  return y;
}

}  // namespace

void fail(const std::string& what) {
  std::fprintf(stderr, "\n==FUZZ INVARIANT== %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

const std::vector<SaKeys>& sa_keys() {
  static const std::vector<SaKeys> keys = {
      {0x1001, false, false, false, ip4(203, 0, 113, 1), 0x00, false},
      {0x2001, true, false, false, ip4(198, 51, 100, 10), 0x20, false},
      {0x1002, false, true, true, ip4(203, 0, 113, 2), 0x40, true},
      {0x2002, true, true, true, ip4(198, 51, 100, 11), 0x80, true},
      {0x2003, true, false, false, ip4(198, 51, 100, 10), 0xc0, false},
  };
  return keys;
}

const espgw::crypto::AeadContext& sa_context(uint32_t spi, bool inbound) {
  static std::map<std::pair<uint32_t, bool>, std::unique_ptr<espgw::crypto::AeadContext>> ctx;
  auto& c = ctx[{spi, inbound}];
  if (!c) {
    for (const SaKeys& k : sa_keys())
      if (k.spi == spi && k.inbound == inbound) {
        std::vector<uint8_t> km;
        for (int i = 0; i < (k.aes256 ? 36 : 20); i++) km.push_back(uint8_t(k.key_base + i));
        c = std::make_unique<espgw::crypto::AeadContext>(
            k.aes256 ? espgw::crypto::AeadAlgo::kAes256Gcm : espgw::crypto::AeadAlgo::kAes128Gcm, km,
            espgw::crypto::Backend::kOpenssl);
      }
    if (!c) fail(fmt::format("no SA 0x{:x}", spi));
  }
  return *c;
}

uint16_t cksum(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; i += 2) s += (i + 1 < n) ? (uint32_t{p[i]} << 8 | p[i + 1]) : uint32_t{p[i]} << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}

std::vector<Frame> split_records(const uint8_t* data, size_t size) {
  std::vector<Frame> out;
  size_t i = 0;
  while (i + 3 <= size && out.size() < 256) {
    const uint8_t b = data[i];
    size_t len = size_t{data[i + 1]} << 8 | data[i + 2];
    i += 3;
    len = std::min(len, size - i);
    Frame f;
    f.port = (b & 3) == 3 ? kWan : (b & 3);
    f.flags = (b >> 2) & 0x1f;
    f.poll_before = (b & 0x80) != 0;
    f.bytes.assign(data + i, data + i + len);
    out.push_back(std::move(f));
    i += len;
  }
  return out;
}

FuzzGateway& FuzzGateway::instance() {
  static FuzzGateway* g = new FuzzGateway();  // lives as long as the process (EAL cannot come up twice)
  return *g;
}

FuzzGateway::FuzzGateway() {
  try {
    espgw::control::GatewayConfig cfg = espgw::control::parse_config(config_yaml(), "<fuzz>");
    cfg.control.socket_path.clear();  // no socket: the harness is the only client
    // A file prefix of its own: libFuzzer's -fork/-jobs run several at once.
    gw_ = std::make_unique<espgw::control::Gateway>(
        std::move(cfg), std::vector<std::string>{"--file-prefix", fmt::format("espgw_fuzz_{}", getpid())});
    gw_->start(/*launch_workers=*/false);
  } catch (const std::exception& e) {
    fail(std::string("gateway start: ") + e.what());
  }
  const char* names[3] = {"ETH_RXTX0_net_ring0", "ETH_RXTX0_net_ring1", "ETH_RXTX0_net_ring2"};
  for (int i = 0; i < 3; i++) {
    rings_[i] = rte_ring_lookup(names[i]);
    if (!rings_[i]) fail(fmt::format("no ring {}", names[i]));
  }
  if (dp().nb_ports != 3 || dp().nb_workers != 1) fail("unexpected port/worker count");
  baseline_in_use_ = rte_mempool_in_use_count(dp().pool);
}

void FuzzGateway::reset_replay_windows() {
  for (const SaKeys& k : sa_keys()) {
    if (!k.inbound) continue;
    dp::InboundSa* sa = dp().inbound->lookup({k.spi, k.dst});
    if (sa == nullptr) fail(fmt::format("inbound SA 0x{:x} not installed", k.spi));
    sa->replay.reset(sa->replay.window(), sa->replay.esn());
  }
}

void FuzzGateway::poll_and_drain(const SentFn& on_sent) {
  dp::worker_poll_once(dp(), 0);
  for (uint16_t p = 0; p < 3; p++) {
    void* objs[64];
    unsigned n;
    while ((n = rte_ring_dequeue_burst(rings_[p], objs, 64, nullptr)) != 0)
      for (unsigned i = 0; i < n; i++) {
        auto* m = static_cast<rte_mbuf*>(objs[i]);
        if (on_sent) on_sent(p, m);
        rte_pktmbuf_free(m);
      }
  }
}

void FuzzGateway::run(const std::vector<Frame>& frames, const SentFn& on_sent) {
  dp::Dataplane& d = dp();
  unsigned queued[3] = {0, 0, 0};
  bool any = false;
  const uint16_t room = uint16_t(rte_pktmbuf_data_room_size(d.pool) - RTE_PKTMBUF_HEADROOM);
  for (const Frame& f : frames) {
    if (f.poll_before || queued[f.port] == dp::kBurst) {
      poll_and_drain(on_sent);
      queued[0] = queued[1] = queued[2] = 0;
    }
    rte_mbuf* m = rte_pktmbuf_alloc(d.pool);
    if (!m) fail("mbuf pool empty before the input ran");
    const uint16_t len = uint16_t(std::min<size_t>(f.bytes.size(), room));
    char* p = rte_pktmbuf_append(m, len);
    if (len) memcpy(p, f.bytes.data(), len);
    m->port = d.ports[f.port].port_id;  // as a PMD stamps it
    if (rte_ring_enqueue(rings_[f.port], m) != 0) fail("ring full");
    queued[f.port]++;
    any = true;
  }
  if (any) poll_and_drain(on_sent);
  // Flush what the gateway parks on behalf of senders: outer fragments
  // (counted as reassembly timeouts) and packets held for ARP.
  dp::worker_release_fragments(d, 0);
  dp::drop_all_held(d);
  check_invariants("after the input");
  // FUZZ_VERBOSE=1: the counters after each input (to see how far a seed gets).
  static const bool verbose = std::getenv("FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "%s\n", gw_->format_stats().c_str());
}

void FuzzGateway::check_invariants(const char* when) {
  dp::Dataplane& d = dp();
  const unsigned in_use = rte_mempool_in_use_count(d.pool);
  if (in_use != baseline_in_use_)
    fail(fmt::format("{}: mbuf leak: {} mbufs in use, {} at start", when, in_use, baseline_in_use_));
  const dp::WorkerCounters& c = *d.counters[0];
  if (c.update_seq & 1) fail(fmt::format("{}: counter update sequence left odd ({})", when, c.update_seq));
  uint64_t dropped_rx = 0, tx_dropped = 0;
  for (uint16_t p = 0; p < d.nb_ports; p++) {
    dp::PortBalance b = dp::port_balance(c, p);
    if (!b.rx_holds())
      fail(fmt::format("{}: port {} RX balance: rx {} != forwarded {} + to_host {} + consumed {} + dropped {} + queued {} "
                       "+ held {}",
                       when, p, b.rx, b.forwarded, b.to_host, b.consumed, b.dropped, b.queued, b.held));
    if (!b.tx_holds())
      fail(fmt::format("{}: port {} TX balance: staged {} != sent {} + tx_dropped {}", when, p, b.staged, b.sent,
                       b.tx_dropped));
    if (b.held != 0) fail(fmt::format("{}: port {}: {} fragments still held after the flush", when, p, b.held));
    dropped_rx += b.dropped;
    tx_dropped += b.tx_dropped;
  }
  uint64_t drop_total = 0;
  for (int r = 0; r < static_cast<int>(dp::DropReason::kCount); r++) {
    uint64_t rx_r = 0;
    for (uint16_t p = 0; p < d.nb_ports; p++) rx_r += c.rx_disp[p].dropped[r];
    if (c.drop[r] < rx_r)
      fail(fmt::format("{}: drop[{}] = {} < the ports' dropped {}", when, dp::drop_reason_name(dp::DropReason(r)),
                       c.drop[r], rx_r));
    drop_total += c.drop[r];
  }
  if (drop_total != dropped_rx + c.generated_dropped + tx_dropped)
    fail(fmt::format("{}: drops by reason {} != received dropped {} + generated_dropped {} + tx_dropped {}", when,
                     drop_total, dropped_rx, c.generated_dropped, tx_dropped));
}

}  // namespace fuzz
