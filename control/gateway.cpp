#include "control/gateway.h"

#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_jhash.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pdump.h>
#include <rte_telemetry.h>

#include <cctype>
#include <csignal>
#include <cstring>
#include <mutex>
#include <regex>
#include <set>
#include <stdexcept>

#include "control/accounting.h"
#include "control/control_server.h"
#include "control/xfrm.h"
#include "dataplane/neighbor_info.h"
#include "dataplane/packet_util.h"

namespace espgw::control {
namespace dp = espgw::dataplane;
using nlohmann::json;

namespace {
// Ethernet + VLAN tag, and ESP-in-UDP's growth (UDP 8, ESP 8, IV 8, pad 3,
// pad length and next header 2, ICV 16) rounded up: tailroom a frame of a
// port's MTU needs beyond the MTU.
constexpr uint32_t kL2AndEspRoom = 128;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

std::runtime_error dpdk_error(const std::string& what, int rc) {
  return std::runtime_error(fmt::format("{}: {}", what, rte_strerror(rc < 0 ? -rc : rc)));
}

bool is_pci_address(const std::string& dev) {
  static const std::regex pci(R"(^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7](,.*)?$)");
  return std::regex_match(dev, pci);
}

std::string device_name(const std::string& dev) { return dev.substr(0, dev.find(',')); }

uint32_t prefix_mask(uint8_t len) { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }

crypto::AeadAlgo to_algo(SaAlgo a) {
  return a == SaAlgo::kAes128Gcm ? crypto::AeadAlgo::kAes128Gcm : crypto::AeadAlgo::kAes256Gcm;
}

json pbc(const dp::PacketByteCount& c) { return {{"packets", c.packets}, {"bytes", c.bytes}}; }

void add(dp::PacketByteCount& a, const dp::PacketByteCount& b) {
  a.packets += b.packets;
  a.bytes += b.bytes;
}
}  // namespace

struct Gateway::Snapshot {
  std::mutex mu;
  bool live = false;
  json stats, sas, routes;
};

Gateway::Gateway(GatewayConfig cfg, std::vector<std::string> extra_eal)
    : cfg_(std::move(cfg)), extra_eal_(std::move(extra_eal)) {}

Gateway::~Gateway() {
  stop();
  if (snapshot_) {
    std::lock_guard<std::mutex> lock(snapshot_->mu);
    snapshot_->live = false;
  }
  server_.reset();
  xfrm_.reset();
  sas_.reset();  // unpublishes and wipes keys (AeadContext destructors)
  routes_.reset();
  tunnels_.clear();
  if (dp_) {
    for (uint16_t p = 0; p < dp_->nb_ports; p++) {
      rte_eth_dev_stop(dp_->ports[p].port_id);
      rte_eth_dev_close(dp_->ports[p].port_id);
    }
    if (dp_->inbound) rte_hash_free(dp_->inbound);
    for (uint16_t w = 0; w < dp_->nb_workers; w++) {
      rte_free(dp_->counters[w]);
      for (uint16_t p = 0; p < dp::kMaxPorts; p++)
        if (dp_->reasm[w][p]) rte_ip_frag_table_destroy(dp_->reasm[w][p]);
    }
    rte_free(dp_->qsbr);
  }
  if (dp_ && dp_->pool) rte_mempool_free(dp_->pool);
  dp_.reset();
  if (eal_up_) rte_eal_cleanup();
}

void Gateway::request_stop() { g_stop.store(true); }

void Gateway::init_eal() {
  std::vector<std::string> args{"espgw"};
  args.insert(args.end(), cfg_.eal_args.begin(), cfg_.eal_args.end());
  for (const auto& p : cfg_.ports) {
    args.push_back(is_pci_address(p.device) ? "-a" : "--vdev");
    args.push_back(p.device);
  }
  if (cfg_.exception.enabled) {
    args.push_back("--vdev");
    args.push_back(cfg_.exception.device);
  }
  args.insert(args.end(), extra_eal_.begin(), extra_eal_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = rte_eal_init(static_cast<int>(args.size()), argv.data());
  if (rc < 0) throw dpdk_error("EAL initialisation failed (see the EAL messages above; eal: in the config)", rte_errno);
  eal_up_ = true;

  if (cfg_.worker_lcores.empty()) {
    unsigned l;
    RTE_LCORE_FOREACH_WORKER(l) worker_lcores_.push_back(l);
  } else {
    for (uint32_t l : cfg_.worker_lcores) {
      if (!rte_lcore_is_enabled(l) || l == rte_get_main_lcore())
        throw std::runtime_error(fmt::format(
            "workers: lcore {} is not an enabled worker lcore (main lcore is {}; give EAL -l/--lcores covering it)", l,
            rte_get_main_lcore()));
      worker_lcores_.push_back(l);
    }
  }
  if (worker_lcores_.empty())
    throw std::runtime_error("no worker lcore: give EAL at least two lcores (e.g. eal: [-l, \"0,1\", ...]); the main "
                             "lcore runs the control thread");
  if (worker_lcores_.size() > dp::kMaxWorkers) throw std::runtime_error("too many workers");
}

// A port's neighbour table: connected subnets, the gateway (the protected
// port's legacy peer_ip / peer_mac), static entries, the reachable time.
static void init_neighbors(dp::NeighborTable& t, const PortConfig& pc) {
  t.reachable_tsc = rte_get_tsc_hz() * pc.neighbor_timeout_s;
  for (size_t i = 0; i < pc.addresses.size(); i++) {
    if (pc.prefix_lens[i] == 0 || t.nb_subnets == dp::kMaxSubnets) continue;
    uint32_t mask = pc.prefix_lens[i] == 32 ? ~0u : ~(~0u >> pc.prefix_lens[i]);
    t.subnet[t.nb_subnets] = pc.addresses[i] & mask;
    t.mask[t.nb_subnets] = mask;
    t.subnet_src[t.nb_subnets++] = pc.addresses[i];
  }
  auto add_static = [&](uint32_t ip, const MacAddr& mac) {
    dp::NeighborEntry* e = dp::neighbor_find_or_add(t, ip);
    if (e == nullptr) throw std::runtime_error(fmt::format("neighbour table full at {}", format_ipv4(ip)));
    e->mac.store(dp::pack_mac_bytes(mac.b));
    e->is_static.store(true);
  };
  for (const auto& n : pc.neighbors) add_static(n.ip, n.mac);
  std::optional<uint32_t> gw = pc.gateway ? pc.gateway : pc.peer_ip;
  if (gw) {
    t.gateway = dp::neighbor_find_or_add(t, *gw);
    if (t.gateway == nullptr) throw std::runtime_error(fmt::format("neighbour table full at {}", format_ipv4(*gw)));
    if (pc.peer_mac) add_static(*gw, *pc.peer_mac);
  } else if (pc.peer_mac) {  // a LAN next hop known by MAC only
    t.anon_gateway.mac.store(dp::pack_mac_bytes(pc.peer_mac->b));
    t.anon_gateway.is_static.store(true);
    t.gateway = &t.anon_gateway;
  }
}

void Gateway::init_ports() {
  auto& d = *dp_;
  d.nb_workers = static_cast<uint16_t>(worker_lcores_.size());
  // One segment holds the largest frame a port takes (jumbo MTUs included):
  // the pipelines work on single-segment mbufs only.
  uint16_t max_mtu = 1500;
  for (const auto& pc : cfg_.ports) max_mtu = std::max(max_mtu, pc.mtu);
  const uint32_t data_room = std::max<uint32_t>(RTE_MBUF_DEFAULT_BUF_SIZE,
                                                RTE_PKTMBUF_HEADROOM + max_mtu + kL2AndEspRoom);
  d.pool = rte_pktmbuf_pool_create("espgw_mbufs", cfg_.mbufs, 256, 0, static_cast<uint16_t>(data_room),
                                   static_cast<int>(rte_socket_id()));
  if (!d.pool) throw dpdk_error(fmt::format("mbuf pool of {} mbufs", cfg_.mbufs), rte_errno);

  struct Want {
    std::string device;
    dp::PortKind kind;
    const PortConfig* pc;
  };
  std::vector<Want> want;
  for (const auto& p : cfg_.ports)
    want.push_back({p.device, p.role == PortRole::kProtected ? dp::PortKind::kProtected : dp::PortKind::kUnprotected, &p});
  if (cfg_.exception.enabled) want.push_back({cfg_.exception.device, dp::PortKind::kException, nullptr});
  if (want.size() > dp::kMaxPorts) throw std::runtime_error("too many ports");

  for (size_t i = 0; i < want.size(); i++) {
    const Want& w = want[i];
    const std::string what = w.pc ? fmt::format("ports[{}] ({})", i, w.pc->name) : std::string("exception.device");
    uint16_t pid;
    if (rte_eth_dev_get_port_by_name(device_name(w.device).c_str(), &pid) != 0)
      throw std::runtime_error(fmt::format("{}: no DPDK port named '{}' after EAL init (device '{}')", what,
                                           device_name(w.device), w.device));
    rte_eth_dev_info info{};
    int rc = rte_eth_dev_info_get(pid, &info);
    if (rc != 0) throw dpdk_error(what + ": device info", rc);
    uint16_t nrx = std::min<uint16_t>(d.nb_workers, info.max_rx_queues);
    uint16_t ntx = d.nb_workers;
    if (info.max_tx_queues < ntx)
      throw std::runtime_error(fmt::format(
          "{}: needs one TX queue per worker ({}), device offers {} (net_pcap: give one tx_pcap/tx_iface per worker)",
          what, ntx, info.max_tx_queues));
    rte_eth_conf conf{};
    if (nrx > 1 && info.flow_type_rss_offloads) {
      conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
      conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    }
    rc = rte_eth_dev_configure(pid, nrx, ntx, &conf);
    if (rc != 0) throw dpdk_error(what + ": configure", rc);
    uint16_t nrxd = w.pc ? w.pc->rx_desc : 1024, ntxd = w.pc ? w.pc->tx_desc : 1024;
    rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrxd, &ntxd);
    int socket = rte_eth_dev_socket_id(pid);
    if (socket < 0) socket = static_cast<int>(rte_socket_id());
    for (uint16_t q = 0; q < nrx; q++)
      if ((rc = rte_eth_rx_queue_setup(pid, q, nrxd, socket, nullptr, d.pool)) != 0)
        throw dpdk_error(fmt::format("{}: RX queue {}", what, q), rc);
    for (uint16_t q = 0; q < ntx; q++)
      if ((rc = rte_eth_tx_queue_setup(pid, q, ntxd, socket, nullptr)) != 0)
        throw dpdk_error(fmt::format("{}: TX queue {}", what, q), rc);
    bool soft_mac = false;  // devices that cannot change their MAC (net_pcap): we write L2 ourselves
    if (w.pc && w.pc->mac) {
      rte_ether_addr a;
      memcpy(a.addr_bytes, w.pc->mac->b, 6);
      if (rte_eth_dev_default_mac_addr_set(pid, &a) != 0) {
        rte_eth_promiscuous_enable(pid);  // so frames to the configured MAC still arrive
        soft_mac = true;
      }
    }
    if (w.pc && w.pc->mtu != 1500) {
      rc = rte_eth_dev_set_mtu(pid, w.pc->mtu);
      if (rc != 0) fmt::print(stderr, "espgw: {}: cannot set MTU {} on the device ({}); using it as the IP MTU anyway\n",
                              what, w.pc->mtu, rte_strerror(-rc));
    }
    if ((rc = rte_eth_dev_start(pid)) != 0) throw dpdk_error(what + ": start", rc);
    port_ids_.push_back(pid);

    dp::Port& p = d.ports[d.nb_ports];
    p.port_id = pid;
    p.kind = w.kind;
    p.nb_rx_queues = nrx;
    p.mtu = w.pc ? w.pc->mtu : 1500;
    rte_eth_macaddr_get(pid, &p.mac);
    if (soft_mac) memcpy(p.mac.addr_bytes, w.pc->mac->b, 6);
    p.nb_addrs = 0;
    if (w.pc) {
      if (w.pc->addresses.size() > dp::kMaxPortAddrs)
        throw std::runtime_error(fmt::format("{}: at most {} addresses per port", what, dp::kMaxPortAddrs));
      for (uint32_t a : w.pc->addresses) p.addrs[p.nb_addrs++] = a;
    }
    if (w.pc) init_neighbors(d.neighbors[d.nb_ports], *w.pc);
    if (w.kind == dp::PortKind::kProtected && d.protected_port == dp::kNoPort) d.protected_port = d.nb_ports;
    if (w.kind == dp::PortKind::kException) d.exception_port = d.nb_ports;
    d.nb_ports++;
  }
  if (d.protected_port == dp::kNoPort) throw std::runtime_error("ports: no protected port");
}

uint16_t Gateway::tunnel_index(const std::string& name) const {
  for (size_t i = 0; i < tunnels_.size(); i++)
    if (tunnels_[i].name == name) return static_cast<uint16_t>(i);
  throw std::runtime_error("unknown tunnel '" + name + "'");
}

void Gateway::init_tables() {
  auto& d = *dp_;
  // RCU: one thread id per worker (= worker index).
  size_t sz = rte_rcu_qsbr_get_memsize(d.nb_workers);
  d.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("espgw_qsbr", sz, RTE_CACHE_LINE_SIZE));
  if (!d.qsbr || rte_rcu_qsbr_init(d.qsbr, d.nb_workers) != 0) throw std::runtime_error("RCU init failed");
  for (uint16_t w = 0; w < d.nb_workers; w++) {
    d.counters[w] = static_cast<dp::WorkerCounters*>(
        rte_zmalloc_socket("espgw_counters", sizeof(dp::WorkerCounters), RTE_CACHE_LINE_SIZE,
                           static_cast<int>(rte_lcore_to_socket_id(worker_lcores_[w]))));
    if (!d.counters[w]) throw std::runtime_error("no memory for worker counters");
  }
  // Outer reassembly (dataplane/reassembly.h): a table per worker and
  // unprotected port, bounded.
  const uint64_t reasm_cycles = rte_get_tsc_hz() / 1000 * d.reasm_timeout_ms;
  for (uint16_t w = 0; w < d.nb_workers; w++)
    for (uint16_t p = 0; p < d.nb_ports; p++)
      if (d.ports[p].kind == dp::PortKind::kUnprotected) {
        d.reasm[w][p] = rte_ip_frag_table_create(dp::kReasmBuckets, dp::kReasmBucketEntries, dp::kReasmMaxEntries,
                                                 reasm_cycles, static_cast<int>(rte_lcore_to_socket_id(worker_lcores_[w])));
        if (!d.reasm[w][p]) throw dpdk_error("outer reassembly table", rte_errno);
      }
  d.icmp_tokens_per_s = std::max<uint64_t>(1, cfg_.icmp_rate_limit_pps / d.nb_workers);
  if (cfg_.icmp_rate_limit_pps == 0) d.icmp_tokens_per_s = 0;

