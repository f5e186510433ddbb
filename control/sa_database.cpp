#include "control/sa_database.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <rte_errno.h>

#include <algorithm>

namespace espgw::control {
namespace dp = espgw::dataplane;
using nlohmann::json;

namespace {
crypto::AeadAlgo to_algo(SaAlgo a) {
  return a == SaAlgo::kAes128Gcm ? crypto::AeadAlgo::kAes128Gcm : crypto::AeadAlgo::kAes256Gcm;
}
const char* dir_name(SaDirection d) { return d == SaDirection::kInbound ? "in" : "out"; }
uint32_t prefix_mask(uint8_t len) { return len == 0 ? 0 : ~uint32_t{0} << (32 - len); }

// Soft expiry on sequence space: well before the hard end, so the agent has
// time to rekey (RFC 4303 §3.3.3: the counter must never cycle).
constexpr uint64_t kSeqSoftMargin = uint64_t{1} << 24;

json lifetime_json(const SaLifetime& l) { return {{"bytes", l.bytes}, {"packets", l.packets}, {"seconds", l.seconds}}; }
}  // namespace

std::string SaDatabase::fingerprint(const std::vector<uint8_t>& keymat) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(keymat.data(), keymat.size(), md, &n, EVP_sha256(), nullptr);
  return fmt::format("{:02x}{:02x}{:02x}{:02x}", md[0], md[1], md[2], md[3]);
}

SaDatabase::SaDatabase(dp::Dataplane& dp, std::vector<TunnelEndpoints> tunnels, EventSink events,
                       TunnelChanged changed)
    : dp_(dp), tunnels_(std::move(tunnels)), events_(std::move(events)), changed_(std::move(changed)) {
  for (uint32_t s = dp::kMaxSas; s-- > 0;) free_slots_.push_back(s);
}

SaDatabase::~SaDatabase() {
  // Workers are stopped by now (the gateway stops them first): unpublish and
  // let the entries' destructors wipe the keys.
  for (uint16_t t = 0; t < tunnels_.size(); t++) dp_.tunnels[t].out_sa.store(nullptr);
  for (auto& [k, e] : entries_)
    if (e.in) {
      dp::InboundKey key{e.in->spi, e.in->local_addr};
      int32_t pos = rte_hash_del_key(dp_.inbound, &key);
      if (pos >= 0) rte_hash_free_key_with_position(dp_.inbound, pos);
    }
}

void SaDatabase::synchronize() const {
  if (dp_.qsbr) rte_rcu_qsbr_synchronize(dp_.qsbr, RTE_QSBR_THRID_INVALID);
}

std::map<SaDatabase::Key, SaDatabase::Entry>::iterator SaDatabase::find(SaDirection dir, uint32_t spi,
                                                                        std::optional<uint16_t> tunnel) {
  if (tunnel) return entries_.find({dir, spi, *tunnel});
  auto found = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    auto& [d, s, t] = it->first;
    if (d == dir && s == spi) {
      if (found != entries_.end())
        throw SaError(fmt::format("SPI 0x{:08x} ({}) exists on several tunnels: name the tunnel", spi, dir_name(dir)));
      found = it;
    }
  }
  return found;
}

