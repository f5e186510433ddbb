#include "control/sa_database.h"

#include "dataplane/rcu_sync.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <rte_cycles.h>
#include <rte_errno.h>

#include <algorithm>
#include <cmath>
#include <utility>

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

// What charon's kernel->expire(protocol, spi, dst, hard) needs, and the
// SA's other outer address: the SA as an IKE daemon names it (src, dst).
void add_addresses(json& ev, const SaParams& p) {
  const bool in = p.direction == SaDirection::kInbound;
  ev["src"] = format_ipv4(in ? p.remote_addr : p.local_addr);
  ev["dst"] = format_ipv4(in ? p.local_addr : p.remote_addr);
  ev["protocol"] = "esp";
}

json lifetime_json(const SaLifetime& l) { return {{"bytes", l.bytes}, {"packets", l.packets}, {"seconds", l.seconds}}; }

// What a retired outbound SA's counter is set to at a handover: above every
// SA's sequence limit (2^32 without ESN, kEsnSeqReserved = 2^63 with), and
// 2^62 below the 64-bit wrap, so late reservations on it are exhausted.
constexpr uint64_t kSeqClosed = uint64_t{3} << 62;
static_assert(kSeqClosed >= kEsnSeqReserved && kSeqClosed >= dp::kSeqLimitNoEsn);

void raise_to(std::atomic<uint64_t>& counter, uint64_t want) {
  uint64_t cur = counter.load(std::memory_order_relaxed);
  // Only ever forward; a worker's concurrent fetch_add makes the CAS retry.
  while (cur < want && !counter.compare_exchange_weak(cur, want, std::memory_order_relaxed)) {
  }
}
}  // namespace

std::string SaDatabase::fingerprint(std::span<const uint8_t> keymat) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(keymat.data(), keymat.size(), md, &n, EVP_sha256(), nullptr);
  return fmt::format("{:02x}{:02x}{:02x}{:02x}", md[0], md[1], md[2], md[3]);
}

SaDatabase::KeymatDigest SaDatabase::digest(std::span<const uint8_t> keymat) {
  KeymatDigest d{};
  unsigned int n = 0;
  if (EVP_Digest(keymat.data(), keymat.size(), d.data(), &n, EVP_sha256(), nullptr) != 1 || n != d.size())
    throw SaError("key: cannot compute the key material's digest (OpenSSL SHA-256 failed)");
  return d;
}

SaDatabase::SaDatabase(dp::Dataplane& dp, const std::vector<TunnelConfig>& tunnels, EventSink events,
                       TunnelChanged changed)
    : dp_(dp),
      tunnels_(tunnels),
      defaults_(tunnel_defaults(tunnels)),
      events_(std::move(events)),
      changed_(std::move(changed)),
      retired_(tunnels.size()) {
  for (uint32_t s = dp::kMaxSas; s-- > 0;) free_slots_.push_back(s);
}

SaDatabase::~SaDatabase() {
  // Workers are stopped by now (the gateway stops them first): unpublish and
  // let the entries' destructors wipe the keys.
  for (uint16_t t = 0; t < tunnels_.size(); t++) dp_.tunnels[t].out_sa.store(nullptr);
  for (auto& [k, e] : entries_)
    if (e.in) dp_.inbound->erase({e.in->spi, e.in->local_addr});
  dp_.inbound->reclaim();
}

void SaDatabase::synchronize() const {
  if (dp_.qsbr) dp::rcu_synchronize(dp_.qsbr);
}

std::string SaDatabase::describe(const SaParams& p) const {
  return fmt::format("SA {} 0x{:08x} {} {}", dir_name(p.direction), p.spi,
                     p.direction == SaDirection::kInbound ? "to" : "to peer",
                     format_ipv4(p.direction == SaDirection::kInbound ? p.local_addr : p.remote_addr));
}

