// The gateway: builds the data plane from a GatewayConfig (EAL, ports,
// queues, RCU, SA tables, FIB), launches one worker per lcore and runs the
// control thread on the main lcore until asked to stop.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "control/config.h"
#include "crypto/aead.h"
#include "dataplane/dataplane.h"
#include "control/sa_database.h"
#include "lpm/route_table.h"

namespace espgw::control {

class ControlServer;
namespace xfrm {
class Mirror;
}

class Gateway {
 public:
  // `extra_eal`: raw EAL arguments given after `--` on the command line,
  // appended to the config's list.
  Gateway(GatewayConfig cfg, std::vector<std::string> extra_eal = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // EAL init, ports, tables, workers. Throws std::runtime_error with the
  // reason; nothing keeps running when it throws.
  void start();
  // Control loop: serves the socket until request_stop() (or a signal).
  void run();
  static void request_stop();
  // Stops workers, prints nothing; counters stay readable.
  void stop();

  // Control operations (also reachable through the socket).
  nlohmann::json handle(const nlohmann::json& request);
  void set_tunnel_admin(const std::string& name, bool up);

  nlohmann::json stats_json() const;
  std::vector<std::string> port_names() const;  // by port index, as the stats name them
  std::string format_stats() const;
  // Mbufs of the pool in use now, and right after the ports started (the
  // RX rings' share): equal when nothing leaked.
  unsigned mbufs_in_use() const;
  unsigned mbufs_in_use_at_start() const { return mbufs_at_start_; }

 private:
  struct TunnelCtl {
    std::string name;
    bool admin_up = true;
  };

  SaParams sa_params_from_json(const nlohmann::json& req) const;
  void publish_snapshot();
  void register_telemetry();
  void emit(const nlohmann::json& event);
  void start_xfrm_mirror();
  void on_xfrm_event(const void* event);  // xfrm::Event

  void init_eal();
  void init_ports();
  void init_tables();
  void launch_workers();
  void refresh_tunnel_state(uint16_t t, bool has_sa);
  uint16_t tunnel_index(const std::string& name) const;
  dataplane::WorkerCounters sum_counters() const;

  GatewayConfig cfg_;
  std::vector<std::string> extra_eal_;
  bool eal_up_ = false;
  bool workers_running_ = false;
  std::vector<uint16_t> port_ids_;
  std::unique_ptr<dataplane::Dataplane> dp_;
  std::unique_ptr<lpm::RouteTable> routes_;
  std::vector<TunnelCtl> tunnels_;
  std::unique_ptr<SaDatabase> sas_;
  std::vector<dataplane::WorkerArgs> worker_args_;
  std::vector<unsigned> worker_lcores_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<xfrm::Mirror> xfrm_;
  uint64_t xfrm_mirrored_ = 0, xfrm_ignored_ = 0;
  unsigned mbufs_at_start_ = 0;
  uint64_t events_emitted_ = 0;
 public:
  // Read by DPDK's telemetry thread: a JSON snapshot the control thread
  // refreshes, so telemetry never touches the control thread's containers.
  struct Snapshot;
 private:
  std::shared_ptr<Snapshot> snapshot_;
  uint64_t start_tsc_ = 0;
};

}  // namespace espgw::control