  rte_hash_parameters hp{};
  hp.name = "espgw_inbound_sa";
  hp.entries = 2 * dp::kMaxSas;
  hp.key_len = sizeof(dp::InboundKey);
  hp.hash_func = rte_jhash;
  hp.socket_id = static_cast<int>(rte_socket_id());
  hp.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;  // lock-free readers, one writer
  d.inbound = rte_hash_create(&hp);
  if (!d.inbound) throw dpdk_error("inbound SA hash", rte_errno);

  // Tunnels.
  if (cfg_.tunnels.size() > dp::kMaxTunnels) throw std::runtime_error("too many tunnels");
  auto port_index = [&](const std::string& name) -> uint16_t {
    for (size_t i = 0; i < cfg_.ports.size(); i++)
      if (cfg_.ports[i].name == name) return static_cast<uint16_t>(i);
    throw std::runtime_error("unknown port '" + name + "'");
  };
  tunnels_.resize(cfg_.tunnels.size());
  for (size_t i = 0; i < cfg_.tunnels.size(); i++) {
    const TunnelConfig& tc = cfg_.tunnels[i];
    dp::Tunnel& t = d.tunnels[i];
    t.out_sa.store(nullptr);
    t.port = port_index(tc.port);
    t.mtu = tc.mtu ? tc.mtu : cfg_.ports[t.port].mtu;
    t.max_inner = dp::esp_max_inner(t.mtu, false);
    t.max_inner_udp = dp::esp_max_inner(t.mtu, true);
    t.mss_clamp = tc.mss_clamp;
    t.remote = tc.remote;
    // The peer's next hop: its own `gateway`, else the port's gateway when
    // the peer is off the port's connected subnets, else the peer itself.
    const PortConfig& tpc = cfg_.ports[t.port];
    const dp::NeighborTable& nt = d.neighbors[t.port];
    t.next_hop.ip = tc.gateway.value_or(tpc.gateway && nt.nb_subnets && !dp::on_link(nt, tc.remote) ? *tpc.gateway
                                                                                                      : tc.remote);
    t.next_hop.is_static = tc.next_hop_mac.has_value();
    if (tc.next_hop_mac) {
      rte_ether_addr a;
      memcpy(a.addr_bytes, tc.next_hop_mac->b, 6);
      t.next_hop.mac.store(dp::pack_mac(a));
    } else {
      for (const auto& n : tpc.neighbors)  // a static neighbour entry for the next hop counts too
        if (n.ip == t.next_hop.ip) {
          t.next_hop.mac.store(dp::pack_mac_bytes(n.mac.b));
          t.next_hop.is_static = true;
        }
    }
    tunnels_[i].name = tc.name;
    tunnels_[i].admin_up = tc.up;
  }
  d.nb_tunnels = static_cast<uint16_t>(cfg_.tunnels.size());

