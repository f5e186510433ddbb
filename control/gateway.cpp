#include "control/gateway.h"

#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pdump.h>
#include <rte_telemetry.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <regex>
#include <unordered_map>
#include <stdexcept>

#include "control/control_ops.h"
#include "control/control_server.h"
#include "control/json_codec.h"
#include "control/telemetry.h"
#include "control/xfrm_mirror.h"
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

}  // namespace

Gateway::Gateway(GatewayConfig cfg, std::vector<std::string> extra_eal)
    : cfg_(std::move(cfg)), extra_eal_(std::move(extra_eal)) {}

Gateway::~Gateway() {
  stop();
  telemetry_.reset();
  server_.reset();
  codec_.reset();
  xfrm_.reset();
  sas_.reset();  // unpublishes and wipes keys (AeadContext destructors)
  ops_.reset();
  routes_.reset();
  if (dp_) {
    for (uint16_t p = 0; p < dp_->nb_ports; p++) {
      rte_eth_dev_stop(dp_->ports[p].port_id);
      rte_eth_dev_close(dp_->ports[p].port_id);
    }
    delete dp_->inbound;
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
  d.park_floor = cfg_.mbufs / 4;  // fragments and ARP hold queues never take the last quarter

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
    p.addr_filter = 0;
    if (w.pc) {
      if (w.pc->addresses.size() > dp::kMaxPortAddrs)
        throw std::runtime_error(fmt::format("{}: at most {} addresses per port", what, dp::kMaxPortAddrs));
      for (uint32_t a : w.pc->addresses) dp::port_add_addr(p, a);
    }
    if (w.pc) init_neighbors(d.neighbors[d.nb_ports], *w.pc);
    if (w.kind == dp::PortKind::kProtected && d.protected_port == dp::kNoPort) d.protected_port = d.nb_ports;
    if (w.kind == dp::PortKind::kException) d.exception_port = d.nb_ports;
    d.nb_ports++;
  }
  if (d.protected_port == dp::kNoPort) throw std::runtime_error("ports: no protected port");
}

