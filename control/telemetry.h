// DPDK telemetry for espgw (dpdk-telemetry.py: /espgw/tunnels, /espgw/sas,
// /espgw/routes, /espgw/stats, /espgw/tunnel,NAME, /espgw/sa,DIR:0xSPI).
//
// DPDK's telemetry thread runs the callbacks; it never touches the control
// thread's containers: the control thread publishes a JSON snapshot and the
// callbacks read that under a mutex.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>

namespace espgw::control {

class Telemetry {
 public:
  // Registers the commands (one gateway per process: the callbacks take no
  // user pointer, so they read the latest Telemetry's snapshot).
  Telemetry();
  // The commands stay registered (DPDK cannot unregister) but answer -ENOENT.
  ~Telemetry();
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  // `stats` as the stats op returns it (tunnels inside), `sas` as list-sas,
  // `routes` as the routes op.
  void publish(nlohmann::json stats, nlohmann::json sas, nlohmann::json routes);

  struct Snapshot;

 private:
  std::shared_ptr<Snapshot> snapshot_;
};

}  // namespace espgw::control
