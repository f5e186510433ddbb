// The SA database: every SA an IKE agent (or the config file) installed.
//
// The control thread is its only writer. It builds the worker-side objects
// (OutboundSa, InboundSa, their AEAD contexts) completely, publishes them
// with one store (a tunnel's out_sa pointer, or the lock-free inbound hash),
// and frees them, wiping the keys, only after an RCU grace period (dataplane/rcu_sync.h):
// when no worker can still hold a pointer to them.
//
// Rekey, make-before-break: a new inbound SA is live as soon as it is added;
// a new outbound SA becomes its tunnel's current one (the newest by install
// order wins) and workers switch at a burst boundary; older SAs stay until
// deleted.
//
// Identity: (direction, SPI, destination): our address for inbound, the
// peer's for outbound. The identity owns the SA's state: next sequence
// number, replay window, counter slot and lifetime usage, install time and
// install order. reconcile() and update() (replace-sa, XFRM NEWSA/UPDSA and
// re-dumps, NAT rebinding, MOBIKE) keep all of it: the sequence number
// never moves back, the window is never reset, a superseded outbound SA
// never becomes current again, and a different key under the same identity
// is refused. When what a worker reads must change (outer addresses, UDP
// ports, selectors), a new worker-side object takes over the state: see
// replace_outbound() / replace_inbound() for why no sequence number is
// used twice and no replay is accepted.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <tuple>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/config.h"
#include "control/sa_spec.h"
#include "crypto/aead.h"
#include "dataplane/dataplane.h"

namespace espgw::control {

// The identity of an SA (direction, SPI, destination) and the tunnel it
// belongs to: inbound destination = our local address, outbound = the
// peer's address.
struct SaKey {
  SaDirection direction;
  uint32_t spi;
  uint32_t destination;  // host order
  uint16_t tunnel;
  SaOrigin origin;
  bool operator==(const SaKey&) const = default;
};

// How a request names an existing SA: direction and SPI, and its tunnel
// and/or its destination (inbound: our local address; outbound: the peer's,
// after any update-sa move). Neither: the SPI must be unique in the direction.
struct SaRef {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  std::optional<uint16_t> tunnel;
  std::optional<uint32_t> destination;  // host order
};

// What query-sa reports of one SA.
struct SaUsage {
  SaKey key;
  uint64_t packets = 0, bytes = 0;
  std::optional<double> idle_seconds;  // since a worker last counted a packet on it; empty: never
};

class SaDatabase {
 public:
  using EventSink = std::function<void(const nlohmann::json&)>;
  // The tunnel gains its first outbound SA (true) or is about to lose its last (false).
  using TunnelChanged = std::function<void(uint16_t tunnel, bool has_sa)>;

  SaDatabase(dataplane::Dataplane& dp, const std::vector<TunnelConfig>& tunnels, EventSink events,
             TunnelChanged changed);
  ~SaDatabase();
  SaDatabase(const SaDatabase&) = delete;
  SaDatabase& operator=(const SaDatabase&) = delete;

  // A new identity. Throws SaError (state unchanged) when the identity (or
  // an inbound SPI on the same local address) exists, the table is full, the
  // parameters are invalid, or the key material (key || salt) was already
  // installed since the database was created, in either direction (see
  // used_keymat_).
  void add(const SaParams& p);
  // Absent: add. Present with the same algorithm, key and ESN: changes only
  // what may change on a live SA (encap ports, outer addresses, lifetimes,
  // selectors) and keeps all state (sequence number, replay window,
  // counters, lifetime usage, install order). A higher initial_seq moves the
  // counter forward; a lower one is ignored. A different key, algorithm or
  // ESN: SaError "a new key needs a new SPI", nothing changed.
  void reconcile(const SaParams& p);
  // Validated (validate_sa_update), same state rules as reconcile.
  void update(const SaUpdate& u);
  // Deletes the SA `ref` names; SaNotFound when there is none.
  void remove(const SaRef& ref, const char* reason = "request");
  // Deletes every SA (of `origin` when given); returns how many.
  size_t remove_all(std::optional<SaOrigin> origin, const char* reason);

  // Soft/hard lifetimes (bytes, packets, seconds, sequence space), from the
  // workers' counters summed by the caller. Raises events; hard removes.
  void check_lifetimes(const dataplane::WorkerCounters& sums);