std::map<SaDatabase::Key, SaDatabase::Entry>::const_iterator SaDatabase::find(const SaRef& ref) const {
  if (ref.destination) {
    auto it = entries_.find({ref.direction, ref.spi, *ref.destination});
    if (it != entries_.end() && ref.tunnel && it->second.params.tunnel != *ref.tunnel) return entries_.end();
    return it;
  }
  auto found = entries_.end();
  for (auto it = entries_.lower_bound({ref.direction, ref.spi, 0}); it != entries_.end(); ++it) {
    auto& [d, s, dst] = it->first;
    if (d != ref.direction || s != ref.spi) break;
    if (ref.tunnel && it->second.params.tunnel != *ref.tunnel) continue;
    if (found != entries_.end())
      throw SaError(fmt::format("SPI 0x{:08x} ({}) exists on several tunnels: name the tunnel or dst", ref.spi,
                                dir_name(ref.direction)));
    found = it;
  }
  return found;
}

SaDatabase::Iter SaDatabase::find(const SaRef& ref) {
  auto it = std::as_const(*this).find(ref);
  return it == entries_.end() ? entries_.end() : entries_.find(it->first);
}

std::map<SaDatabase::Key, SaDatabase::Entry>::const_iterator SaDatabase::find_existing(const SaRef& ref) const {
  auto it = find(ref);
  if (it == entries_.end()) {
    std::string where;
    if (ref.destination) where += " to " + format_ipv4(*ref.destination);
    if (ref.tunnel && *ref.tunnel < tunnels_.size()) where += " on " + tunnels_[*ref.tunnel].name;
    throw SaNotFound(fmt::format("no {} SA with SPI 0x{:08x}{}", dir_name(ref.direction), ref.spi, where));
  }
  return it;
}

bool SaDatabase::contains(SaDirection dir, uint32_t spi, uint16_t tunnel) const {
  for (auto it = entries_.lower_bound({dir, spi, 0}); it != entries_.end(); ++it) {
    auto& [d, s, dst] = it->first;
    if (d != dir || s != spi) break;
    if (it->second.params.tunnel == tunnel) return true;
  }
  return false;
}

std::vector<SaKey> SaDatabase::keys(std::optional<SaOrigin> origin) const {
  std::vector<SaKey> out;
  for (auto& [k, e] : entries_)
    if (!origin || e.params.origin == *origin)
      out.push_back({std::get<0>(k), std::get<1>(k), std::get<2>(k), e.params.tunnel, e.params.origin});
  return out;
}

// The database's own guard: SaParams normally come from validate_sa_spec(),
// but nothing that would corrupt a worker-side object gets past here either.
void SaDatabase::check_params(const SaParams& p) const {
  if (p.tunnel >= tunnels_.size()) throw SaError(fmt::format("unknown tunnel index {}", p.tunnel));
  if (p.spi < 256) throw SaError(fmt::format("spi: {} is reserved (0..255)", p.spi));
  const crypto::AeadAlgo algo = to_algo(p.algo);
  if (p.keymat.size() != crypto::keymat_len(algo))
    throw SaError(fmt::format("key: {} needs {} bytes of key || salt, got {}",
                              p.algo == SaAlgo::kAes128Gcm ? "aes128-gcm" : "aes256-gcm", crypto::keymat_len(algo),
                              p.keymat.size()));
  if (p.local_addr == 0 || p.remote_addr == 0) throw SaError("outer addresses missing (validate the SA first)");
  if (p.local_selectors.size() > dp::kMaxSelectors || p.remote_selectors.size() > dp::kMaxSelectors)
    throw SaError(fmt::format("at most {} selectors per side", dp::kMaxSelectors));
  if (p.encap && (p.encap->local == 0 || p.encap->remote == 0)) throw SaError("encap: UDP ports must be 1..65535");
  if (p.direction == SaDirection::kOutbound) {
    if (p.initial_seq == 0) throw SaError("seq: sequence numbers start at 1");
    if (p.initial_seq >= (p.esn ? kEsnSeqReserved : dp::kSeqLimitNoEsn))
      throw SaError(fmt::format("seq: {} is beyond the SA's sequence space", p.initial_seq));
  } else if (p.replay_window != 0 &&
             (p.replay_window < dp::ReplayWindow::kMinWindow || p.replay_window > dp::ReplayWindow::kMaxWindow)) {
    throw SaError(fmt::format("replay_window: {} is neither 0 (off) nor in {}..{}", p.replay_window,
                              dp::ReplayWindow::kMinWindow, dp::ReplayWindow::kMaxWindow));
  }
}