std::unique_ptr<SaDatabase::Entry> SaDatabase::build(const SaParams& p) const {
  if (p.tunnel >= tunnels_.size()) throw SaError(fmt::format("unknown tunnel index {}", p.tunnel));
  if (p.spi < 256)
    throw SaError(fmt::format("spi {}: values 0..255 are reserved (RFC 4303 §2.1)", p.spi));
  const crypto::AeadAlgo algo = to_algo(p.algo);
  if (p.keymat.size() != crypto::keymat_len(algo))
    throw SaError(fmt::format("key: {} needs {} bytes of key || salt ({} hex digits), got {}",
                              p.algo == SaAlgo::kAes128Gcm ? "aes128-gcm" : "aes256-gcm", crypto::keymat_len(algo),
                              2 * crypto::keymat_len(algo), p.keymat.size()));
  if (p.local_selectors.size() > dp::kMaxSelectors || p.remote_selectors.size() > dp::kMaxSelectors)
    throw SaError(fmt::format("at most {} selectors per side", dp::kMaxSelectors));
  const TunnelEndpoints& t = tunnels_[p.tunnel];

  auto e = std::make_unique<Entry>();
  e->params = p;
  e->fingerprint = fingerprint(p.keymat);
  e->aead = std::make_unique<crypto::AeadContext>(algo, p.keymat);
  if (p.direction == SaDirection::kOutbound) {
    if (p.initial_seq == 0) throw SaError("seq: sequence numbers start at 1");
    auto sa = std::make_unique<dp::OutboundSa>();
    sa->spi = p.spi;
    sa->esn = p.esn;
    sa->next_seq.store(p.initial_seq);
    sa->outer_src = t.local;
    sa->outer_dst = t.remote;
    if (p.udp_encap) {
      sa->udp_src_port = p.udp_sport;
      sa->udp_dst_port = p.udp_dport;
    }
    sa->ttl = t.ttl;
    sa->dscp = t.dscp;
    sa->df = t.df == DfPolicyConfig::kSet     ? dp::DfPolicy::kSet
             : t.df == DfPolicyConfig::kClear ? dp::DfPolicy::kClear
                                              : dp::DfPolicy::kCopy;
    sa->aead = e->aead.get();
    sa->tunnel = p.tunnel;
    sa->seq_limit = p.esn ? ~uint64_t{0} : dp::kSeqLimitNoEsn;
    dp::finalize_outbound_sa(*sa);  // the per-SA outer header template the workers use
    e->out = std::move(sa);
  } else {
    auto sa = std::make_unique<dp::InboundSa>();
    sa->spi = p.spi;
    sa->local_addr = t.local;
    sa->esn = p.esn;
    sa->udp_port = p.udp_encap ? p.udp_dport : 0;
    sa->aead = e->aead.get();
    sa->tunnel = p.tunnel;
    if (!sa->replay.reset(p.replay_window, p.esn))
      throw SaError(fmt::format("replay_window: {} is neither 0 (off) nor in {}..{}", p.replay_window,
                                dp::ReplayWindow::kMinWindow, dp::ReplayWindow::kMaxWindow));
    for (const auto& s : p.local_selectors) sa->local_sel[sa->nb_local_sel++] = {s.addr, prefix_mask(s.len)};
    for (const auto& s : p.remote_selectors) sa->remote_sel[sa->nb_remote_sel++] = {s.addr, prefix_mask(s.len)};
    if (sa->nb_remote_sel && !sa->nb_local_sel) sa->local_sel[sa->nb_local_sel++] = {0, 0};
    if (sa->nb_local_sel && !sa->nb_remote_sel) sa->remote_sel[sa->nb_remote_sel++] = {0, 0};
    e->in = std::move(sa);
  }
  return e;
}