  nlohmann::json list(const dataplane::WorkerCounters& sums) const;
  std::vector<SaKey> keys(std::optional<SaOrigin> origin = std::nullopt) const;
  bool has_outbound(uint16_t tunnel) const;
  bool contains(SaDirection dir, uint32_t spi, uint16_t tunnel) const;
  // Whether an SA with this identity (direction, SPI, destination) exists.
  bool contains_identity(SaDirection dir, uint32_t spi, uint32_t destination) const {
    return entries_.count({dir, spi, destination}) != 0;
  }
  // Each tunnel's traffic (index = tunnel index): the sum of its SAs' counts
  // (out: its outbound SAs, in: its inbound ones) and of those of its SAs
  // deleted since the database was created. The workers count a packet on
  // its SA only (dataplane/counters.h); this is the tunnel's count.
  struct TunnelTraffic {
    dataplane::PacketByteCount out{0, 0}, in{0, 0};
  };
  std::vector<TunnelTraffic> tunnel_traffic(const dataplane::WorkerCounters& sums) const;
  // Counters and last use of the SA `ref` names; SaNotFound when none.
  SaUsage query(const SaRef& ref, const dataplane::WorkerCounters& sums) const;
  const dataplane::OutboundSa* current_outbound(uint16_t tunnel) const;
  size_t size() const { return entries_.size(); }
  // Every SA slot ever used is below this (slots are taken lowest first and
  // reused): what a reader of the per-worker SA counters needs to sum.
  uint32_t slot_limit() const { return slot_limit_; }
  uint64_t installs() const { return installs_; }
  // What validate_sa_spec() needs (index = tunnel index).
  std::span<const TunnelDefaults> tunnels() const { return defaults_; }

  // Short, non-reversible name of key material for lists and logs.
  static std::string fingerprint(std::span<const uint8_t> keymat);

 private:
  struct Entry {
    SaParams params;
    std::string fingerprint;
    std::unique_ptr<crypto::AeadContext> aead;
    std::unique_ptr<dataplane::OutboundSa> out;
    std::unique_ptr<dataplane::InboundSa> in;
    uint32_t slot = 0;
    dataplane::PacketByteCount baseline{0, 0};  // slot counters at install
    std::chrono::steady_clock::time_point installed;
    uint64_t install_order = 0;
    bool soft_sent = false;
  };
  // (direction, SPI, destination): the identity.
  using Key = std::tuple<SaDirection, uint32_t, uint32_t>;
  using Iter = std::map<Key, Entry>::iterator;

  static Key key_of(const SaParams& p) {
    return {p.direction, p.spi, p.direction == SaDirection::kInbound ? p.local_addr : p.remote_addr};
  }
  // The SA `ref` names, or end(); throws when the SPI alone is ambiguous.
  Iter find(const SaRef& ref);
  std::map<Key, Entry>::const_iterator find(const SaRef& ref) const;
  // find(), or SaNotFound naming what was asked for.
  std::map<Key, Entry>::const_iterator find_existing(const SaRef& ref) const;
  void check_params(const SaParams& p) const;
  std::unique_ptr<dataplane::OutboundSa> build_outbound(const SaParams& p, const crypto::AeadContext* aead,
                                                        uint32_t slot) const;
  std::unique_ptr<dataplane::InboundSa> build_inbound(const SaParams& p, const crypto::AeadContext* aead,
                                                      uint32_t slot) const;
  // Moves a live SA to `next` (same key, algorithm, ESN), keeping its state.
  void apply(Iter it, SaParams next, const char* why);
  void replace_outbound(Entry& e, std::unique_ptr<dataplane::OutboundSa> next);
  void replace_inbound(Entry& e, std::unique_ptr<dataplane::InboundSa> next);
  void erase(Iter it, const char* reason);
  void publish_outbound(uint16_t tunnel);
  void synchronize() const;
  dataplane::PacketByteCount usage(const Entry& e, const dataplane::WorkerCounters& sums) const;
  // A counter slot's packets and bytes, summed over the workers' blocks.
  dataplane::PacketByteCount slot_counts(uint32_t slot) const;
  // Seconds (millisecond precision) since a worker last counted a packet on
  // the SA; empty when none has since it was installed.
  std::optional<double> idle_seconds(const Entry& e, const dataplane::WorkerCounters& sums) const;
  std::string describe(const SaParams& p) const;

  dataplane::Dataplane& dp_;
  std::vector<TunnelConfig> tunnels_;
  std::vector<TunnelDefaults> defaults_;
  EventSink events_;
  TunnelChanged changed_;
  std::map<Key, Entry> entries_;
  std::vector<uint32_t> free_slots_;
  uint32_t slot_limit_ = 0;
  // Per tunnel: the final counts of its deleted SAs (see tunnel_traffic).
  std::vector<TunnelTraffic> retired_;
  uint64_t install_counter_ = 0;
  uint64_t installs_ = 0;
  // SHA-256 of every key || salt installed, per direction, for the life of
  // the process (never the keys; a digest of a random key reveals nothing).
  // Outbound: the GCM nonce is salt || sequence number, whatever the SPI, so
  // a key installed again (after a delete, a hard expiry, under another SPI)
  // would send sequence 1, 2, ... under it a second time. Inbound: a key
  // installed again gets a fresh replay window that accepts every packet
  // recorded under the old SA. Across directions: the peer numbers its
  // packets from 1 under the inbound key as we do under the outbound one, so
  // one key both ways repeats every nonce. Entries are never removed.
  using KeymatDigest = std::array<uint8_t, 32>;
  static KeymatDigest digest(std::span<const uint8_t> keymat);
  std::set<KeymatDigest> used_keymat_[2];  // index: SaDirection == kInbound
};

}  // namespace espgw::control
