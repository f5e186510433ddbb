#include "control/control_ops.h"

#include "control/accounting.h"

#include "dataplane/neighbor_info.h"
#include "dataplane/rcu_sync.h"

#include <fmt/format.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace espgw::control {
namespace dp = espgw::dataplane;
using nlohmann::json;

namespace {
json pbc(const dp::PacketByteCount& c) { return {{"packets", c.packets}, {"bytes", c.bytes}}; }

void add(dp::PacketByteCount& a, const dp::PacketByteCount& b) {
  a.packets += b.packets;
  a.bytes += b.bytes;
}
}  // namespace

ControlOps::ControlOps(dp::Dataplane& d, lpm::RouteTable& routes, std::vector<std::string> tunnel_names,
                       std::vector<bool> admin_up, std::vector<std::string> port_names, EventSink emit)
    : dp_(d), routes_(routes), port_names_(std::move(port_names)), emit_(std::move(emit)) {
  for (size_t i = 0; i < tunnel_names.size(); i++)
    tunnels_.push_back({std::move(tunnel_names[i]), i < admin_up.size() ? bool(admin_up[i]) : true});
}

SaDatabase& ControlOps::sas() const {
  if (!sas_) throw std::logic_error("control operations: no SA database attached");
  return *sas_;
}

void ControlOps::synchronize() const { dp::rcu_synchronize(dp_.qsbr); }

// ------------------------------------------------------------------ SAs
// Every runtime SA enters through one of these four: the spec is validated
// by the same validator the config file uses, then the database applies its
// identity rules. Nothing else builds SaParams at run time.

// An installed inbound SA consumes the reservation of its SPI at its address
// (whoever asked for it: the SPI is the SA's now).
void ControlOps::add_sa(const SaSpec& spec, SaOrigin origin) {
  SaParams p = validate_sa_spec(spec, sas().tunnels());
  p.origin = origin;
  sas().add(p);
  if (p.direction == SaDirection::kInbound) spis_.release(p.local_addr, p.spi);
}

void ControlOps::replace_sa(const SaSpec& spec, SaOrigin origin) {
  SaParams p = validate_sa_spec(spec, sas().tunnels());
  p.origin = origin;
  sas().reconcile(p);  // keeps next_seq, the replay window and the counters
  if (p.direction == SaDirection::kInbound) spis_.release(p.local_addr, p.spi);
}

void ControlOps::update_sa(const SaUpdate& update) {
  validate_sa_update(update, sas().tunnels());
  sas().update(update);
}

SaRef ControlOps::ref_of(const SaName& n) const {
  SaRef ref{n.direction, n.spi, std::nullopt, n.dst};
  if (n.tunnel) ref.tunnel = tunnel_index(*n.tunnel);
  return ref;
}

void ControlOps::delete_sa(SaDirection dir, uint32_t spi, const std::optional<std::string>& tunnel,
                           const char* reason) {
  delete_sa(SaName{dir, spi, tunnel, std::nullopt}, reason);
}

bool ControlOps::delete_sa(const SaName& name, const char* reason) {
  const SaRef ref = ref_of(name);
  try {
    sas().remove(ref, reason);
    return false;
  } catch (const SaNotFound&) {
    if (ref.direction != SaDirection::kInbound) throw;
    // Only reserved? The reservation's address: dst, the tunnel's local
    // address, or (neither given) the one address holding it.
    std::vector<uint32_t> dsts;
    if (ref.tunnel) {
      const uint32_t local = sas().tunnels()[*ref.tunnel].local;
      if (ref.destination && *ref.destination != local) throw;
      dsts = {local};
    } else if (ref.destination) {
      dsts = {*ref.destination};
    } else {
      dsts = spis_.destinations_of(ref.spi);
      if (dsts.size() > 1)
        throw SaError(fmt::format("SPI 0x{:08x} is reserved for several addresses: name dst", ref.spi));
    }
    if (dsts.size() != 1 || !spis_.release(dsts[0], ref.spi)) throw;
    return true;
  }
}