uint16_t Gateway::tunnel_index(const std::string& name) const {
  for (size_t i = 0; i < cfg_.tunnels.size(); i++)
    if (cfg_.tunnels[i].name == name) return static_cast<uint16_t>(i);
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

  try {
    d.inbound = new dp::InboundSaTable(dp::kMaxSas, static_cast<int>(rte_socket_id()));
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("inbound SA table: out of DPDK memory (raise eal -m)");
  }

  // Tunnels.
  if (cfg_.tunnels.size() > dp::kMaxTunnels) throw std::runtime_error("too many tunnels");
  auto port_index = [&](const std::string& name) -> uint16_t {
    for (size_t i = 0; i < cfg_.ports.size(); i++)
      if (cfg_.ports[i].name == name) return static_cast<uint16_t>(i);
    throw std::runtime_error("unknown port '" + name + "'");
  };
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
  }
  d.nb_tunnels = static_cast<uint16_t>(cfg_.tunnels.size());

  // The route table exists before any SA, so tunnel-state callbacks can run.
  lpm::RouteTableConfig rc;
  // Room for the configured routes (a full table: 1M) and as many again
  // added at run time; at least 64 Ki. The tbl8 pool follows (max_routes / 16,
  // clamped to 256..65536 groups of 1 KiB: lpm/route_table.h).
  rc.max_routes = static_cast<uint32_t>(std::max<size_t>(1 << 16, 2 * cfg_.routes.size()));
  rc.max_tunnels = dp::kMaxTunnels;
  rc.qsbr = d.qsbr;
  rc.name = "espgw";
  routes_ = std::make_unique<lpm::RouteTable>(rc);
  for (uint16_t t = 0; t < d.nb_tunnels; t++) routes_->add_tunnel(t, false);
  {
    std::vector<std::string> names, ports;
    std::vector<bool> admin;
    for (const auto& tc : cfg_.tunnels) {
      names.push_back(tc.name);
      admin.push_back(tc.up);
    }
    for (const auto& pc : cfg_.ports) ports.push_back(pc.name);
    ops_ = std::make_unique<ControlOps>(d, *routes_, std::move(names), std::move(admin), std::move(ports),
                                        [this](const json& ev) { emit(ev); });
    ops_->set_stats_extras([this](json& j) { add_stats_extras(j); });
  }
  sas_ = std::make_unique<SaDatabase>(
      d, cfg_.tunnels, [this](const json& ev) { emit(ev); },
      [this](uint16_t t, bool has_sa) { refresh_tunnel_state(t, has_sa); });
  ops_->attach(*sas_);
  // SAs: the config file's static ones pass the same validator as every
  // other source (the loader ran it too, so this fails only on state: a
  // full table).
  for (size_t i = 0; i < cfg_.sas.size(); i++) {
    const SaConfig& sc = cfg_.sas[i];
    try {
      sas_->add(validate_sa_spec(sa_spec_from_config(sc), sas_->tunnels()));
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: sas[{}]: {}", sc.position, i, e.what()));
    }
  }

  // Routes: a tunnel is up while admin-up with an outbound SA (set above
  // through refresh_tunnel_state as SAs were added).
  std::unordered_map<std::string, uint16_t> tunnel_ids;  // 10,000 tunnels x 1M routes: no linear scan
  for (size_t i = 0; i < cfg_.tunnels.size(); i++) tunnel_ids.emplace(cfg_.tunnels[i].name, static_cast<uint16_t>(i));
  for (size_t i = 0; i < cfg_.routes.size(); i++) {
    const RouteConfig& r = cfg_.routes[i];
    std::vector<lpm::NextHop> hops;
    for (const auto& h : r.via) {
      auto it = tunnel_ids.find(h.tunnel);
      hops.push_back({it != tunnel_ids.end() ? it->second : tunnel_index(h.tunnel), h.priority});
    }
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

void Gateway::start(bool launch) {
  dp_ = std::make_unique<dp::Dataplane>();
  init_eal();
  init_ports();
  init_tables();
  if (!cfg_.control.socket_path.empty()) {
    codec_ = std::make_unique<JsonCodec>(*ops_);
    server_ = std::make_unique<ControlServer>(cfg_.control.socket_path, cfg_.control.socket_group,
                                              [this](WipingString& line) { return codec_->handle_line(line); });
  }
  telemetry_ = std::make_unique<Telemetry>();
  publish_snapshot();
  // dpdk-dumpcap / dpdk-pdump attach as secondary processes; that needs the
  // shared configuration (no --no-shconf / --in-memory) and, in DPDK 22.11,
  // hugepage memory the secondary can map.
  if (rte_pdump_init() != 0)
    fmt::print(stderr, "espgw: pdump not available ({}): dpdk-dumpcap cannot capture\n", rte_strerror(rte_errno));
  if (cfg_.xfrm.enabled) start_xfrm_mirror();
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  if (launch)
    launch_workers();
  else
    mbufs_at_start_ = mbufs_in_use();
}

void Gateway::run() {
  uint64_t hz = rte_get_tsc_hz();
  uint64_t next_stats = rte_rdtsc() + cfg_.stats_interval_s * hz;
  uint64_t next_housekeeping = 0, next_snapshot = 0;
  while (!g_stop.load()) {
    if (server_)
      server_->poll(5);
    else
      rte_delay_us_sleep(5000);
    if (xfrm_) xfrm_->poll();
    uint64_t now = rte_rdtsc();
    if (now >= next_housekeeping) {  // 20 times a second
      ops_->check_lifetimes();
      next_housekeeping = now + hz / 20;
    }
    if (now >= next_snapshot) {
      // The telemetry snapshot holds every SA and route as JSON: with 10,000
      // tunnels or a full table (1M routes) one takes far longer than 50 ms.
      // Spend at most ~5% of the control thread on it: 20 times a second
      // while it is cheap, less often as it grows.
      publish_snapshot();
      const uint64_t took = rte_rdtsc() - now;
      next_snapshot = now + std::max<uint64_t>(hz / 20, 20 * took);
    }
    if (cfg_.stats_interval_s && now >= next_stats) {
      fmt::print("{}", format_stats());
      std::fflush(stdout);
      next_stats = now + cfg_.stats_interval_s * hz;
    }
  }
}

void Gateway::start_xfrm_mirror() {
  std::vector<XfrmMirror::TunnelEnds> ends;
  for (const auto& tc : cfg_.tunnels) ends.push_back({tc.name, tc.local, tc.remote});
  xfrm_ = std::make_unique<XfrmMirror>(*ops_, std::move(ends));
  fmt::print("espgw: xfrm mirror: following the kernel's SAs ({} mirrored at start)\n", xfrm_->counters().mirrored);
}

void Gateway::add_stats_extras(json& j) const {
  if (xfrm_) {
    const auto& c = xfrm_->counters();
    j["xfrm"] = {{"mirrored", c.mirrored},
                 {"ignored", c.ignored},
                 {"removed", c.removed},
                 {"resyncs", c.resyncs},
                 {"overruns", xfrm_->stats().overruns},
                 {"flushes", xfrm_->stats().flushes}};
  }
  j["mbufs"] = {{"in_use", mbufs_in_use()}, {"in_use_at_start", mbufs_at_start_}};
  if (routes_) {  // sizes only: `routes` lists them (a full table is ~1M lines)
    const auto rs = routes_->stats();
    j["route_table"] = {{"routes", rs.routes},           {"installed", rs.installed},
                        {"tbl8_groups", rs.tbl8_groups}, {"tbl8_used", rs.tbl8_used},
                        {"fib_bytes", rs.fib_bytes}};
  }
}

void Gateway::publish_snapshot() {
  if (!telemetry_) return;
  json stats = ops_->stats();
  json sas = stats["sas"];
  // /espgw/routes shows one line per route, and DPDK's telemetry holds at
  // most RTE_TEL_MAX_ARRAY_ENTRIES (512) of them: keep no more. A full table
  // (1M routes) as JSON would be ~1 GB, rebuilt for nothing.
  telemetry_->publish(std::move(stats), std::move(sas), ops_->routes(RTE_TEL_MAX_ARRAY_ENTRIES));
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

void Gateway::refresh_tunnel_state(uint16_t t, bool has_sa) { ops_->tunnel_sa_changed(t, has_sa); }

std::string Gateway::format_stats() const { return ops_->format_stats(); }

void Gateway::emit(const json& event) {
  events_emitted_++;
  if (server_) server_->broadcast_event(event);
}

}  // namespace espgw::control