void SaDatabase::add(const SaParams& p, bool replace) {
  auto existing = entries_.find({p.direction, p.spi, p.tunnel});
  if (!replace && existing != entries_.end())
    throw SaError(fmt::format("SA {} 0x{:08x} on {} exists (use replace-sa)", dir_name(p.direction), p.spi,
                              tunnels_[p.tunnel].name));
  if (replace && existing == entries_.end())
    throw SaError(fmt::format("no SA {} 0x{:08x} on {} to replace", dir_name(p.direction), p.spi,
                              p.tunnel < tunnels_.size() ? tunnels_[p.tunnel].name : "?"));
  if (p.direction == SaDirection::kInbound && !replace) {
    // The wire names an inbound SA by (SPI, our address): unique across tunnels sharing it.
    for (auto& [k, e] : entries_)
      if (e.in && e.in->spi == p.spi && e.in->local_addr == tunnels_[p.tunnel].local)
        throw SaError(fmt::format("inbound SPI 0x{:08x} is already used on {} for address {}", p.spi,
                                  tunnels_[std::get<2>(k)].name, format_ipv4(e.in->local_addr)));
  }
  if (!replace && free_slots_.empty()) throw SaError(fmt::format("SA table full ({} SAs)", dp::kMaxSas));
  std::unique_ptr<Entry> e = build(p);  // throws before anything changes

  uint32_t slot;
  if (replace) {
    slot = existing->second.slot;
  } else {
    slot = free_slots_.back();
  }
  e->slot = slot;
  (e->out ? e->out->slot : e->in->slot) = slot;
  e->installed = std::chrono::steady_clock::now();
  e->install_order = ++install_counter_;
  dp::PacketByteCount base{0, 0};
  for (uint16_t w = 0; w < dp_.nb_workers; w++) {
    base.packets += dp_.counters[w]->sa[slot].packets;
    base.bytes += dp_.counters[w]->sa[slot].bytes;
  }
  e->baseline = base;

  if (e->in) {
    dp::InboundKey key{e->in->spi, e->in->local_addr};
    // Lock-free hash: adding (or updating the data of) a key is atomic for readers.
    int rc = rte_hash_add_key_data(dp_.inbound, &key, e->in.get());
    if (rc != 0) throw SaError(fmt::format("inbound SA table: {}", rte_strerror(-rc)));
  }
  if (!replace) free_slots_.pop_back();

  Entry old;
  bool had_old = false;
  if (replace) {
    old = std::move(existing->second);
    had_old = true;
    existing->second = std::move(*e);
  } else {
    entries_.emplace(Key{p.direction, p.spi, p.tunnel}, std::move(*e));
  }
  if (p.direction == SaDirection::kOutbound) publish_outbound(p.tunnel);
  if (had_old) {
    synchronize();  // no worker holds the replaced objects any more
    // Its counters stay in the slot: the replacement inherits the baseline.
    old.aead.reset();
  }
  installs_++;
  events_({{"event", "sa-installed"},
           {"direction", dir_name(p.direction)},
           {"spi", fmt::format("0x{:08x}", p.spi)},
           {"tunnel", tunnels_[p.tunnel].name},
           {"replaced", replace}});
}

// The tunnel's current outbound SA is its newest; publish it (or nullptr).
void SaDatabase::publish_outbound(uint16_t tunnel) {
  const Entry* newest = nullptr;
  for (auto& [k, e] : entries_)
    if (e.out && std::get<2>(k) == tunnel && (!newest || e.install_order > newest->install_order)) newest = &e;
  dp::OutboundSa* want = newest ? newest->out.get() : nullptr;
  dp::OutboundSa* was = dp_.tunnels[tunnel].out_sa.load();
  if (was == want) return;
  if (want == nullptr) {
    // Losing its last SA: route traffic away first (the FIB republish waits
    // for the workers), then unpublish, so nothing is dropped as tunnel_down.
    changed_(tunnel, false);
    dp_.tunnels[tunnel].out_sa.store(nullptr, std::memory_order_release);
  } else {
    dp_.tunnels[tunnel].out_sa.store(want, std::memory_order_release);
    if (was == nullptr) changed_(tunnel, true);
  }
}

void SaDatabase::remove(SaDirection dir, uint32_t spi, std::optional<uint16_t> tunnel, const char* reason) {
  auto it = find(dir, spi, tunnel);
  if (it == entries_.end())
    throw SaError(fmt::format("no {} SA with SPI 0x{:08x}{}", dir_name(dir), spi,
                              tunnel ? " on " + tunnels_[*tunnel].name : std::string()));
  Entry e = std::move(it->second);
  uint16_t t = std::get<2>(it->first);
  entries_.erase(it);
  int32_t pos = -1;
  if (e.in) {
    dp::InboundKey key{e.in->spi, e.in->local_addr};
    pos = rte_hash_del_key(dp_.inbound, &key);
  } else {
    publish_outbound(t);  // falls back to the next newest, or takes the tunnel down
  }
  synchronize();
  if (pos >= 0) rte_hash_free_key_with_position(dp_.inbound, pos);  // the slot may be reused now
  free_slots_.push_back(e.slot);
  e.aead.reset();  // wipes the key
  events_({{"event", "sa-deleted"},
           {"direction", dir_name(dir)},
           {"spi", fmt::format("0x{:08x}", spi)},
           {"tunnel", tunnels_[t].name},
           {"reason", reason}});
}