json ControlOps::query_sa(const SaName& name) const {
  SaUsage u = sas().query(ref_of(name), sum_counters());
  return {{"direction", u.key.direction == SaDirection::kInbound ? "in" : "out"},
          {"spi", fmt::format("0x{:08x}", u.key.spi)},
          {"tunnel", tunnels_[u.key.tunnel].name},
          {"dst", format_ipv4(u.key.destination)},
          {"packets", u.packets},
          {"bytes", u.bytes},
          {"idle_seconds", u.idle_seconds ? json(*u.idle_seconds) : json(nullptr)}};
}

size_t ControlOps::delete_all_sas(std::optional<SaOrigin> origin, const char* reason) {
  return sas().remove_all(origin, reason);
}

ControlOps::FlushResult ControlOps::flush_sas(std::optional<SaOrigin> origin) {
  FlushResult r;
  r.deleted = sas().remove_all(origin, "flush");
  r.larval = spis_.clear();
  return r;
}

std::vector<SaKey> ControlOps::sa_keys(std::optional<SaOrigin> origin) const { return sas().keys(origin); }

bool ControlOps::has_sa(SaDirection dir, uint32_t spi, uint16_t tunnel) const {
  return sas().contains(dir, spi, tunnel);
}

json ControlOps::list_sas() const { return sas().list(sum_counters()); }

SpiGrant ControlOps::alloc_spi(uint32_t dst, std::optional<uint32_t> src, std::optional<uint32_t> timeout_s) {
  const uint32_t timeout = timeout_s.value_or(kDefaultSpiTimeoutS);
  if (timeout < 1 || timeout > kMaxSpiTimeoutS)
    throw SaError(fmt::format("timeout_s: {} is not in 1..{}", timeout, kMaxSpiTimeoutS));
  bool local = false;
  for (const auto& t : sas().tunnels()) local = local || t.local == dst;
  if (!local) throw SaError(fmt::format("dst: {} is not a local address of any tunnel", format_ipv4(dst)));
  const uint32_t spi =
      spis_.reserve(dst, src.value_or(0), std::chrono::seconds(timeout), SpiAllocator::Clock::now(),
                    [&](uint32_t spi) { return sas().contains_identity(SaDirection::kInbound, spi, dst); });
  return {spi, timeout};
}

json ControlOps::larval() const {
  json out = json::array();
  const auto now = SpiAllocator::Clock::now();
  for (const auto& r : spis_.list()) {
    // Whole seconds left, rounded up: 0 only once it has expired.
    const auto left = std::chrono::ceil<std::chrono::seconds>(r.expires - now).count();
    json j = {{"spi", fmt::format("0x{:08x}", r.spi)}, {"dst", format_ipv4(r.dst)}, {"expires_in_s", left > 0 ? left : 0}};
    if (r.src) j["src"] = format_ipv4(r.src);
    out.push_back(j);
  }
  return out;
}

size_t ControlOps::expire_reservations() { return spis_.expire(SpiAllocator::Clock::now()); }

void ControlOps::check_lifetimes() {
  if (sas_) sas_->check_lifetimes(sum_counters());
  expire_reservations();
}

// -------------------------------------------------------------- tunnels

uint16_t ControlOps::tunnel_index(const std::string& name) const {
  for (size_t i = 0; i < tunnels_.size(); i++)
    if (tunnels_[i].name == name) return static_cast<uint16_t>(i);
  throw std::runtime_error("unknown tunnel '" + name + "'");
}

void ControlOps::tunnel_sa_changed(uint16_t t, bool has_sa) {
  bool oper = tunnels_[t].admin_up && has_sa;
  if (routes_.tunnel_up(t) == oper) return;
  routes_.set_tunnel_up(t, oper);
  // When this returns, every worker has finished the burst it was in: no
  // packet routed by the old state is still on its way.
  synchronize();
  emit_({{"event", "tunnel-state"},
         {"tunnel", tunnels_[t].name},
         {"up", oper},
         {"admin", tunnels_[t].admin_up ? "up" : "down"},
         {"oper", oper ? "up" : "down"}});
}