std::unique_ptr<dp::OutboundSa> SaDatabase::build_outbound(const SaParams& p, const crypto::AeadContext* aead,
                                                           uint32_t slot) const {
  const TunnelConfig& t = tunnels_[p.tunnel];
  auto sa = std::make_unique<dp::OutboundSa>();
  sa->spi = p.spi;
  sa->esn = p.esn;
  sa->next_seq.store(p.initial_seq);
  sa->outer_src = p.local_addr;
  sa->outer_dst = p.remote_addr;
  if (p.encap) {
    sa->udp_src_port = p.encap->local;
    sa->udp_dst_port = p.encap->remote;
  }
  sa->ttl = t.ttl;
  sa->dscp = t.dscp;
  sa->df = t.df == DfPolicyConfig::kSet     ? dp::DfPolicy::kSet
           : t.df == DfPolicyConfig::kClear ? dp::DfPolicy::kClear
                                            : dp::DfPolicy::kCopy;
  sa->aead = aead;
  sa->tunnel = p.tunnel;
  sa->slot = slot;
  // ESN: numbers from 2^63 up are the handover's closed mark (see replace_outbound).
  sa->seq_limit = p.esn ? kEsnSeqReserved : dp::kSeqLimitNoEsn;
  for (const auto& s : p.local_selectors) sa->local_sel[sa->nb_local_sel++] = {s.addr, prefix_mask(s.len)};
  for (const auto& s : p.remote_selectors) sa->remote_sel[sa->nb_remote_sel++] = {s.addr, prefix_mask(s.len)};
  dp::finalize_outbound_sa(*sa);  // the per-SA outer header template the workers use
  return sa;
}

std::unique_ptr<dp::InboundSa> SaDatabase::build_inbound(const SaParams& p, const crypto::AeadContext* aead,
                                                         uint32_t slot) const {
  auto sa = std::make_unique<dp::InboundSa>();
  sa->spi = p.spi;
  sa->local_addr = p.local_addr;
  sa->esn = p.esn;
  sa->udp_port = p.encap ? p.encap->local : 0;
  sa->aead = aead;
  sa->tunnel = p.tunnel;
  sa->slot = slot;
  if (!sa->replay.reset(p.replay_window, p.esn))
    throw SaError(fmt::format("replay_window: {} is neither 0 (off) nor in {}..{}", p.replay_window,
                              dp::ReplayWindow::kMinWindow, dp::ReplayWindow::kMaxWindow));
  for (const auto& s : p.local_selectors) sa->local_sel[sa->nb_local_sel++] = {s.addr, prefix_mask(s.len)};
  for (const auto& s : p.remote_selectors) sa->remote_sel[sa->nb_remote_sel++] = {s.addr, prefix_mask(s.len)};
  if (sa->nb_remote_sel && !sa->nb_local_sel) sa->local_sel[sa->nb_local_sel++] = {0, 0};
  if (sa->nb_local_sel && !sa->nb_remote_sel) sa->remote_sel[sa->nb_remote_sel++] = {0, 0};
  return sa;
}