  // SAs: the config file's static ones go through the same path as the
  // control socket's add-sa.
  std::vector<TunnelEndpoints> ends;
  for (const auto& tc : cfg_.tunnels) ends.push_back({tc.name, tc.local, tc.remote, tc.ttl, tc.dscp, tc.df});
  // The route table exists before any SA, so tunnel-state callbacks can run.
  lpm::RouteTableConfig rc;
  rc.max_routes = 1 << 16;
  rc.max_tunnels = dp::kMaxTunnels;
  rc.qsbr = d.qsbr;
  rc.name = "espgw";
  routes_ = std::make_unique<lpm::RouteTable>(rc);
  for (uint16_t t = 0; t < d.nb_tunnels; t++) routes_->add_tunnel(t, false);
  sas_ = std::make_unique<SaDatabase>(
      d, std::move(ends), [this](const json& ev) { emit(ev); }, [this](uint16_t t, bool has_sa) { refresh_tunnel_state(t, has_sa); });
  for (size_t i = 0; i < cfg_.sas.size(); i++) {
    const SaConfig& sc = cfg_.sas[i];
    SaParams p;
    p.direction = sc.direction;
    p.spi = sc.spi;
    p.tunnel = tunnel_index(sc.tunnel);
    p.algo = sc.algo;
    p.keymat = sc.keymat;
    p.esn = sc.esn;
    p.replay_window = sc.replay_window;
    p.initial_seq = sc.initial_seq;
    const TunnelConfig& tc = cfg_.tunnels[p.tunnel];
    p.udp_encap = tc.udp_encap;
    // Outbound: from our port to the peer's; inbound: the peer sends to our port.
    p.udp_sport = sc.direction == SaDirection::kOutbound ? tc.udp_src_port : tc.udp_dst_port;
    p.udp_dport = sc.direction == SaDirection::kOutbound ? tc.udp_dst_port : tc.udp_src_port;
    p.local_selectors = sc.local_selectors;
    p.remote_selectors = sc.remote_selectors;
    try {
      sas_->add(p);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("sas[{}]: {}", i, e.what()));
    }
  }

  // Routes: a tunnel is up while admin-up with an outbound SA (set above
  // through refresh_tunnel_state as SAs were added).
  for (size_t i = 0; i < cfg_.routes.size(); i++) {
    const RouteConfig& r = cfg_.routes[i];
    std::vector<lpm::NextHop> hops;
    for (const auto& h : r.via) hops.push_back({tunnel_index(h.tunnel), h.priority});
    try {
      routes_->add_route({r.prefix.addr, r.prefix.len}, hops);
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("routes[{}]: {}", i, e.what()));
    }
  }
  d.fib = &routes_->fib();
}

