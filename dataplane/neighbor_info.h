// A snapshot of the neighbour tables for the control side (espctl
// neighbors, the control socket's "neighbors" operation). Not hot path.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dataplane/dataplane.h"

namespace espgw::dataplane {

struct NeighborInfo {
  uint16_t port;                                // index into Dataplane::ports
  uint32_t ip;                                  // host order; 0: a gateway known by MAC only
  std::optional<std::array<uint8_t, 6>> mac;    // none while unresolved
  std::string state;                            // static, reachable, stale, incomplete, failed
  bool is_static;
  bool is_gateway;                              // the port's default next hop
  bool is_tunnel_next_hop;                      // a tunnel's peer or its gateway
  double age_s;                                 // since the last ARP heard from it; -1: never / static
};

// Every table entry and every tunnel next hop, port by port.
std::vector<NeighborInfo> list_neighbors(const Dataplane& dp);

// After the workers stopped: frees the packets the tables still hold for
// unresolved neighbours, counted as no_neighbor on worker 0 (generated
// packets dropped: generated_dropped and drop[no_neighbor]).
void drop_all_held(Dataplane& dp);

}  // namespace espgw::dataplane