void SaDatabase::add(const SaParams& p) {
  check_params(p);
  const Key k = key_of(p);
  if (auto it = entries_.find(k); it != entries_.end()) {
    const std::string& on = tunnels_[it->second.params.tunnel].name;
    // The wire names an inbound SA by (SPI, our address): unique across tunnels sharing the address.
    if (p.direction == SaDirection::kInbound)
      throw SaError(fmt::format("inbound SPI 0x{:08x} is already used on {} for address {}", p.spi, on,
                                format_ipv4(p.local_addr)));
    throw SaError(fmt::format("SA out 0x{:08x} to {} on {} exists (replace-sa updates it; a new key needs a new SPI)",
                              p.spi, format_ipv4(p.remote_addr), on));
  }
  // An outbound SA moved by update-sa (MOBIKE, NAT) is no longer at its
  // tunnel's remote address; a second SA with its SPI on that tunnel could
  // not be named by delete-sa / update-sa (both name the SA by SPI and tunnel).
  if (p.direction == SaDirection::kOutbound)
    for (auto it = entries_.lower_bound({p.direction, p.spi, 0}); it != entries_.end(); ++it) {
      if (std::get<0>(it->first) != p.direction || std::get<1>(it->first) != p.spi) break;
      if (it->second.params.tunnel == p.tunnel)
        throw SaError(fmt::format("SA out 0x{:08x} exists on {} (to {}, moved by update-sa); a tunnel has one "
                                  "outbound SA per SPI",
                                  p.spi, tunnels_[p.tunnel].name, format_ipv4(it->second.params.remote_addr)));
    }
  if (free_slots_.empty()) throw SaError(fmt::format("SA table full ({} SAs)", dp::kMaxSas));
  const bool inbound = p.direction == SaDirection::kInbound;
  const KeymatDigest used = digest(p.keymat);
  if (used_keymat_[!inbound].count(used))
    throw SaError(fmt::format(
        "key: this key || salt was already installed on an {} SA since the daemon started; using it {} too would "
        "repeat GCM nonces: both ends number their packets from 1 under one key (each direction needs its own key)",
        inbound ? "outbound" : "inbound", inbound ? "inbound" : "outbound"));
  if (used_keymat_[inbound].count(used))
    throw SaError(inbound
                      ? "key: this key || salt was already installed on an inbound SA since the daemon started; "
                        "installing it again would restart the replay window and accept every packet sent under "
                        "it again (a new SA needs a new key)"
                      : "key: this key || salt was already installed on an outbound SA since the daemon started; "
                        "installing it again would repeat GCM nonces (salt || sequence number) under one key, "
                        "whatever the SPI (a new SA needs a new key)");

  Entry e;
  e.params = p;
  e.fingerprint = fingerprint(p.keymat);
  e.aead = std::make_unique<crypto::AeadContext>(to_algo(p.algo), p.keymat);
  e.slot = free_slots_.back();
  if (p.direction == SaDirection::kOutbound) e.out = build_outbound(p, e.aead.get(), e.slot);
  else e.in = build_inbound(p, e.aead.get(), e.slot);  // throws before anything changes
  e.installed = std::chrono::steady_clock::now();
  e.baseline = slot_counts(e.slot);
  if (e.in) {
    // Adding a key is atomic for readers (inbound_sa_table.h).
    try {
      dp_.inbound->set({e.in->spi, e.in->local_addr}, e.in.get());
    } catch (const std::exception& x) {
      throw SaError(x.what());
    }
    if (dp_.inbound->wants_compaction()) {  // deleted slots fill the table: rebuild it
      try {
        auto old = dp_.inbound->compact();
        synchronize();  // no worker probes the old array any more
      } catch (const std::bad_alloc&) {
        // The fuller array still works; the next install tries again.
      }
    }
  }
  free_slots_.pop_back();
  slot_limit_ = std::max(slot_limit_, e.slot + 1);
  used_keymat_[inbound].insert(used);  // only an SA that was installed used its key
  e.install_order = ++install_counter_;
  entries_.emplace(k, std::move(e));
  if (p.direction == SaDirection::kOutbound) publish_outbound(p.tunnel);
  installs_++;
  events_({{"event", "sa-installed"},
           {"direction", dir_name(p.direction)},
           {"spi", fmt::format("0x{:08x}", p.spi)},
           {"tunnel", tunnels_[p.tunnel].name},
           {"origin", to_string(p.origin)},
           {"replaced", false}});
}