void Gateway::launch_workers() {
  auto& d = *dp_;
  worker_args_.resize(d.nb_workers);
  mbufs_at_start_ = mbufs_in_use();
  for (uint16_t w = 0; w < d.nb_workers; w++) {
    worker_args_[w] = {&d, w};
    int rc = rte_eal_remote_launch(dp::worker_main, &worker_args_[w], worker_lcores_[w]);
    if (rc != 0) {
      d.stop.store(true);
      rte_eal_mp_wait_lcore();
      throw dpdk_error(fmt::format("launch worker on lcore {}", worker_lcores_[w]), rc);
    }
  }
  workers_running_ = true;
  start_tsc_ = rte_rdtsc();
}

void Gateway::start() {
  dp_ = std::make_unique<dp::Dataplane>();
  init_eal();
  init_ports();
  init_tables();
  if (!cfg_.control.socket_path.empty())
    server_ = std::make_unique<ControlServer>(cfg_.control.socket_path, cfg_.control.socket_group,
                                              [this](const json& r) { return handle(r); });
  register_telemetry();
  // dpdk-dumpcap / dpdk-pdump attach as secondary processes; that needs the
  // shared configuration (no --no-shconf / --in-memory) and, in DPDK 22.11,
  // hugepage memory the secondary can map.
  if (rte_pdump_init() != 0)
    fmt::print(stderr, "espgw: pdump not available ({}): dpdk-dumpcap cannot capture\n", rte_strerror(rte_errno));
  if (cfg_.xfrm.enabled) start_xfrm_mirror();
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  launch_workers();
}

void Gateway::run() {
  uint64_t hz = rte_get_tsc_hz();
  uint64_t next_stats = rte_rdtsc() + cfg_.stats_interval_s * hz;
  uint64_t next_housekeeping = 0;
  while (!g_stop.load()) {
    if (server_)
      server_->poll(5);
    else
      rte_delay_us_sleep(5000);
    if (xfrm_) xfrm_->poll();
    uint64_t now = rte_rdtsc();
    if (now >= next_housekeeping) {  // 20 times a second
      sas_->check_lifetimes(sum_counters());
      publish_snapshot();
      next_housekeeping = now + hz / 20;
    }
    if (cfg_.stats_interval_s && now >= next_stats) {
      fmt::print("{}", format_stats());
      std::fflush(stdout);
      next_stats = now + cfg_.stats_interval_s * hz;
    }
  }
}

// -------------------------------------------------------------- XFRM mirror

void Gateway::start_xfrm_mirror() {
  xfrm_ = std::make_unique<xfrm::Mirror>([this](const xfrm::Event& ev) { on_xfrm_event(&ev); });
  xfrm_->dump();
  fmt::print("espgw: xfrm mirror: following the kernel's SAs ({} mirrored at start)\n", xfrm_mirrored_);
}

// Maps a kernel SA onto a tunnel by its outer addresses: outbound when the
// source is one of our tunnel endpoints, inbound when the destination is.
void Gateway::on_xfrm_event(const void* p) {
  const auto& ev = *static_cast<const xfrm::Event*>(p);
  auto find_tunnel = [&](uint32_t local, uint32_t remote) -> int {
    for (size_t i = 0; i < cfg_.tunnels.size(); i++)
      if (cfg_.tunnels[i].local == local && cfg_.tunnels[i].remote == remote) return static_cast<int>(i);
    return -1;
  };
  auto is_local = [&](uint32_t a) {
    for (const auto& t : cfg_.tunnels)
      if (t.local == a) return true;
    return false;
  };
  try {
    if (auto* sa = std::get_if<xfrm::SaInfo>(&ev)) {
      xfrm::Dir dir = xfrm::direction_of(sa->saddr, sa->daddr, is_local);
      int t = dir == xfrm::Dir::kOut ? find_tunnel(sa->saddr, sa->daddr)
              : dir == xfrm::Dir::kIn ? find_tunnel(sa->daddr, sa->saddr)
                                      : -1;
      if (t < 0) {
        xfrm_ignored_++;
        fmt::print(stderr, "espgw: xfrm: no tunnel for {} -> {}: {}\n", format_ipv4(sa->saddr), format_ipv4(sa->daddr),
                   xfrm::to_string(ev));
        return;
      }
      SaParams q;
      q.direction = dir == xfrm::Dir::kOut ? SaDirection::kOutbound : SaDirection::kInbound;
      q.spi = sa->spi;
      q.tunnel = static_cast<uint16_t>(t);
      q.algo = sa->key_len() == 16 ? SaAlgo::kAes128Gcm : SaAlgo::kAes256Gcm;
      q.keymat = sa->keymat;
      q.esn = sa->esn;
      q.replay_window = sa->replay_window == 0 ? 0 : std::clamp<uint32_t>(sa->replay_window, 32, 4096);
      if (sa->encap_sport || sa->encap_dport) {
        q.udp_encap = true;
        q.udp_sport = sa->encap_sport;  // the kernel template: sender port, receiver port
        q.udp_dport = sa->encap_dport;
      }
      q.soft = {sa->soft_bytes, sa->soft_packets, sa->soft_add_seconds};
      q.hard = {sa->hard_bytes, sa->hard_packets, sa->hard_add_seconds};
      sas_->add(q, sas_->contains(q.direction, q.spi, q.tunnel));  // UPDSA or a re-dump replaces
      xfrm_mirrored_++;
    } else if (auto* del = std::get_if<xfrm::SaDelete>(&ev)) {
      SaDirection d = is_local(del->key.daddr) ? SaDirection::kInbound : SaDirection::kOutbound;
      sas_->remove(d, del->key.spi, std::nullopt, "kernel");
    } else if (auto* ex = std::get_if<xfrm::SaExpire>(&ev)) {
      if (ex->hard) {
        SaDirection d = is_local(ex->key.daddr) ? SaDirection::kInbound : SaDirection::kOutbound;
        sas_->remove(d, ex->key.spi, std::nullopt, "kernel-hard-expire");
      }
    } else if (std::holds_alternative<xfrm::Unsupported>(ev) || std::holds_alternative<xfrm::Malformed>(ev)) {
      xfrm_ignored_++;
      fmt::print(stderr, "espgw: xfrm: ignored: {}\n", xfrm::to_string(ev));
    }
  } catch (const std::exception& e) {
    xfrm_ignored_++;
    fmt::print(stderr, "espgw: xfrm: {}: {}\n", xfrm::to_string(ev), e.what());
  }
}

