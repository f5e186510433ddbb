// Follows the kernel's XFRM SAs into espgw through ControlOps (docs/xfrm.md).
//
// Mapping: a kernel SA belongs to the tunnel whose (local, remote) outer
// addresses it has; outbound when its source is our local address, inbound
// when its destination is. Every SA enters as an SaSpec through
// ControlOps::replace_sa (SaDatabase::reconcile: a NEWSA/UPDSA for an SA we
// already have keeps its sequence number and replay window), tagged
// SaOrigin::kXfrm; deletes, hard expires and flushes touch mirrored SAs only.
//
// Drift: when the event socket overruns (ENOBUFS: events were lost) the
// mirror dumps the kernel's SAs again and resynchronises: every SA the kernel
// has is reconciled, every mirrored SA it no longer has is removed. Nothing
// on that path resets an SA's state.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "control/control_ops.h"
#include "control/xfrm.h"

namespace espgw::control {

class XfrmMirror {
 public:
  struct TunnelEnds {
    std::string name;
    uint32_t local = 0, remote = 0;  // host order
  };
  struct Counters {
    uint64_t mirrored = 0;   // SAs installed or reconciled from the kernel
    uint64_t ignored = 0;    // events we could not map (logged)
    uint64_t removed = 0;    // mirrored SAs removed (delete, hard expire, flush, resync)
    uint64_t resyncs = 0;    // re-dumps after an overrun
  };

  // Subscribes, then dumps the kernel's current SAs. Throws std::runtime_error
  // (no CAP_NET_ADMIN, no XFRM) with the reason.
  XfrmMirror(ControlOps& ops, std::vector<TunnelEnds> tunnels);
  // Without a kernel socket: events come only through apply() and
  // resync_from() (tests feeding real netlink messages; a kernel without
  // ESP cannot produce them).
  struct NoSocket {};
  XfrmMirror(ControlOps& ops, std::vector<TunnelEnds> tunnels, NoSocket);
  ~XfrmMirror();

  // Applies pending kernel events; after an overrun, re-dumps and
  // resynchronises.
  void poll();
  // Re-dump and resynchronise now.
  void resync();

  // One kernel event, as poll() applies it.
  void apply(const xfrm::Event& ev) { on_event(ev); }
  // Resynchronises with `dump` as if the kernel had answered it to a re-dump.
  void resync_from(const std::vector<xfrm::Event>& dump);

  const Counters& counters() const { return counters_; }
  // The socket's counters (zero without a socket).
  const xfrm::Stats& stats() const { return mirror_ ? mirror_->stats() : no_stats_; }

  // The SaSpec of a kernel SA on tunnel `t` (exposed for the tests).
  static SaSpec spec_of(const xfrm::SaInfo& sa, SaDirection dir, const std::string& tunnel);

 private:
  void on_event(const xfrm::Event& ev);
  int find_tunnel(uint32_t local, uint32_t remote) const;
  bool is_local(uint32_t addr) const;
  void remove_mirrored(SaDirection dir, uint32_t spi, uint32_t daddr, const char* reason);
  void begin_resync();
  void end_resync();

  ControlOps& ops_;
  std::vector<TunnelEnds> tunnels_;
  std::unique_ptr<xfrm::Mirror> mirror_;
  Counters counters_;
  xfrm::Stats no_stats_;
  uint64_t overruns_seen_ = 0;
  bool resyncing_ = false;
  std::set<std::tuple<SaDirection, uint32_t, uint16_t>> seen_;  // SAs the re-dump reported
};

}  // namespace espgw::control
