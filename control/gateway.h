// The gateway daemon's bring-up and control loop: builds the data plane from
// a GatewayConfig (EAL, ports, queues, RCU, SA tables, FIB), launches one
// worker per lcore and runs the control thread on the main lcore until asked
// to stop. The control operations themselves live in ControlOps
// (control_ops.h), the socket's JSON in JsonCodec (json_codec.h), telemetry
// in telemetry.h, the XFRM mapping in xfrm_mirror.h.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "control/config.h"
#include "control/sa_database.h"
#include "dataplane/dataplane.h"
#include "lpm/route_table.h"

namespace espgw::control {

class ControlOps;
class ControlServer;
class JsonCodec;
class Telemetry;
class XfrmMirror;

class Gateway {
 public:
  // `extra_eal`: raw EAL arguments given after `--` on the command line,
  // appended to the config's list.
  Gateway(GatewayConfig cfg, std::vector<std::string> extra_eal = {});
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // EAL init, ports, tables, workers. Throws std::runtime_error with the
  // reason; nothing keeps running when it throws. `launch_workers` false:
  // nothing runs on the worker lcores and the caller drives the workers'
  // code itself, one dataplane::worker_poll_once() at a time (the fuzz
  // harnesses, tests/fuzz/).
  void start(bool launch_workers = true);
  // Control loop: serves the socket until request_stop() (or a signal).
  void run();
  static void request_stop();
  // Stops workers, prints nothing; counters stay readable.
  void stop();

  ControlOps& ops() { return *ops_; }
  // What the workers read (for a caller that drives them, see start()).
  dataplane::Dataplane& dataplane() { return *dp_; }
  std::string format_stats() const;
  // Mbufs of the pool in use now, and right after the ports started (the
  // RX rings' share): equal when nothing leaked.
  unsigned mbufs_in_use() const;
  unsigned mbufs_in_use_at_start() const { return mbufs_at_start_; }

 private:
  void publish_snapshot();
  void emit(const nlohmann::json& event);
  void start_xfrm_mirror();
  void add_stats_extras(nlohmann::json& stats) const;

  void init_eal();
  void init_ports();
  void init_tables();
  void launch_workers();
  void refresh_tunnel_state(uint16_t t, bool has_sa);
  uint16_t tunnel_index(const std::string& name) const;

  GatewayConfig cfg_;
  std::vector<std::string> extra_eal_;
  bool eal_up_ = false;
  bool workers_running_ = false;
  std::vector<uint16_t> port_ids_;
  std::unique_ptr<dataplane::Dataplane> dp_;
  std::unique_ptr<lpm::RouteTable> routes_;
  std::unique_ptr<ControlOps> ops_;
  std::unique_ptr<SaDatabase> sas_;
  std::vector<dataplane::WorkerArgs> worker_args_;
  std::vector<unsigned> worker_lcores_;
  std::unique_ptr<JsonCodec> codec_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<Telemetry> telemetry_;
  std::unique_ptr<XfrmMirror> xfrm_;
  unsigned mbufs_at_start_ = 0;
  uint64_t events_emitted_ = 0;
  uint64_t start_tsc_ = 0;
};

}  // namespace espgw::control