// ---------------------------------------------------------------- telemetry

namespace {
// Telemetry callbacks take no user pointer: one gateway per process.
std::shared_ptr<Gateway::Snapshot> g_snapshot;

// DPDK 22.11 telemetry: dict keys may hold only [A-Za-z0-9_/], and only
// arrays nest. List commands return one readable line per item; the
// singular commands (/espgw/tunnel,NAME and /espgw/sa,DIR:SPI) return one
// item as a dict with nested objects flattened to a_b keys.
std::string tel_key(std::string k) {
  for (char& c : k)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '/') c = '_';
  return k;
}

void put_scalar(rte_tel_data* d, const std::string& key, const json& v) {
  std::string k = tel_key(key);
  if (v.is_boolean()) rte_tel_data_add_dict_string(d, k.c_str(), v.get<bool>() ? "true" : "false");
  else if (v.is_number_unsigned()) rte_tel_data_add_dict_u64(d, k.c_str(), v.get<uint64_t>());
  else if (v.is_number_integer()) rte_tel_data_add_dict_int(d, k.c_str(), static_cast<int>(v.get<int64_t>()));
  else if (v.is_string()) rte_tel_data_add_dict_string(d, k.c_str(), v.get<std::string>().c_str());
  else if (v.is_null()) rte_tel_data_add_dict_string(d, k.c_str(), "-");
  else rte_tel_data_add_dict_string(d, k.c_str(), v.dump().c_str());
}

void flatten(const json& obj, const std::string& prefix, rte_tel_data* d) {
  for (auto& [k, v] : obj.items()) {
    std::string key = prefix.empty() ? k : prefix + "_" + k;
    if (v.is_object()) flatten(v, key, d);
    else put_scalar(d, key, v);
  }
}

std::string tunnel_line(const json& t) {
  return fmt::format("{} {} spi={} out={}/{} in={}/{} asymmetric={}", t["name"].get<std::string>(),
                     t["up"].get<bool>() ? "up" : "down", t.value("out_spi", std::string("-")),
                     t["out"]["packets"].get<uint64_t>(), t["out"]["bytes"].get<uint64_t>(),
                     t["in"]["packets"].get<uint64_t>(), t["in"]["bytes"].get<uint64_t>(),
                     t["asymmetric"].get<uint64_t>());
}

std::string sa_id(const json& sa) { return sa["direction"].get<std::string>() + ":" + sa["spi"].get<std::string>(); }

std::string sa_line(const json& sa) {
  return fmt::format("{} tunnel={} {} key={} packets={} bytes={}{}", sa_id(sa), sa["tunnel"].get<std::string>(),
                     sa["algo"].get<std::string>(), sa["key_fingerprint"].get<std::string>(),
                     sa["packets"].get<uint64_t>(), sa["bytes"].get<uint64_t>(),
                     sa.value("current", false) ? " current" : "");
}

std::string route_line(const json& r) {
  std::string via;
  for (const auto& h : r["via"])
    via += fmt::format("{}{}/{}", via.empty() ? "" : ",", h["tunnel"].get<std::string>(), h["priority"].get<uint32_t>());
  return fmt::format("{} active={} via={}", r["prefix"].get<std::string>(),
                     r["active"].is_null() ? "-" : r["active"].get<std::string>(), via);
}

template <class F>
int with_snapshot(F f) {
  auto snap = g_snapshot;
  if (!snap) return -ENOENT;
  std::lock_guard<std::mutex> lock(snap->mu);
  if (!snap->live) return -ENOENT;
  return f(*snap);
}

template <class Line>
int tel_lines(const json& list, rte_tel_data* d, Line line) {
  rte_tel_data_start_array(d, RTE_TEL_STRING_VAL);
  for (const auto& item : list) rte_tel_data_add_array_string(d, line(item).c_str());
  return 0;
}

int tel_tunnels(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) { return tel_lines(s.stats["tunnels"], d, tunnel_line); });
}
int tel_sas(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) { return tel_lines(s.sas, d, sa_line); });
}
int tel_routes(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) { return tel_lines(s.routes, d, route_line); });
}
int tel_tunnel(const char*, const char* params, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) {
    for (const auto& t : s.stats["tunnels"])
      if (params && t["name"] == params) {
        rte_tel_data_start_dict(d);
        flatten(t, "", d);
        return 0;
      }
    return -EINVAL;
  });
}
int tel_sa(const char*, const char* params, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) {
    for (const auto& sa : s.sas)
      if (params && sa_id(sa) == params) {
        rte_tel_data_start_dict(d);
        flatten(sa, "", d);
        return 0;
      }
    return -EINVAL;
  });
}
int tel_stats(const char*, const char*, rte_tel_data* d) {
  return with_snapshot([&](Gateway::Snapshot& s) {
    rte_tel_data_start_dict(d);
    json flat = s.stats;
    json ports = flat["ports"];
    for (const char* k : {"tunnels", "sas", "ports", "ok"}) flat.erase(k);
    flatten(flat, "", d);
    for (const auto& p : ports) flatten(json{{"rx", p["rx"]}, {"tx", p["tx"]}}, "port_" + p["name"].get<std::string>(), d);
    return 0;
  });
}
}  // namespace

