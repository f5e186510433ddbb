// The typed control operations: the ONE place an SA, a route or a tunnel's
// administrative state enters at run time, whatever the source (control
// socket through the JSON codec, XFRM mirror, later the charon plugin).
//
// What is checked on the way in:
//   - SAs: validate_sa_spec() / validate_sa_update() (control/sa_spec.h, the
//     validator the config file uses too), then the SA database's identity
//     rules (add: new identity; replace: reconcile, the identity keeps its
//     sequence number and replay window; update: only what may change).
//   - routes: tunnel names resolved here, prefixes and priorities checked by
//     the route table;
//   - tunnels: names resolved here.
// Every operation either succeeds or throws (std::runtime_error / SaError
// with the reason) having changed nothing.
//
// Tunnel state has two columns (docs/control-api.md):
//   admin: the operator's switch, set only by tunnel-up / tunnel-down (or the
//          config's `up:`); SA events never change it;
//   oper:  admin up AND the tunnel has an outbound SA. Routes follow oper.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "control/sa_database.h"
#include "control/sa_spec.h"
#include "control/spi_allocator.h"
#include "dataplane/dataplane.h"
#include "lpm/route_table.h"

namespace espgw::control {

struct RouteHopRequest {
  std::string tunnel;
  uint32_t priority = 0;
};

struct RouteRequest {
  lpm::Prefix4 prefix{};
  std::vector<RouteHopRequest> via;
};

// How a request names an existing SA (delete-sa, query-sa): direction, SPI,
// and the tunnel and/or the destination address (docs/control-api.md).
struct SaName {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  std::optional<std::string> tunnel;
  std::optional<uint32_t> dst;  // host order
};

// What alloc-spi hands out.
struct SpiGrant {
  uint32_t spi = 0;
  uint32_t expires_in_s = 0;
};

class ControlOps {
 public:
  using EventSink = std::function<void(const nlohmann::json&)>;
  // Adds the daemon's own counters (XFRM mirror, mbufs) to a stats reply.
  using StatsExtras = std::function<void(nlohmann::json&)>;

  // `admin_up`: the tunnels' initial administrative state (config `up:`).
  ControlOps(dataplane::Dataplane& dp, lpm::RouteTable& routes, std::vector<std::string> tunnel_names,
             std::vector<bool> admin_up, std::vector<std::string> port_names, EventSink emit);
  ControlOps(const ControlOps&) = delete;
  ControlOps& operator=(const ControlOps&) = delete;

  // The SA database is built after the tunnels (its tunnel callback lands in
  // tunnel_sa_changed()); attach it before any SA operation.
  void attach(SaDatabase& sas) { sas_ = &sas; }
  void set_stats_extras(StatsExtras f) { extras_ = std::move(f); }

  // ---- SAs
  void add_sa(const SaSpec& spec, SaOrigin origin);
  // Add-or-update of one identity (SaDatabase::reconcile): an existing SA
  // keeps its next sequence number, replay window and counters.
  void replace_sa(const SaSpec& spec, SaOrigin origin);
  void update_sa(const SaUpdate& update);
  void delete_sa(SaDirection dir, uint32_t spi, const std::optional<std::string>& tunnel,
                 const char* reason = "request");
  // Returns true when no SA had the name but an inbound SPI reservation
  // did: released (charon deletes the SPIs of negotiations that failed).
  bool delete_sa(const SaName& name, const char* reason = "request");
  // query-sa's reply fields (without "ok"); SaNotFound when absent.
  nlohmann::json query_sa(const SaName& name) const;
  size_t delete_all_sas(std::optional<SaOrigin> origin, const char* reason);
  struct FlushResult {
    size_t deleted = 0, larval = 0;
  };
  // flush-sas (charon's flush_sas): every SA (of `origin` when given) with
  // reason "flush", and every SPI reservation.
  FlushResult flush_sas(std::optional<SaOrigin> origin);
  std::vector<SaKey> sa_keys(std::optional<SaOrigin> origin) const;
  bool has_sa(SaDirection dir, uint32_t spi, uint16_t tunnel) const;
  nlohmann::json list_sas() const;

  // ---- SPI allocation (alloc-spi): larval reservations, consumed by an
  // inbound add-sa/replace-sa of the SPI at that address.
  static constexpr uint32_t kDefaultSpiTimeoutS = 180;
  static constexpr uint32_t kMaxSpiTimeoutS = 3600;
  // `dst` must be a tunnel's local address; `src` (the peer) is recorded.
  SpiGrant alloc_spi(uint32_t dst, std::optional<uint32_t> src, std::optional<uint32_t> timeout_s);
  nlohmann::json larval() const;
  // Releases expired reservations (the control loop, 20 times a second).
  size_t expire_reservations();

  // ---- tunnels
  void set_tunnel_admin(const std::string& name, bool up);
  // The SA database's callback: the tunnel gained its first / is losing its
  // last outbound SA. Never touches the admin state.
  void tunnel_sa_changed(uint16_t tunnel, bool has_sa);
  uint16_t tunnel_index(const std::string& name) const;
  const std::string& tunnel_name(uint16_t t) const { return tunnels_[t].name; }
  size_t tunnel_count() const { return tunnels_.size(); }
  nlohmann::json tunnels() const;

  // ---- routes
  void add_route(const RouteRequest& r);
  void replace_route(const RouteRequest& r);
  void delete_route(const lpm::Prefix4& prefix);
  // The first `limit` routes in (address, length) order (all by default).
  nlohmann::json routes(size_t limit = SIZE_MAX) const;

  // ---- neighbours (both sides' ARP tables, the tunnels' next hops)
  nlohmann::json neighbors() const;

  // ---- counters
  // A per-thread buffer (~1.2 MB), valid until the thread's next call.
  const dataplane::WorkerCounters& sum_counters() const;
  nlohmann::json stats() const;
  std::string format_stats() const;
  void check_lifetimes();

 private:
  struct TunnelState {
    std::string name;
    bool admin_up = true;
  };
  SaDatabase& sas() const;
  SaRef ref_of(const SaName& name) const;
  std::vector<lpm::NextHop> hops_of(const RouteRequest& r) const;
  nlohmann::json tunnels_json(const dataplane::WorkerCounters& sums) const;
  void synchronize() const;

  dataplane::Dataplane& dp_;
  lpm::RouteTable& routes_;
  std::vector<TunnelState> tunnels_;
  std::vector<std::string> port_names_;
  EventSink emit_;
  StatsExtras extras_;
  SaDatabase* sas_ = nullptr;
  SpiAllocator spis_;
};

}  // namespace espgw::control