void SaDatabase::reconcile(const SaParams& p) {
  auto it = entries_.find(key_of(p));
  if (it == entries_.end()) {
    add(p);
    return;
  }
  const SaParams& cur = it->second.params;
  if (cur.tunnel != p.tunnel)
    throw SaError(fmt::format("{} belongs to tunnel {}, not {}", describe(p), tunnels_[cur.tunnel].name,
                              p.tunnel < tunnels_.size() ? tunnels_[p.tunnel].name : "?"));
  // Constant-time key comparison; the message never says which bytes differ.
  const bool same_key = cur.keymat.equals(p.keymat);
  if (!same_key || cur.algo != p.algo || cur.esn != p.esn)
    throw SaError(fmt::format("{}: a new key needs a new SPI (the installed SA has a different {})", describe(p),
                              !same_key ? "key" : cur.algo != p.algo ? "algorithm" : "ESN setting"));
  apply(it, p, "reconcile");
}

void SaDatabase::update(const SaUpdate& u) {
  validate_sa_update(u, defaults_);
  SaRef ref{u.direction, u.spi, std::nullopt, u.dst};
  if (!u.tunnel.empty()) {
    uint16_t t = 0;
    while (tunnels_[t].name != u.tunnel) t++;  // validate_sa_update found it
    ref.tunnel = t;
  }
  auto it = entries_.find(find_existing(ref)->first);
  SaParams next = it->second.params;
  if (u.encap) {
    if (!next.encap) throw SaError("encap: the SA runs plain ESP; UDP encapsulation needs a new SA");
    next.encap = *u.encap;
  }
  if (u.remote_addr) next.remote_addr = *u.remote_addr;
  if (u.soft) next.soft = *u.soft;
  if (u.hard) next.hard = *u.hard;
  validate_sa_lifetimes(next.soft, next.hard);
  apply(it, std::move(next), "update");
}

// Everything that can fail is checked (and every new object built) before
// the first change, so a refused request changes nothing.
void SaDatabase::apply(Iter it, SaParams next, const char* why) {
  Entry& e = it->second;
  const SaParams& cur = e.params;
  check_params(next);
  const Key nk = key_of(next);
  if (nk != it->first && entries_.count(nk))
    throw SaError(fmt::format("{} exists already; cannot move {} there", describe(next), describe(cur)));
  // The window's size is part of its state: a live SA keeps the one it has.
  next.replay_window = cur.replay_window;
  std::unique_ptr<dp::OutboundSa> new_out;
  std::unique_ptr<dp::InboundSa> new_in;
  auto same = [](const std::vector<Ipv4Prefix>& a, const std::vector<Ipv4Prefix>& b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                      [](const Ipv4Prefix& x, const Ipv4Prefix& y) { return x.addr == y.addr && x.len == y.len; });
  };
  const bool selectors_changed =
      !same(next.local_selectors, cur.local_selectors) || !same(next.remote_selectors, cur.remote_selectors);
  if (e.out && (next.local_addr != cur.local_addr || next.remote_addr != cur.remote_addr || next.encap != cur.encap ||
                selectors_changed))
    new_out = build_outbound(next, e.aead.get(), e.slot);
  if (e.in && (next.encap != cur.encap || selectors_changed)) new_in = build_inbound(next, e.aead.get(), e.slot);

  // Commit: nothing below throws.
  if (new_out) replace_outbound(e, std::move(new_out));
  if (new_in) replace_inbound(e, std::move(new_in));
  if (e.out) raise_to(e.out->next_seq, next.initial_seq);  // forward only
  next.origin = cur.origin;            // the identity keeps its installer
  next.initial_seq = cur.initial_seq;  // what it was installed with (display)
  e.params = std::move(next);
  if (nk != it->first) {
    auto node = entries_.extract(it);
    node.key() = nk;
    entries_.insert(std::move(node));
  }
  const SaParams& p = entries_.at(nk).params;
  events_({{"event", "sa-updated"},
           {"direction", dir_name(p.direction)},
           {"spi", fmt::format("0x{:08x}", p.spi)},
           {"tunnel", tunnels_[p.tunnel].name},
           {"reason", why}});
}