void Gateway::register_telemetry() {
  snapshot_ = std::make_shared<Snapshot>();
  g_snapshot = snapshot_;
  publish_snapshot();
  rte_telemetry_register_cmd("/espgw/tunnels", tel_tunnels, "espgw tunnels: state, active SPI, counters");
  rte_telemetry_register_cmd("/espgw/sas", tel_sas, "espgw SAs (key fingerprints only, never keys)");
  rte_telemetry_register_cmd("/espgw/routes", tel_routes, "espgw routes: prefix -> active tunnel, next hops");
  rte_telemetry_register_cmd("/espgw/stats", tel_stats, "espgw counters: ports, drops by reason, exception path");
  rte_telemetry_register_cmd("/espgw/tunnel", tel_tunnel, "one tunnel's details. Parameters: tunnel name");
  rte_telemetry_register_cmd("/espgw/sa", tel_sa, "one SA's details. Parameters: in:0xSPI or out:0xSPI");
}

void Gateway::publish_snapshot() {
  if (!snapshot_) return;
  json stats = stats_json();
  json sas = stats["sas"];
  json routes = handle({{"op", "routes"}})["routes"];
  std::lock_guard<std::mutex> lock(snapshot_->mu);
  snapshot_->stats = std::move(stats);
  snapshot_->sas = std::move(sas);
  snapshot_->routes = std::move(routes);
  snapshot_->live = true;
}

void Gateway::stop() {
  if (!workers_running_) return;
  dp_->stop.store(true);
  rte_eal_mp_wait_lcore();
  dp::drop_all_held(*dp_);
  workers_running_ = false;
  for (uint16_t w = 0; w < dp_->nb_workers; w++) dp::worker_release_fragments(*dp_, w);
}

unsigned Gateway::mbufs_in_use() const {
  return dp_ && dp_->pool ? rte_mempool_in_use_count(dp_->pool) : 0;
}

void Gateway::refresh_tunnel_state(uint16_t t, bool has_sa) {
  bool up = tunnels_[t].admin_up && has_sa;
  if (routes_->tunnel_up(t) == up) return;
  routes_->set_tunnel_up(t, up);
  // When this returns, every worker has finished the burst it was in: no
  // packet routed by the old state is still on its way.
  rte_rcu_qsbr_synchronize(dp_->qsbr, RTE_QSBR_THRID_INVALID);
  emit({{"event", "tunnel-state"}, {"tunnel", tunnels_[t].name}, {"up", up}});
}

void Gateway::set_tunnel_admin(const std::string& name, bool up) {
  uint16_t t = tunnel_index(name);
  tunnels_[t].admin_up = up;
  refresh_tunnel_state(t, dp_->tunnels[t].out_sa.load() != nullptr);
}

dp::WorkerCounters Gateway::sum_counters() const {
  dp::WorkerCounters s;
  memset(static_cast<void*>(&s), 0, sizeof(s));
  for (uint16_t w = 0; w < dp_->nb_workers; w++) {
    const dp::WorkerCounters& c = *dp_->counters[w];
    for (int p = 0; p < dp::kMaxPorts; p++) {
      add(s.port[p].rx, c.port[p].rx);
      add(s.port[p].tx, c.port[p].tx);
    }
    for (int t = 0; t < dp::kMaxTunnels; t++) {
      add(s.tunnel[t].out, c.tunnel[t].out);
      add(s.tunnel[t].in, c.tunnel[t].in);
      s.tunnel[t].asymmetric += c.tunnel[t].asymmetric;
    }
    for (uint32_t i = 0; i < dp::kMaxSas; i++) add(s.sa[i], c.sa[i]);
    for (int r = 0; r < static_cast<int>(dp::DropReason::kCount); r++) s.drop[r] += c.drop[r];
    s.exception_to_host += c.exception_to_host;
    s.exception_from_host += c.exception_from_host;
    s.arp_replies += c.arp_replies;
    s.arp_consumed += c.arp_consumed;
    s.tfc_dummies += c.tfc_dummies;
    s.reassembled += c.reassembled;
    s.reasm_timeouts += c.reasm_timeouts;
    s.generated_dropped += c.generated_dropped;
    s.icmp_sent += c.icmp_sent;
    s.fragments += c.fragments;
    s.mss_clamped += c.mss_clamped;
    s.loops += c.loops;
    s.busy_loops += c.busy_loops;
  }
  return s;
}

std::vector<std::string> Gateway::port_names() const {
  std::vector<std::string> names;
  for (uint16_t p = 0; p < dp_->nb_ports; p++) names.push_back(p < cfg_.ports.size() ? cfg_.ports[p].name : "exception");
  return names;
}

json Gateway::stats_json() const {
  dp::WorkerCounters s = sum_counters();
  json j;
  j["ok"] = true;
  json ports = json::array();
  for (uint16_t p = 0; p < dp_->nb_ports; p++) {
    const char* kind = dp_->ports[p].kind == dp::PortKind::kProtected     ? "protected"
                       : dp_->ports[p].kind == dp::PortKind::kUnprotected ? "unprotected"
                                                                          : "exception";
    std::string name = p < cfg_.ports.size() ? cfg_.ports[p].name : "exception";
    ports.push_back({{"name", name}, {"kind", kind}, {"rx", pbc(s.port[p].rx)}, {"tx", pbc(s.port[p].tx)}});
  }
  j["ports"] = ports;
  json tunnels = json::array();
  for (uint16_t t = 0; t < dp_->nb_tunnels; t++) {
    const dp::OutboundSa* sa = dp_->tunnels[t].out_sa.load();
    json tj = {{"name", tunnels_[t].name},
               {"up", routes_->tunnel_up(t)},
               {"admin_up", tunnels_[t].admin_up},
               {"out", pbc(s.tunnel[t].out)},
               {"in", pbc(s.tunnel[t].in)},
               {"asymmetric", s.tunnel[t].asymmetric}};
    if (sa) tj["out_spi"] = fmt::format("0x{:08x}", sa->spi);
    tunnels.push_back(tj);
  }
  j["tunnels"] = tunnels;
  json sas = sas_->list(s);
  j["sas"] = sas;
  json drops = json::object();
  uint64_t total_drops = 0;
  for (int r = 0; r < static_cast<int>(dp::DropReason::kCount); r++) {
    drops[dp::drop_reason_name(static_cast<dp::DropReason>(r))] = s.drop[r];
    total_drops += s.drop[r];
  }
  j["drops"] = drops;
  j["drops_total"] = total_drops;
  j["exception"] = {{"to_host", s.exception_to_host}, {"from_host", s.exception_from_host}};
  j["arp_replies"] = s.arp_replies;
  j["icmp_sent"] = s.icmp_sent;
  j["fragments"] = s.fragments;
  j["mss_clamped"] = s.mss_clamped;
  j["workers"] = dp_->nb_workers;
  if (xfrm_) j["xfrm"] = {{"mirrored", xfrm_mirrored_}, {"ignored", xfrm_ignored_}};
  j["mbufs"] = {{"in_use", mbufs_in_use()}, {"in_use_at_start", mbufs_at_start_}};
  j["accounting"] = balance_json(*dp_, port_names());
  j["tfc_dummies"] = s.tfc_dummies;
  j["reassembly"] = {{"reassembled", s.reassembled}, {"timeouts", s.reasm_timeouts},
                     {"failed", s.drop[static_cast<int>(dp::DropReason::kReasmFailed)]}};
  j["arp_consumed"] = s.arp_consumed;
  j["generated_dropped"] = s.generated_dropped;
  return j;
}

