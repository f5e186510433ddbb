#include "control/xfrm_mirror.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <variant>

namespace espgw::control {

XfrmMirror::XfrmMirror(ControlOps& ops, std::vector<TunnelEnds> tunnels)
    : ops_(ops), tunnels_(std::move(tunnels)) {
  mirror_ = std::make_unique<xfrm::Mirror>([this](const xfrm::Event& ev) { on_event(ev); });
  // Subscribed first: what changes during the dump is replayed by poll().
  mirror_->dump();
  overruns_seen_ = mirror_->stats().overruns;
}

XfrmMirror::XfrmMirror(ControlOps& ops, std::vector<TunnelEnds> tunnels, NoSocket)
    : ops_(ops), tunnels_(std::move(tunnels)) {}

XfrmMirror::~XfrmMirror() = default;

int XfrmMirror::find_tunnel(uint32_t local, uint32_t remote) const {
  for (size_t i = 0; i < tunnels_.size(); i++)
    if (tunnels_[i].local == local && tunnels_[i].remote == remote) return static_cast<int>(i);
  return -1;
}

bool XfrmMirror::is_local(uint32_t addr) const {
  return std::any_of(tunnels_.begin(), tunnels_.end(), [&](const TunnelEnds& t) { return t.local == addr; });
}

SaSpec XfrmMirror::spec_of(const xfrm::SaInfo& sa, SaDirection dir, const std::string& tunnel) {
  SaSpec s;
  s.direction = dir;
  s.spi = sa.spi;
  s.tunnel = tunnel;
  s.algo = sa.key_len() == 16 ? SaAlgo::kAes128Gcm : SaAlgo::kAes256Gcm;
  s.keymat = sa.keymat;  // SecretBytes to SecretBytes: every copy wipes itself
  s.esn = sa.esn;
  if (dir == SaDirection::kInbound)
    s.replay_window = sa.replay_window == 0 ? 0 : std::clamp<uint32_t>(sa.replay_window, 32, 4096);
  if (sa.encap_sport || sa.encap_dport) {
    // The kernel's template is the packets' view (sender port, receiver port).
    s.encap = dir == SaDirection::kOutbound ? UdpEncap{sa.encap_sport, sa.encap_dport}
                                            : UdpEncap{sa.encap_dport, sa.encap_sport};
  } else {
    s.plain_esp = true;  // the kernel said so: refused on an ESP-in-UDP tunnel
  }
  s.origin = SaOrigin::kXfrm;
  s.soft = {sa.soft_bytes, sa.soft_packets, sa.soft_add_seconds};
  s.hard = {sa.hard_bytes, sa.hard_packets, sa.hard_add_seconds};
  return s;
}

// Removes a mirrored SA (never one the socket or the config installed) with
// this direction and SPI whose tunnel has `daddr` at the right end.
void XfrmMirror::remove_mirrored(SaDirection dir, uint32_t spi, uint32_t daddr, const char* reason) {
  for (const SaKey& k : ops_.sa_keys(SaOrigin::kXfrm)) {
    if (k.direction != dir || k.spi != spi || k.tunnel >= tunnels_.size()) continue;
    const TunnelEnds& t = tunnels_[k.tunnel];
    if ((dir == SaDirection::kInbound ? t.local : t.remote) != daddr) continue;
    ops_.delete_sa(dir, spi, t.name, reason);
    counters_.removed++;
    return;
  }
}

void XfrmMirror::on_event(const xfrm::Event& ev) {
  try {
    if (auto* sa = std::get_if<xfrm::SaInfo>(&ev)) {
      xfrm::Dir dir = xfrm::direction_of(sa->saddr, sa->daddr, [this](uint32_t a) { return is_local(a); });
      int t = dir == xfrm::Dir::kOut ? find_tunnel(sa->saddr, sa->daddr)
              : dir == xfrm::Dir::kIn ? find_tunnel(sa->daddr, sa->saddr)
                                      : -1;
      if (t < 0) {
        counters_.ignored++;
        fmt::print(stderr, "espgw: xfrm: no tunnel for {} -> {}: {}\n", format_ipv4(sa->saddr),
                   format_ipv4(sa->daddr), xfrm::to_string(ev));
        return;
      }
      SaDirection d = dir == xfrm::Dir::kOut ? SaDirection::kOutbound : SaDirection::kInbound;
      if (resyncing_) seen_.insert({d, sa->spi, static_cast<uint16_t>(t)});
      // Add-or-update: a NEWSA/UPDSA (or a re-dump) of an SA we have keeps
      // its sequence number and replay window.
      ops_.replace_sa(spec_of(*sa, d, tunnels_[t].name), SaOrigin::kXfrm);
      counters_.mirrored++;
    } else if (auto* del = std::get_if<xfrm::SaDelete>(&ev)) {
      SaDirection d = is_local(del->key.daddr) ? SaDirection::kInbound : SaDirection::kOutbound;
      remove_mirrored(d, del->key.spi, del->key.daddr, "kernel");
    } else if (auto* ex = std::get_if<xfrm::SaExpire>(&ev)) {
      if (ex->hard) {
        SaDirection d = is_local(ex->key.daddr) ? SaDirection::kInbound : SaDirection::kOutbound;
        remove_mirrored(d, ex->key.spi, ex->key.daddr, "kernel-hard-expire");
      }
    } else if (auto* fl = std::get_if<xfrm::SaFlush>(&ev)) {
      if (fl->affects_esp()) counters_.removed += ops_.delete_all_sas(SaOrigin::kXfrm, "kernel-flush");
    } else if (std::holds_alternative<xfrm::Unsupported>(ev) || std::holds_alternative<xfrm::Malformed>(ev)) {
      counters_.ignored++;
      fmt::print(stderr, "espgw: xfrm: ignored: {}\n", xfrm::to_string(ev));
    }
  } catch (const std::exception& e) {
    counters_.ignored++;
    fmt::print(stderr, "espgw: xfrm: {}: {}\n", xfrm::to_string(ev), e.what());
  }
}

void XfrmMirror::begin_resync() {
  seen_.clear();
  resyncing_ = true;
}

// Mirrored SAs the re-dump did not report: their DELSA was among the lost
// events. Everything the dump did report was reconciled on the way.
void XfrmMirror::end_resync() {
  resyncing_ = false;
  counters_.resyncs++;
  for (const SaKey& k : ops_.sa_keys(SaOrigin::kXfrm)) {
    if (seen_.count({k.direction, k.spi, k.tunnel})) continue;
    try {
      ops_.delete_sa(k.direction, k.spi, ops_.tunnel_name(k.tunnel), "kernel-resync");
      counters_.removed++;
    } catch (const std::exception& e) {
      fmt::print(stderr, "espgw: xfrm: resync: {}\n", e.what());
    }
  }
  seen_.clear();
}

void XfrmMirror::resync() {
  if (!mirror_) return;
  begin_resync();
  try {
    mirror_->dump();
  } catch (...) {
    resyncing_ = false;  // nothing removed: a failed dump proves nothing
    throw;
  }
  end_resync();
}

void XfrmMirror::resync_from(const std::vector<xfrm::Event>& dump) {
  begin_resync();
  for (const auto& ev : dump) on_event(ev);
  end_resync();
}

void XfrmMirror::poll() {
  if (!mirror_) return;
  mirror_->poll();
  if (mirror_->stats().overruns != overruns_seen_) {
    overruns_seen_ = mirror_->stats().overruns;
    fmt::print(stderr, "espgw: xfrm: event socket overrun (events lost): re-dumping the kernel's SAs\n");
    try {
      resync();
    } catch (const std::exception& e) {
      fmt::print(stderr, "espgw: xfrm: resync failed ({}); retrying at the next poll\n", e.what());
      overruns_seen_--;  // try again
    }
  }
}

}  // namespace espgw::control