// Outbound handover, when an SA's outer header changes (NAT rebinding,
// MOBIKE). Workers reserve sequence numbers with one fetch_add on the
// OutboundSa they loaded for a burst, and may keep using the old object for
// the rest of that burst after the new one is published. The two counters
// must never hand out the same number, so the old one is closed before the
// new one opens:
//   1. s = old.next_seq.exchange(kSeqClosed). All read-modify-writes of one
//      atomic are totally ordered: every reservation ordered before the
//      exchange got numbers < s; every one after it gets numbers >=
//      kSeqClosed, above the SA's limit, so that packet is dropped as
//      seq_exhausted and never sent (only a burst racing this handover).
//   2. new.next_seq = s, then publish new (release; workers load acquire).
//   3. synchronize; free old.
// Old's valid numbers are < s <= new's: no number is used twice whatever the
// timing, and the sequence keeps rising on the wire.
void SaDatabase::replace_outbound(Entry& e, std::unique_ptr<dp::OutboundSa> next) {
  dp::OutboundSa* old = e.out.get();
  dp::Tunnel& t = dp_.tunnels[e.params.tunnel];
  const bool current = t.out_sa.load(std::memory_order_relaxed) == old;
  const uint64_t s = old->next_seq.exchange(kSeqClosed, std::memory_order_acq_rel);
  next->next_seq.store(s, std::memory_order_relaxed);
  if (current) t.out_sa.store(next.get(), std::memory_order_release);
  std::unique_ptr<dp::OutboundSa> retired = std::move(e.out);
  e.out = std::move(next);
  synchronize();  // no worker holds `retired` any more
}

// Inbound handover, when what a worker matches on changes (our UDP port,
// selectors). The replay window has one writer, a worker, so it can only be
// copied once no worker uses the old object:
//   1. the hash entry points at nothing: lookups miss (unknown_spi) for the
//      few microseconds of step 2, instead of racing two windows;
//   2. synchronize: no worker holds old; its window is final;
//   3. new.replay = old.replay, exactly, then publish new.
// A sequence number accepted before is a replay after.
void SaDatabase::replace_inbound(Entry& e, std::unique_ptr<dp::InboundSa> next) {
  dp::InboundSa* old = e.in.get();
  dp::InboundKey key{old->spi, old->local_addr};
  dp_.inbound->set(key, nullptr);  // existing key: one atomic pointer store
  synchronize();
  next->replay.copy_state_from(old->replay);
  dp_.inbound->set(key, next.get());
  std::unique_ptr<dp::InboundSa> retired = std::move(e.in);
  e.in = std::move(next);
}