std::string Gateway::format_stats() const {
  json j = stats_json();
  std::string out;
  out += fmt::format("{:<12} {:>7} {:>14} {:>14} {:>14} {:>14} {:>10}\n", "tunnel", "state", "out pkts", "out bytes",
                     "in pkts", "in bytes", "asymmetric");
  for (const auto& t : j["tunnels"])
    out += fmt::format("{:<12} {:>7} {:>14} {:>14} {:>14} {:>14} {:>10}\n", t["name"].get<std::string>(),
                       t["up"].get<bool>() ? "up" : "down", t["out"]["packets"].get<uint64_t>(),
                       t["out"]["bytes"].get<uint64_t>(), t["in"]["packets"].get<uint64_t>(),
                       t["in"]["bytes"].get<uint64_t>(), t["asymmetric"].get<uint64_t>());
  out += fmt::format("{:<12} {:>14} {:>14} {:>14} {:>14}\n", "port", "rx pkts", "rx bytes", "tx pkts", "tx bytes");
  for (const auto& p : j["ports"])
    out += fmt::format("{:<12} {:>14} {:>14} {:>14} {:>14}\n", p["name"].get<std::string>(),
                       p["rx"]["packets"].get<uint64_t>(), p["rx"]["bytes"].get<uint64_t>(),
                       p["tx"]["packets"].get<uint64_t>(), p["tx"]["bytes"].get<uint64_t>());
  std::string drops;
  for (auto& [k, v] : j["drops"].items())
    if (v.get<uint64_t>()) drops += fmt::format(" {}={}", k, v.get<uint64_t>());
  out += "drops:" + (drops.empty() ? std::string(" none") : drops) + "\n";
  out += balance_text(j["accounting"]);
  return out;
}

namespace {
uint64_t u64_field(const json& j, const char* name, uint64_t dflt, uint64_t max = ~uint64_t{0}) {
  if (!j.contains(name)) return dflt;
  const json& v = j[name];
  uint64_t x;
  if (v.is_number_unsigned()) {
    x = v.get<uint64_t>();
  } else if (v.is_string()) {  // "0x1001" for SPIs, as people write them
    const std::string s = v.get<std::string>();
    size_t used = 0;
    try {
      x = std::stoull(s, &used, 0);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != s.size()) throw std::runtime_error(fmt::format("field '{}': '{}' is not a number", name, s));
  } else {
    throw std::runtime_error(fmt::format("field '{}' must be a non-negative integer", name));
  }
  if (x > max) throw std::runtime_error(fmt::format("field '{}': {} is larger than {}", name, x, max));
  return x;
}

bool bool_field(const json& j, const char* name, bool dflt) {
  if (!j.contains(name)) return dflt;
  if (!j[name].is_boolean()) throw std::runtime_error(fmt::format("field '{}' must be true or false", name));
  return j[name].get<bool>();
}

std::string str_field(const json& j, const char* name) {
  if (!j.contains(name) || !j[name].is_string())
    throw std::runtime_error(fmt::format("missing field '{}' (a string)", name));
  return j[name].get<std::string>();
}

std::vector<uint8_t> hex_field(const json& j, const char* name) {
  std::string s = str_field(j, name);
  if (s.rfind("0x", 0) == 0 || s.rfind("0X", 0) == 0) s = s.substr(2);
  if (s.size() % 2) throw std::runtime_error(fmt::format("field '{}': odd number of hex digits", name));
  std::vector<uint8_t> out;
  for (size_t i = 0; i < s.size(); i += 2) {
    auto nib = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      throw std::runtime_error(fmt::format("field '{}': not hex", name));
    };
    out.push_back(static_cast<uint8_t>(nib(s[i]) << 4 | nib(s[i + 1])));
  }
  return out;
}

SaDirection dir_field(const json& j) {
  std::string d = str_field(j, "direction");
  if (d == "in" || d == "inbound") return SaDirection::kInbound;
  if (d == "out" || d == "outbound") return SaDirection::kOutbound;
  throw std::runtime_error("field 'direction': '" + d + "' is neither in nor out");
}

std::vector<Ipv4Prefix> prefixes_field(const json& j, const char* name) {
  std::vector<Ipv4Prefix> out;
  if (!j.contains(name)) return out;
  if (!j[name].is_array()) throw std::runtime_error(fmt::format("field '{}' must be a list of prefixes", name));
  for (const auto& v : j[name]) {
    if (!v.is_string()) throw std::runtime_error(fmt::format("field '{}': prefixes are strings", name));
    lpm::Prefix4 p = lpm::parse_prefix4(v.get<std::string>());
    out.push_back({p.addr, p.len});
  }
  return out;
}

SaLifetime lifetime_field(const json& j, const char* kind) {
  SaLifetime l;
  if (!j.contains("lifetime")) return l;
  const json& lt = j["lifetime"];
  if (!lt.is_object()) throw std::runtime_error("field 'lifetime' must be an object {soft: {...}, hard: {...}}");
  if (!lt.contains(kind)) return l;
  const json& k = lt[kind];
  if (!k.is_object()) throw std::runtime_error(fmt::format("field 'lifetime.{}' must be an object", kind));
  for (auto& [key, v] : k.items())
    if (key != "bytes" && key != "packets" && key != "seconds")
      throw std::runtime_error(fmt::format("field 'lifetime.{}': unknown key '{}'", kind, key));
  l.bytes = u64_field(k, "bytes", 0);
  l.packets = u64_field(k, "packets", 0);
  l.seconds = u64_field(k, "seconds", 0);
  return l;
}