void ControlOps::set_tunnel_admin(const std::string& name, bool up) {
  uint16_t t = tunnel_index(name);
  tunnels_[t].admin_up = up;
  tunnel_sa_changed(t, dp_.tunnels[t].out_sa.load() != nullptr);
}

json ControlOps::tunnels_json(const dp::WorkerCounters& s) const {
  json tunnels = json::array();
  // The workers count on SAs only; a tunnel's traffic is its SAs' (counters.h).
  const std::vector<SaDatabase::TunnelTraffic> traffic =
      sas_ ? sas_->tunnel_traffic(s) : std::vector<SaDatabase::TunnelTraffic>(dp_.nb_tunnels);
  for (uint16_t t = 0; t < dp_.nb_tunnels; t++) {
    const dp::OutboundSa* sa = dp_.tunnels[t].out_sa.load();
    const bool admin = tunnels_[t].admin_up, oper = routes_.tunnel_up(t);
    json tj = {{"name", tunnels_[t].name},
               {"admin", admin ? "up" : "down"},
               {"oper", oper ? "up" : "down"},
               {"oper_reason", oper ? "up" : !admin ? "admin-down" : "no-outbound-sa"},
               {"up", oper},
               {"admin_up", admin},
               {"out", pbc(traffic[t].out)},
               {"in", pbc(traffic[t].in)},
               {"asymmetric", s.tunnel_asymmetric[t]}};
    if (sa) tj["out_spi"] = fmt::format("0x{:08x}", sa->spi);
    tunnels.push_back(tj);
  }
  return tunnels;
}

json ControlOps::tunnels() const { return tunnels_json(sum_counters()); }

// --------------------------------------------------------------- routes

std::vector<lpm::NextHop> ControlOps::hops_of(const RouteRequest& r) const {
  std::vector<lpm::NextHop> hops;
  for (const auto& h : r.via) hops.push_back({tunnel_index(h.tunnel), h.priority});
  return hops;
}

void ControlOps::add_route(const RouteRequest& r) {
  routes_.add_route(r.prefix, hops_of(r));
  synchronize();
}

void ControlOps::replace_route(const RouteRequest& r) {
  routes_.replace_route(r.prefix, hops_of(r));
  synchronize();
}

void ControlOps::delete_route(const lpm::Prefix4& prefix) {
  routes_.delete_route(prefix);
  synchronize();
}

json ControlOps::routes(size_t limit) const {
  json routes = json::array();
  for (const auto& r : routes_.list()) {
    if (routes.size() >= limit) break;
    json hops = json::array();
    for (const auto& h : r.hops) hops.push_back({{"tunnel", tunnels_[h.tunnel].name}, {"priority", h.priority}});
    routes.push_back({{"prefix", lpm::to_string(r.prefix)},
                      {"via", hops},
                      {"active", r.active == lpm::kNoRoute ? json(nullptr) : json(tunnels_[r.active].name)}});
  }
  return routes;
}

// ----------------------------------------------------------- neighbours

json ControlOps::neighbors() const {
  json list = json::array();
  for (const auto& n : dp::list_neighbors(dp_)) {
    std::string port = n.port < port_names_.size() ? port_names_[n.port] : "exception";
    json mac = nullptr;
    if (n.mac)
      mac = fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", (*n.mac)[0], (*n.mac)[1], (*n.mac)[2], (*n.mac)[3],
                        (*n.mac)[4], (*n.mac)[5]);
    list.push_back({{"port", port},
                    {"ip", n.ip ? json(format_ipv4(n.ip)) : json(nullptr)},
                    {"mac", mac},
                    {"state", n.state},
                    {"static", n.is_static},
                    {"gateway", n.is_gateway},
                    {"tunnel_next_hop", n.is_tunnel_next_hop},
                    {"age_s", n.age_s < 0 ? json(nullptr) : json(n.age_s)}});
  }
  return list;
}

// ------------------------------------------------------------- counters