dp::PacketByteCount SaDatabase::usage(const Entry& e, const dp::WorkerCounters& sums) const {
  return {sums.sa[e.slot].packets - e.baseline.packets, sums.sa[e.slot].bytes - e.baseline.bytes};
}

void SaDatabase::check_lifetimes(const dp::WorkerCounters& sums) {
  auto now = std::chrono::steady_clock::now();
  struct Hit {
    Key key;
    const char* why;
  };
  std::vector<Hit> hard;
  for (auto& [k, e] : entries_) {
    dp::PacketByteCount u = usage(e, sums);
    uint64_t age = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(now - e.installed).count());
    auto reached = [&](const SaLifetime& l) -> const char* {
      if (l.bytes && u.bytes >= l.bytes) return "bytes";
      if (l.packets && u.packets >= l.packets) return "packets";
      if (l.seconds && age >= l.seconds) return "seconds";
      return nullptr;
    };
    const char* seq_soft = nullptr;
    const char* seq_hard = nullptr;
    if (e.out && !e.out->esn) {
      uint64_t next = e.out->next_seq.load(std::memory_order_relaxed);
      if (next >= dp::kSeqLimitNoEsn) seq_hard = "sequence";
      if (next + kSeqSoftMargin >= dp::kSeqLimitNoEsn) seq_soft = "sequence";
    }
    const char* h = reached(e.params.hard);
    if (!h) h = seq_hard;
    const char* s = reached(e.params.soft);
    if (!s) s = seq_soft;
    if (!s && h && (e.params.soft.bytes || e.params.soft.packets || e.params.soft.seconds)) s = h;
    // A hard limit reached within one check interval still announces the
    // soft one first: agents start the rekey on soft.
    if (s && !e.soft_sent) {
      e.soft_sent = true;
      events_({{"event", "sa-expire"},
               {"kind", "soft"},
               {"reason", s},
               {"direction", dir_name(std::get<0>(k))},
               {"spi", fmt::format("0x{:08x}", std::get<1>(k))},
               {"tunnel", tunnels_[std::get<2>(k)].name}});
    }
    if (h) hard.push_back({k, h});
  }
  for (const Hit& hit : hard) {
    auto& [dir, spi, t] = hit.key;
    events_({{"event", "sa-expire"},
             {"kind", "hard"},
             {"reason", hit.why},
             {"direction", dir_name(dir)},
             {"spi", fmt::format("0x{:08x}", spi)},
             {"tunnel", tunnels_[t].name}});
    remove(dir, spi, t, "hard-expire");
  }
}

json SaDatabase::list(const dp::WorkerCounters& sums) const {
  json out = json::array();
  auto now = std::chrono::steady_clock::now();
  for (auto& [k, e] : entries_) {
    dp::PacketByteCount u = usage(e, sums);
    const SaParams& p = e.params;
    json j = {{"direction", dir_name(p.direction)},
              {"spi", fmt::format("0x{:08x}", p.spi)},
              {"tunnel", tunnels_[p.tunnel].name},
              {"algo", p.algo == SaAlgo::kAes128Gcm ? "aes128-gcm" : "aes256-gcm"},
              {"key_fingerprint", e.fingerprint},
              {"esn", p.esn},
              {"udp_encap", p.udp_encap},
              {"packets", u.packets},
              {"bytes", u.bytes},
              {"age_seconds", std::chrono::duration_cast<std::chrono::seconds>(now - e.installed).count()},
              {"lifetime", {{"soft", lifetime_json(p.soft)}, {"hard", lifetime_json(p.hard)}}}};
    if (e.out) {
      j["next_seq"] = e.out->next_seq.load();
      j["current"] = dp_.tunnels[p.tunnel].out_sa.load() == e.out.get();
    } else {
      j["replay_window"] = p.replay_window;
      j["replay_top"] = e.in->replay.top();
    }
    out.push_back(j);
  }
  return out;
}

bool SaDatabase::has_outbound(uint16_t tunnel) const { return dp_.tunnels[tunnel].out_sa.load() != nullptr; }

const dp::OutboundSa* SaDatabase::current_outbound(uint16_t tunnel) const { return dp_.tunnels[tunnel].out_sa.load(); }

}  // namespace espgw::control