const std::set<std::string> kSaFields = {"op",   "id",         "direction",     "spi",  "tunnel", "algo",
                                         "key",  "esn",        "replay_window", "seq",  "encap",  "lifetime",
                                         "local_selectors", "remote_selectors"};
}  // namespace

SaParams Gateway::sa_params_from_json(const json& req) const {
  for (auto& [k, v] : req.items())
    if (!kSaFields.count(k)) throw std::runtime_error("unknown field '" + k + "'");
  SaParams p;
  p.direction = dir_field(req);
  if (!req.contains("spi")) throw std::runtime_error("missing field 'spi'");
  p.spi = static_cast<uint32_t>(u64_field(req, "spi", 0, 0xFFFFFFFFu));
  p.tunnel = tunnel_index(str_field(req, "tunnel"));
  std::string algo = req.contains("algo") ? str_field(req, "algo") : "aes128-gcm";
  if (algo == "aes128-gcm" || algo == "aes-128-gcm") p.algo = SaAlgo::kAes128Gcm;
  else if (algo == "aes256-gcm" || algo == "aes-256-gcm") p.algo = SaAlgo::kAes256Gcm;
  else throw std::runtime_error("field 'algo': '" + algo + "' is not aes128-gcm or aes256-gcm");
  p.keymat = hex_field(req, "key");
  p.esn = bool_field(req, "esn", false);
  p.replay_window = static_cast<uint32_t>(u64_field(req, "replay_window", 1024, 0xFFFFFFFFu));
  p.initial_seq = u64_field(req, "seq", 1);
  if (req.contains("encap")) {
    const json& e = req["encap"];
    if (!e.is_object()) throw std::runtime_error("field 'encap' must be an object {sport, dport}");
    p.udp_encap = true;
    p.udp_sport = static_cast<uint16_t>(u64_field(e, "sport", 4500, 65535));
    p.udp_dport = static_cast<uint16_t>(u64_field(e, "dport", 4500, 65535));
  }
  p.soft = lifetime_field(req, "soft");
  p.hard = lifetime_field(req, "hard");
  p.local_selectors = prefixes_field(req, "local_selectors");
  p.remote_selectors = prefixes_field(req, "remote_selectors");
  return p;
}

void Gateway::emit(const json& event) {
  events_emitted_++;
  if (server_) server_->broadcast_event(event);
}

json Gateway::handle(const json& req) {
  const std::string op = str_field(req, "op");
  if (op == "ping") return {{"ok", true}};
  if (op == "stats") return stats_json();
  if (op == "tunnel-down" || op == "tunnel-up") {
    set_tunnel_admin(str_field(req, "tunnel"), op == "tunnel-up");
    return {{"ok", true}};
  }
  if (op == "tunnels") {
    json j = stats_json();
    return {{"ok", true}, {"tunnels", j["tunnels"]}};
  }
  if (op == "add-sa" || op == "replace-sa") {
    sas_->add(sa_params_from_json(req), op == "replace-sa");
    return {{"ok", true}};
  }
  if (op == "delete-sa") {
    for (auto& [k, v] : req.items())
      if (k != "op" && k != "id" && k != "direction" && k != "spi" && k != "tunnel")
        throw std::runtime_error("unknown field '" + k + "'");
    if (!req.contains("spi")) throw std::runtime_error("missing field 'spi'");
    std::optional<uint16_t> t;
    if (req.contains("tunnel")) t = tunnel_index(str_field(req, "tunnel"));
    sas_->remove(dir_field(req), static_cast<uint32_t>(u64_field(req, "spi", 0, 0xFFFFFFFFu)), t);
    return {{"ok", true}};
  }
  if (op == "list-sas" || op == "sas") return {{"ok", true}, {"sas", sas_->list(sum_counters())}};
  if (op == "add-route" || op == "replace-route") {
    lpm::Prefix4 prefix = lpm::parse_prefix4(str_field(req, "prefix"));
    if (!req.contains("via") || !req["via"].is_array())
      throw std::runtime_error("missing field 'via' (a list of {tunnel, priority})");
    std::vector<lpm::NextHop> hops;
    for (const auto& h : req["via"]) {
      if (!h.is_object()) throw std::runtime_error("field 'via': entries are {tunnel, priority}");
      hops.push_back({tunnel_index(str_field(h, "tunnel")), static_cast<uint32_t>(u64_field(h, "priority", 0, 65535))});
    }
    if (op == "add-route") routes_->add_route(prefix, hops);
    else routes_->replace_route(prefix, hops);
    rte_rcu_qsbr_synchronize(dp_->qsbr, RTE_QSBR_THRID_INVALID);
    return {{"ok", true}};
  }
  if (op == "delete-route") {
    routes_->delete_route(lpm::parse_prefix4(str_field(req, "prefix")));
    rte_rcu_qsbr_synchronize(dp_->qsbr, RTE_QSBR_THRID_INVALID);
    return {{"ok", true}};
  }
  if (op == "neighbors") {
    json list = json::array();
    for (const auto& n : dp::list_neighbors(*dp_)) {
      std::string port = n.port < cfg_.ports.size() ? cfg_.ports[n.port].name : "exception";
      json mac = nullptr;
      if (n.mac) mac = fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", (*n.mac)[0], (*n.mac)[1], (*n.mac)[2],
                                   (*n.mac)[3], (*n.mac)[4], (*n.mac)[5]);
      list.push_back({{"port", port}, {"ip", n.ip ? json(format_ipv4(n.ip)) : json(nullptr)}, {"mac", mac},
                      {"state", n.state}, {"static", n.is_static}, {"gateway", n.is_gateway},
                      {"tunnel_next_hop", n.is_tunnel_next_hop},
                      {"age_s", n.age_s < 0 ? json(nullptr) : json(n.age_s)}});
    }
    return {{"ok", true}, {"neighbors", list}};
  }
  if (op == "routes") {
    json routes = json::array();
    for (const auto& r : routes_->list()) {
      json hops = json::array();
      for (const auto& h : r.hops) hops.push_back({{"tunnel", tunnels_[h.tunnel].name}, {"priority", h.priority}});
      routes.push_back({{"prefix", lpm::to_string(r.prefix)},
                        {"via", hops},
                        {"active", r.active == lpm::kNoRoute ? json(nullptr) : json(tunnels_[r.active].name)}});
    }
    return {{"ok", true}, {"routes", routes}};
  }
  throw std::runtime_error("unknown operation '" + op + "'");
}

}  // namespace espgw::control