// The tunnel's current outbound SA is its newest; publish it (or nullptr).
void SaDatabase::publish_outbound(uint16_t tunnel) {
  const Entry* newest = nullptr;
  for (auto& [k, e] : entries_)
    if (e.out && e.params.tunnel == tunnel && (!newest || e.install_order > newest->install_order)) newest = &e;
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

void SaDatabase::remove(const SaRef& ref, const char* reason) {
  erase(entries_.find(find_existing(ref)->first), reason);
}

dp::PacketByteCount SaDatabase::slot_counts(uint32_t slot) const {
  dp::PacketByteCount c{0, 0};
  for (uint16_t w = 0; w < dp_.nb_workers; w++) {
    c.packets += dp_.counters[w]->sa[slot].packets;
    c.bytes += dp_.counters[w]->sa[slot].bytes;
  }
  return c;
}

std::vector<SaDatabase::TunnelTraffic> SaDatabase::tunnel_traffic(const dp::WorkerCounters& sums) const {
  std::vector<TunnelTraffic> out = retired_;
  out.resize(std::max<size_t>(out.size(), dp_.nb_tunnels));
  for (const auto& [k, e] : entries_) {
    const dp::PacketByteCount u = usage(e, sums);
    dp::PacketByteCount& to = std::get<0>(k) == SaDirection::kOutbound ? out[e.params.tunnel].out
                                                                         : out[e.params.tunnel].in;
    to.packets += u.packets;
    to.bytes += u.bytes;
  }
  return out;
}

SaUsage SaDatabase::query(const SaRef& ref, const dp::WorkerCounters& sums) const {
  auto it = find_existing(ref);
  const Entry& e = it->second;
  dp::PacketByteCount u = usage(e, sums);
  SaUsage out;
  out.key = {std::get<0>(it->first), std::get<1>(it->first), std::get<2>(it->first), e.params.tunnel,
             e.params.origin};
  out.packets = u.packets;
  out.bytes = u.bytes;
  out.idle_seconds = idle_seconds(e, sums);
  return out;
}

size_t SaDatabase::remove_all(std::optional<SaOrigin> origin, const char* reason) {
  std::vector<Key> doomed;
  for (auto& [k, e] : entries_)
    if (!origin || e.params.origin == *origin) doomed.push_back(k);
  for (const Key& k : doomed) erase(entries_.find(k), reason);
  return doomed.size();
}

void SaDatabase::erase(Iter it, const char* reason) {
  Entry e = std::move(it->second);
  const SaDirection dir = std::get<0>(it->first);
  const uint32_t spi = std::get<1>(it->first);
  const uint16_t t = e.params.tunnel;
  entries_.erase(it);
  if (e.in) {
    dp_.inbound->erase({e.in->spi, e.in->local_addr});
  } else {
    publish_outbound(t);  // falls back to the next newest, or takes the tunnel down
  }
  synchronize();
  // No worker counts on the SA any more: its counts are final. The tunnel
  // keeps them (tunnel_traffic) before the slot can be reused.
  const dp::PacketByteCount fin = slot_counts(e.slot);
  dp::PacketByteCount& r = dir == SaDirection::kOutbound ? retired_[t].out : retired_[t].in;
  r.packets += fin.packets - e.baseline.packets;
  r.bytes += fin.bytes - e.baseline.bytes;
  if (e.in) dp_.inbound->reclaim();  // its slot may be claimed by another key now
  free_slots_.push_back(e.slot);
  e.aead.reset();  // wipes the key schedule; e.params.keymat wipes itself
  json ev = {{"event", "sa-deleted"},
             {"direction", dir_name(dir)},
             {"spi", fmt::format("0x{:08x}", spi)},
             {"tunnel", tunnels_[t].name},
             {"reason", reason}};
  add_addresses(ev, e.params);
  events_(ev);
}

dp::PacketByteCount SaDatabase::usage(const Entry& e, const dp::WorkerCounters& sums) const {
  return {sums.sa[e.slot].packets - e.baseline.packets, sums.sa[e.slot].bytes - e.baseline.bytes};
}

// The slot's last_tsc is the most recent burst any worker counted a packet
// in; a slot reused by a new SA still holds its predecessor's until the new
// SA's first packet, hence "used" is decided by the packet count since
// install (every write of the predecessor happened before the slot was freed).
std::optional<double> SaDatabase::idle_seconds(const Entry& e, const dp::WorkerCounters& sums) const {
  if (usage(e, sums).packets == 0) return std::nullopt;
  const uint64_t now = rte_rdtsc(), last = sums.sa[e.slot].last_tsc;
  const double s = now > last ? double(now - last) / double(rte_get_tsc_hz()) : 0.0;
  return std::round(s * 1000.0) / 1000.0;
}

void SaDatabase::check_lifetimes(const dp::WorkerCounters& sums) {
  auto now = std::chrono::steady_clock::now();
  struct Hit {
    Key key;
    uint16_t tunnel;
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
    // ESN too: an SA installed near the top of its 64-bit space (seq up to
    // 2^63-1 is accepted) runs out like any other, and the agent must hear
    // of it, or the tunnel silently drops everything as seq_exhausted.
    if (e.out) {
      const uint64_t limit = e.out->esn ? kEsnSeqReserved : dp::kSeqLimitNoEsn;
      uint64_t next = e.out->next_seq.load(std::memory_order_relaxed);
      if (next >= limit) seq_hard = "sequence";
      if (next + kSeqSoftMargin >= limit) seq_soft = "sequence";
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
      json ev = {{"event", "sa-expire"},
                 {"kind", "soft"},
                 {"reason", s},
                 {"direction", dir_name(std::get<0>(k))},
                 {"spi", fmt::format("0x{:08x}", std::get<1>(k))},
                 {"tunnel", tunnels_[e.params.tunnel].name}};
      add_addresses(ev, e.params);
      events_(ev);
    }
    if (h) hard.push_back({k, e.params.tunnel, h});
  }
  for (const Hit& hit : hard) {
    auto& [dir, spi, dst] = hit.key;
    auto it = entries_.find(hit.key);
    if (it == entries_.end()) continue;
    json ev = {{"event", "sa-expire"},
               {"kind", "hard"},
               {"reason", hit.why},
               {"direction", dir_name(dir)},
               {"spi", fmt::format("0x{:08x}", spi)},
               {"tunnel", tunnels_[hit.tunnel].name}};
    add_addresses(ev, it->second.params);
    events_(ev);
    erase(it, "hard-expire");
  }
}

json SaDatabase::list(const dp::WorkerCounters& sums) const {
  json out = json::array();
  auto now = std::chrono::steady_clock::now();
  for (auto& [k, e] : entries_) {
    dp::PacketByteCount u = usage(e, sums);
    const std::optional<double> idle = idle_seconds(e, sums);
    const SaParams& p = e.params;
    json j = {{"direction", dir_name(p.direction)},
              {"spi", fmt::format("0x{:08x}", p.spi)},
              {"tunnel", tunnels_[p.tunnel].name},
              {"algo", p.algo == SaAlgo::kAes128Gcm ? "aes128-gcm" : "aes256-gcm"},
              {"key_fingerprint", e.fingerprint},
              {"esn", p.esn},
              {"udp_encap", p.encap.has_value()},
              {"origin", to_string(p.origin)},
              {"packets", u.packets},
              {"bytes", u.bytes},
              {"age_seconds", std::chrono::duration_cast<std::chrono::seconds>(now - e.installed).count()},
              {"idle_seconds", idle ? json(*idle) : json(nullptr)},
              {"lifetime", {{"soft", lifetime_json(p.soft)}, {"hard", lifetime_json(p.hard)}}}};
    auto prefixes = [](const std::vector<Ipv4Prefix>& v) {
      json a = json::array();
      for (const auto& x : v) a.push_back(fmt::format("{}/{}", format_ipv4(x.addr), x.len));
      return a;
    };
    if (!p.local_selectors.empty()) {  // enforced
      j["local_selectors"] = prefixes(p.local_selectors);
      j["remote_selectors"] = prefixes(p.remote_selectors);
    }
    if (p.traffic_selectors)
      j["traffic_selectors"] = {{"local", prefixes(p.traffic_selectors->local)},
                                {"remote", prefixes(p.traffic_selectors->remote)}};
    if (e.out) {
      j["next_seq"] = e.out->next_seq.load();
      j["current"] = dp_.tunnels[p.tunnel].out_sa.load() == e.out.get();
      j["remote"] = format_ipv4(p.remote_addr);
    } else {
      j["replay_window"] = p.replay_window;
      j["replay_top"] = e.in->replay.top();
      j["local"] = format_ipv4(p.local_addr);
    }
    out.push_back(j);
  }
  return out;
}

bool SaDatabase::has_outbound(uint16_t tunnel) const { return dp_.tunnels[tunnel].out_sa.load() != nullptr; }

const dp::OutboundSa* SaDatabase::current_outbound(uint16_t tunnel) const { return dp_.tunnels[tunnel].out_sa.load(); }

}  // namespace espgw::control
