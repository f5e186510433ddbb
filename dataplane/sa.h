// Security associations as the workers see them: plain structs, built by the
// control thread, read (and, for the counters below, written) by workers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "crypto/aead.h"
#include "dataplane/replay_window.h"

namespace espgw::dataplane {

// Outer DF bit (RFC 4301 §8.1: copy from the inner header by default).
enum class DfPolicy : uint8_t { kCopy, kSet, kClear };

inline constexpr uint16_t kNatTPort = 4500;  // RFC 3948
inline constexpr uint64_t kSeqLimitNoEsn = uint64_t{1} << 32;

// What esp_outbound_prepare() needs of an OutboundSa, precomputed once per SA
// by finalize_outbound_sa() (the control thread, at install) so the per-packet
// path neither re-evaluates the SA's settings nor builds the outer header
// field by field.
struct OutboundTemplate {
  // Outer IPv4 [+ UDP] + SPI in network order, TOS / total length / ID /
  // fragment / checksum (and UDP length) zero; copied with two 16-byte
  // stores. Bytes past hdr_len - 12 (sequence number, IV) are overwritten.
  alignas(16) uint8_t hdr[32];
  uint64_t seq_max_m1;     // valid sequence numbers: 1 .. seq_max_m1 (0 = none)
  uint32_t csum_base;      // ones' complement sum of the constant IPv4 words (memory order)
  uint32_t spi_be;         // SPI, network order (AAD)
  uint16_t df_fixed;       // outer fragment field = df_fixed | (inner fragment field & df_inner_mask), host order
  uint16_t df_inner_mask;
  uint8_t tos_fixed;       // outer TOS = tos_fixed | (inner TOS & tos_inner_mask)
  uint8_t tos_inner_mask;
  uint8_t hdr_len;         // outer IPv4 [+ UDP] + ESP header + IV: 36 or 44
  uint8_t esp_off;         // offset of the SPI: 20 or 28
  uint8_t aad_len;         // 8, or 12 with ESN
  bool udp;
  bool esn;
  bool ready;              // false: esp_outbound_prepare() builds one on the fly (slow)
};

// A traffic selector of a policy-based SA: addr/mask, host order.
struct Selector {
  uint32_t addr;
  uint32_t mask;
};
inline constexpr uint8_t kMaxSelectors = 4;

inline bool in_selectors(const Selector* s, uint8_t n, uint32_t a) {
  for (uint8_t i = 0; i < n; i++)
    if (((a ^ s[i].addr) & s[i].mask) == 0) return true;
  return false;
}

struct OutboundSa;
// Builds sa.tmpl from the fields below. Call it after setting (or changing)
// any of them and before the SA is published to workers.
void finalize_outbound_sa(OutboundSa& sa);

struct OutboundSa : crypto::InStateArena {
  // What every packet reads comes first, in two cache lines (the template,
  // then the fields below it): with a different SA per packet each line is a
  // miss, and the worker prefetches just these (kOutboundSaHotBytes).
  // Derived from the settings below by finalize_outbound_sa(); the per-packet
  // encapsulation reads this instead of them.
  OutboundTemplate tmpl{};
  // Next 64-bit sequence number to use (starts at 1). Workers reserve a run
  // with one fetch_add per burst (the only shared write on the hot path).
  std::atomic<uint64_t> next_seq{1};
  const crypto::AeadContext* aead = nullptr;
  uint32_t slot = 0;  // index of this SA's per-worker counters (control side assigns)
  uint16_t tunnel = 0;
  uint16_t udp_src_port = 0, udp_dst_port = 0;  // 0 = plain ESP (proto 50); else RFC 3948 UDP
  // Policy-based SA: only packets from local_sel to remote_sel are
  // encrypted; others are dropped (policy). nb_remote_sel == 0: route-based
  // (the FIB alone decides; no per-packet check).
  uint8_t nb_local_sel = 0, nb_remote_sel = 0;
  // The settings (read when the template is built, and by the control side).
  uint32_t spi = 0;  // host order
  bool esn = false;
  uint32_t outer_src = 0, outer_dst = 0;        // host order
  Selector local_sel[kMaxSelectors];
  Selector remote_sel[kMaxSelectors];
  uint8_t ttl = 64;                              // outer TTL
  int16_t dscp = -1;                             // -1 = copy inner DSCP, else 0..63
  DfPolicy df = DfPolicy::kCopy;
  bool ecn_copy = true;  // RFC 6040 normal mode (copy inner ECN); false = compatibility (Not-ECT)
  // Sequence numbers >= seq_limit are never used (kSeqExhausted). Without ESN
  // the effective limit is also capped at 2^32 (RFC 4303 §3.3.3: never wrap).
  uint64_t seq_limit = kSeqLimitNoEsn;
};

// The bytes of an OutboundSa from its start that the outbound path reads for
// every packet of a route-based SA (the selectors only when policy-based).
inline constexpr size_t kOutboundSaHotBytes = offsetof(OutboundSa, spi);
static_assert(kOutboundSaHotBytes <= 128, "OutboundSa's per-packet fields must fit two cache lines");

struct InboundSa : crypto::InStateArena {
  uint32_t spi = 0;
  uint32_t local_addr = 0;  // outer destination it arrives on (host order); 0 = any
  bool esn = false;
  uint16_t udp_port = 0;    // 0 = expect plain ESP; else UDP-encapsulated to this port
  const crypto::AeadContext* aead = nullptr;
  uint16_t tunnel = 0;
  // Read for every packet, so in the first cache line with the fields above
  // and the replay window's top (with a random SA per packet each line is a
  // miss; the selectors are read only when nb_remote_sel != 0).
  uint32_t slot = 0;        // index of this SA's per-worker counters
  uint8_t nb_local_sel = 0, nb_remote_sel = 0;
  // Updated by whichever worker received the packet, under the window's own
  // lock (see replay_window.h: RSS does not keep an SA on one queue). Initialise with
  // replay.reset(window, esn) using the same `esn` as above (a mismatch fails
  // safe: every packet gets kIcvMismatch).
  ReplayWindow replay;
  // Policy-based SA: decrypted packets must come from remote_sel and go to
  // local_sel (nb_local_sel, nb_remote_sel above). nb_remote_sel == 0:
  // route-based (the tunnel's routes decide).
  Selector local_sel[kMaxSelectors];
  Selector remote_sel[kMaxSelectors];
};

}  // namespace espgw::dataplane
