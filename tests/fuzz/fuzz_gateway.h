// The packet harnesses' gateway (fuzz_inbound, fuzz_outbound,
// fuzz_host_path): a real espgw Gateway built from a YAML config (ports,
// tunnels, routes, static SAs, exception path), started without worker
// lcores; the harness drives worker 0 itself with worker_poll_once(), the
// function the worker's poll loop runs.
//
// Ports are net_ring devices: each queue's RX ring is also its TX ring, so
// the harness enqueues the input frames, polls once (the worker takes them
// all, at most kBurst per port) and then dequeues what the worker sent.
//
// After each input the harness flushes what the gateway parks (outer
// fragments in the reassembly table, packets in ARP hold queues) and checks,
// aborting on a violation (libFuzzer reports it as a crash with the input):
//   - no mbuf leaked: the pool's in-use count is back at its baseline;
//   - the counters balance (dataplane/counters.h): per port, rx = forwarded +
//     to_host + consumed + dropped + queued + held and staged = sent +
//     tx_dropped; and drop[r] summed = the ports' dropped + generated_dropped
//     + tx_dropped; nothing is left held.
//
// Input format (all three harnesses): a sequence of records
//   byte 0: bits 0-1 the port (0 lan, 1 wan, 2 exception; 3 = wan),
//           bit 7: poll before this record (a new burst),
//           bits 2-6: harness-specific flags;
//   bytes 1-2: frame length, big-endian (cut to what is left);
//   the frame (Ethernet header first).
#pragma once

#include <rte_mbuf.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "control/gateway.h"
#include "crypto/aead.h"

namespace fuzz {

// Addresses and keys of the fuzz config (tests/fuzz/make_corpus.py has the
// same values: keep them in step).
inline constexpr uint8_t kLanMac[6] = {0x02, 0, 0, 0, 0, 0x01};
inline constexpr uint8_t kWanMac[6] = {0x02, 0, 0, 0, 0, 0x02};
inline constexpr uint16_t kLan = 0, kWan = 1, kException = 2;

struct SaKeys {
  uint32_t spi;
  bool inbound;
  bool aes256;
  bool esn;
  uint32_t dst;      // inbound: our address; outbound: the peer (host order)
  uint8_t key_base;  // key || salt = key_base, key_base + 1, ...
  bool udp;          // ESP in UDP
};
// The fuzz config's static SAs.
const std::vector<SaKeys>& sa_keys();

struct Frame {
  uint16_t port;
  uint8_t flags;  // the record's bits 2-6
  bool poll_before;
  std::vector<uint8_t> bytes;
};
// Splits an input into records (see the header comment).
std::vector<Frame> split_records(const uint8_t* data, size_t size);

class FuzzGateway {
 public:
  // Brings EAL and the gateway up (once per process).
  // EAL instance unique (the process is --in-memory anyway).
  static FuzzGateway& instance();

  espgw::dataplane::Dataplane& dp() { return gw_->dataplane(); }
  espgw::control::Gateway& gateway() { return *gw_; }

  // Runs the frames through worker 0. `on_sent(port, mbuf)` sees every
  // frame the worker sent (before it is freed). Returns after the flush and
  // the checks (aborts on a violation).
  using SentFn = std::function<void(uint16_t port, const rte_mbuf* m)>;
  void run(const std::vector<Frame>& frames, const SentFn& on_sent = {});

  // Forgets the inbound SAs' replay windows (so the same valid ESP is
  // accepted by every input, not just the first: inputs stay independent).
  void reset_replay_windows();

 private:
  FuzzGateway();
  void poll_and_drain(const SentFn& on_sent);
  void check_invariants(const char* when);

  std::unique_ptr<espgw::control::Gateway> gw_;
  rte_ring* rings_[3] = {};
  unsigned baseline_in_use_ = 0;
};

// Prints "==FUZZ INVARIANT== what" (scripts/fuzz.sh greps the marker) and
// aborts: libFuzzer reports it as a crash with the input.
[[noreturn]] void fail(const std::string& what);

// Big-endian loads and stores, an IPv4 address in host order.
inline uint16_t ld16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t ld32(const uint8_t* p) { return uint32_t{ld16(p)} << 16 | ld16(p + 2); }
inline void st16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void st32(uint8_t* p, uint32_t v) {
  st16(p, uint16_t(v >> 16));
  st16(p + 2, uint16_t(v));
}
constexpr uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

// ESP's AES-GCM AAD (RFC 4106): SPI and sequence number; with ESN the high
// half (0: the harnesses' windows start at 0) before the low. Returns its length.
inline uint32_t esp_aad(uint8_t aad[12], uint32_t spi, uint32_t seq, bool esn) {
  st32(aad, spi);
  if (!esn) {
    st32(aad + 4, seq);
    return 8;
  }
  st32(aad + 4, 0);
  st32(aad + 8, seq);
  return 12;
}

// AES-GCM context of one of the config's SAs (OpenSSL backend: the oracle).
const espgw::crypto::AeadContext& sa_context(uint32_t spi, bool inbound);

// RFC 1071 checksum (independent of the product's).
uint16_t cksum(const uint8_t* p, size_t n);

}  // namespace fuzz