// WorkerCounters is ~1.2 MB (dataplane/counters.h): too big for a thread's
// stack, and allocating it per call would be an over-aligned malloc that
// glibc does not reuse (see accounting.cpp). One buffer per thread, kept;
// valid until this thread's next call (no caller nests two).
const dp::WorkerCounters& ControlOps::sum_counters() const {
  static thread_local const std::unique_ptr<dp::WorkerCounters> buf = std::make_unique<dp::WorkerCounters>();
  dp::WorkerCounters& s = *buf;
  memset(static_cast<void*>(&s), 0, sizeof(s));
  // Only the tunnels configured and the SA slots ever used: the tables are
  // sized for 16,384 tunnels and 32,768 SAs, and this runs 20 times a second.
  const int nt = static_cast<int>(std::min<size_t>(dp::kMaxTunnels, std::max<size_t>(dp_.nb_tunnels, tunnels_.size())));
  const uint32_t nsa = sas_ ? sas_->slot_limit() : dp::kMaxSas;
  for (uint16_t w = 0; w < dp_.nb_workers; w++) {
    const dp::WorkerCounters& c = *dp_.counters[w];
    for (int p = 0; p < dp::kMaxPorts; p++) {
      add(s.port[p].rx, c.port[p].rx);
      add(s.port[p].tx, c.port[p].tx);
    }
    for (int t = 0; t < nt; t++) s.tunnel_asymmetric[t] += c.tunnel_asymmetric[t];
    for (uint32_t i = 0; i < nsa; i++) {
      s.sa[i].packets += c.sa[i].packets;
      s.sa[i].bytes += c.sa[i].bytes;
      s.sa[i].last_tsc = std::max(s.sa[i].last_tsc, c.sa[i].last_tsc);  // the most recent use, any worker
    }
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

json ControlOps::stats() const {
  const dp::WorkerCounters& s = sum_counters();
  json j;
  j["ok"] = true;
  json ports = json::array();
  for (uint16_t p = 0; p < dp_.nb_ports; p++) {
    const char* kind = dp_.ports[p].kind == dp::PortKind::kProtected     ? "protected"
                       : dp_.ports[p].kind == dp::PortKind::kUnprotected ? "unprotected"
                                                                         : "exception";
    std::string name = p < port_names_.size() ? port_names_[p] : "exception";
    ports.push_back({{"name", name}, {"kind", kind}, {"rx", pbc(s.port[p].rx)}, {"tx", pbc(s.port[p].tx)}});
  }
  j["ports"] = ports;
  j["tunnels"] = tunnels_json(s);
  j["sas"] = sas_ ? sas_->list(s) : json::array();
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
  j["workers"] = dp_.nb_workers;
  std::vector<std::string> names;  // as "ports" names them: the exception port has no config entry
  for (uint16_t p = 0; p < dp_.nb_ports; p++) names.push_back(p < port_names_.size() ? port_names_[p] : "exception");
  j["accounting"] = balance_json(dp_, names);
  j["tfc_dummies"] = s.tfc_dummies;
  j["reassembly"] = {{"reassembled", s.reassembled},
                     {"timeouts", s.reasm_timeouts},
                     {"failed", s.drop[static_cast<int>(dp::DropReason::kReasmFailed)]}};
  j["arp_consumed"] = s.arp_consumed;
  j["generated_dropped"] = s.generated_dropped;
  if (extras_) extras_(j);
  return j;
}

std::string ControlOps::format_stats() const {
  json j = stats();
  std::string out;
  out += fmt::format("{:<12} {:>5} {:>5} {:>14} {:>14} {:>14} {:>14} {:>10}\n", "tunnel", "admin", "oper", "out pkts",
                     "out bytes", "in pkts", "in bytes", "asymmetric");
  for (const auto& t : j["tunnels"])
    out += fmt::format("{:<12} {:>5} {:>5} {:>14} {:>14} {:>14} {:>14} {:>10}\n", t["name"].get<std::string>(),
                       t["admin"].get<std::string>(), t["oper"].get<std::string>(), t["out"]["packets"].get<uint64_t>(),
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

}  // namespace espgw::control
