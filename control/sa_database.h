// The SA database: every SA an IKE agent (or the config file) installed.
//
// The control thread is its only writer. It builds the worker-side objects
// (OutboundSa, InboundSa, their AEAD contexts) completely, publishes them
// with one store (a tunnel's out_sa pointer, or the lock-free inbound hash),
// and frees them, wiping the keys, only after rte_rcu_qsbr_synchronize():
// when no worker can still hold a pointer to them.
//
// Rekey, make-before-break: a new inbound SA is live as soon as it is added;
// a new outbound SA becomes its tunnel's current one (the newest wins) and
// workers switch at a burst boundary; older SAs stay until deleted.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control/config.h"
#include "crypto/aead.h"
#include "dataplane/dataplane.h"

namespace espgw::control {

class SaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct SaLifetime {
  uint64_t bytes = 0;    // 0 = no limit
  uint64_t packets = 0;
  uint64_t seconds = 0;
};

struct SaParams {
  SaDirection direction = SaDirection::kOutbound;
  uint32_t spi = 0;
  uint16_t tunnel = 0;
  SaAlgo algo = SaAlgo::kAes128Gcm;
  std::vector<uint8_t> keymat;         // key || salt
  bool esn = false;
  uint32_t replay_window = 1024;       // inbound
  uint64_t initial_seq = 1;            // outbound
  bool udp_encap = false;              // RFC 3948
  uint16_t udp_sport = 4500, udp_dport = 4500;  // outbound: ours/peer's; inbound: dport is ours
  SaLifetime soft, hard;
  std::vector<Ipv4Prefix> local_selectors, remote_selectors;
};

// What the database needs to know about a tunnel.
struct TunnelEndpoints {
  std::string name;
  uint32_t local, remote;
  uint8_t ttl;
  int16_t dscp;
  DfPolicyConfig df;
};

class SaDatabase {
 public:
  using EventSink = std::function<void(const nlohmann::json&)>;
  // The tunnel gains its first outbound SA (true) or is about to lose its last (false).
  using TunnelChanged = std::function<void(uint16_t tunnel, bool has_sa)>;

  SaDatabase(dataplane::Dataplane& dp, std::vector<TunnelEndpoints> tunnels, EventSink events,
             TunnelChanged changed);
  ~SaDatabase();
  SaDatabase(const SaDatabase&) = delete;
  SaDatabase& operator=(const SaDatabase&) = delete;

  // Throws SaError (state unchanged) on: duplicate SPI (add), missing SA
  // (replace), wrong key length, bad replay window, too many SAs/selectors.
  void add(const SaParams& p, bool replace = false);
  // Deletes the SA with this SPI and direction (on `tunnel` when given).
  void remove(SaDirection dir, uint32_t spi, std::optional<uint16_t> tunnel = std::nullopt,
              const char* reason = "request");

  // Soft/hard lifetimes (bytes, packets, seconds, sequence space), from the
  // workers' counters summed by the caller. Raises events; hard removes.
  void check_lifetimes(const dataplane::WorkerCounters& sums);

  nlohmann::json list(const dataplane::WorkerCounters& sums) const;
  bool has_outbound(uint16_t tunnel) const;
  bool contains(SaDirection dir, uint32_t spi, uint16_t tunnel) const { return entries_.count({dir, spi, tunnel}) != 0; }
  const dataplane::OutboundSa* current_outbound(uint16_t tunnel) const;
  size_t size() const { return entries_.size(); }
  uint64_t installs() const { return installs_; }

  // Short, non-reversible name of key material for lists and logs.
  static std::string fingerprint(const std::vector<uint8_t>& keymat);

 private:
  struct Entry {
    SaParams params;
    std::string fingerprint;
    std::unique_ptr<crypto::AeadContext> aead;
    std::unique_ptr<dataplane::OutboundSa> out;
    std::unique_ptr<dataplane::InboundSa> in;
    uint32_t slot;
    dataplane::PacketByteCount baseline;  // slot counters at install
    std::chrono::steady_clock::time_point installed;
    uint64_t install_order;
    bool soft_sent = false;
  };
  using Key = std::tuple<SaDirection, uint32_t /*spi*/, uint16_t /*tunnel*/>;

  std::map<Key, Entry>::iterator find(SaDirection dir, uint32_t spi, std::optional<uint16_t> tunnel);
  std::unique_ptr<Entry> build(const SaParams& p) const;
  void publish_outbound(uint16_t tunnel);
  void synchronize() const;
  dataplane::PacketByteCount usage(const Entry& e, const dataplane::WorkerCounters& sums) const;

  dataplane::Dataplane& dp_;
  std::vector<TunnelEndpoints> tunnels_;
  EventSink events_;
  TunnelChanged changed_;
  std::map<Key, Entry> entries_;
  std::vector<uint32_t> free_slots_;
  uint64_t install_counter_ = 0;
  uint64_t installs_ = 0;
};

}  // namespace espgw::control
