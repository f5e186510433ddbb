#include "dataplane/esp.h"

#include <algorithm>

namespace espgw::dataplane {

const char* to_string(EspStatus s) {
  switch (s) {
    case EspStatus::kOk: return "ok";
    case EspStatus::kTruncated: return "truncated";
    case EspStatus::kBadOuterHeader: return "bad-outer-header";
    case EspStatus::kNotEsp: return "not-esp";
    case EspStatus::kShortEsp: return "short-esp";
    case EspStatus::kUnknownSpi: return "unknown-spi";
    case EspStatus::kReplay: return "replay";
    case EspStatus::kTooOld: return "too-old";
    case EspStatus::kIcvMismatch: return "icv-mismatch";
    case EspStatus::kBadPadding: return "bad-padding";
    case EspStatus::kPadLength: return "pad-length";
    case EspStatus::kBadNextHeader: return "bad-next-header";
    case EspStatus::kDummy: return "dummy";
    case EspStatus::kBadInner: return "bad-inner";
    case EspStatus::kNoRoom: return "no-room";
    case EspStatus::kSeqExhausted: return "seq-exhausted";
    case EspStatus::kUnsupported: return "unsupported";
    case EspStatus::kCeNotEct: return "ce-not-ect";
    case EspStatus::kCount: break;
  }
  return "unknown";
}

void esp_outbound_build_template(const OutboundSa& sa, OutboundTemplate& t) {
  using namespace detail;
  memset(&t, 0, sizeof(t));
  t.udp = sa.udp_dst_port != 0;
  t.esn = sa.esn;
  const uint64_t limit = sa.esn ? sa.seq_limit : std::min(sa.seq_limit, kSeqLimitNoEsn);
  t.seq_max_m1 = limit == 0 ? 0 : limit - 1;
  t.esp_off = static_cast<uint8_t>(kIpv4HdrLen + (t.udp ? kUdpHdrLen : 0));
  t.hdr_len = static_cast<uint8_t>(t.esp_off + kEspHdrLen + kEspIvLen);
  t.aad_len = sa.esn ? 12 : 8;
  t.spi_be = rte_cpu_to_be_32(sa.spi);
  t.tos_fixed = sa.dscp >= 0 ? static_cast<uint8_t>((sa.dscp & 0x3f) << 2) : 0;
  t.tos_inner_mask = static_cast<uint8_t>((sa.dscp >= 0 ? 0 : 0xfc) | (sa.ecn_copy ? 0x3 : 0));
  t.df_fixed = sa.df == DfPolicy::kSet ? 0x4000 : 0;
  t.df_inner_mask = sa.df == DfPolicy::kCopy ? 0x4000 : 0;

  uint8_t* o = t.hdr;
  o[0] = 0x45;
  o[8] = sa.ttl;
  o[9] = t.udp ? kIpProtoUdp : kIpProtoEsp;
  st32(o + 12, sa.outer_src);
  st32(o + 16, sa.outer_dst);
  // Partial checksum over the constant words (TOS, length, ID, fragment and
  // checksum are zero here), in memory order like the per-packet patch.
  uint32_t sum = 0;
  for (uint32_t i = 0; i < kIpv4HdrLen; i += 2) {
    uint16_t w;
    memcpy(&w, o + i, 2);
    sum += w;
  }
  t.csum_base = sum;
  uint8_t* e = o + kIpv4HdrLen;
  if (t.udp) {
    st16(e, sa.udp_src_port);
    st16(e + 2, sa.udp_dst_port);
    e += kUdpHdrLen;  // length per packet, checksum 0
  }
  st32(e, sa.spi);
  t.ready = true;
}

void finalize_outbound_sa(OutboundSa& sa) { esp_outbound_build_template(sa, sa.tmpl); }

uint16_t esp_outbound_burst(rte_mbuf** pkts, OutboundSa* sa, uint16_t n, EspStatus* st) {
  if (n == 0) return 0;
  const uint64_t base = sa->next_seq.fetch_add(n, std::memory_order_relaxed);
  crypto::AeadOp ops[crypto::kMaxBurst];
  uint8_t aad[crypto::kMaxBurst][kAadScratch];
  uint16_t good = 0;
  for (uint16_t i0 = 0; i0 < n; i0 += crypto::kMaxBurst) {
    const uint16_t cnt = static_cast<uint16_t>(std::min<uint32_t>(crypto::kMaxBurst, n - i0));
    uint32_t nops = 0;
    for (uint16_t j = 0; j < cnt; ++j) {
      const uint16_t i = i0 + j;
      if (j + 1 < cnt) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
      st[i] = esp_outbound_prepare(pkts[i], *sa, base + i, ops[nops], aad[nops]);
      if (st[i] == EspStatus::kOk) ++nops;
    }
    if (nops) crypto::encrypt_burst(ops, nops);
    good += static_cast<uint16_t>(nops);
  }
  return good;
}

EspStatus esp_encap(rte_mbuf* m, OutboundSa& sa) {
  const uint64_t seq = sa.next_seq.fetch_add(1, std::memory_order_relaxed);
  crypto::AeadOp op;
  uint8_t aad[kAadScratch];
  EspStatus s = esp_outbound_prepare(m, sa, seq, op, aad);
  if (s != EspStatus::kOk) return s;
  crypto::encrypt_burst(&op, 1);
  return EspStatus::kOk;
}

namespace {
inline EspStatus replay_status(ReplayVerdict v) {
  return v == ReplayVerdict::kReplay ? EspStatus::kReplay : EspStatus::kTooOld;
}
}  // namespace

EspStatus esp_decap(rte_mbuf* m, InboundSa& sa) {
  uint16_t one = 1;
  EspStatus st;
  esp_decap_burst(&m, sa, one, &st);
  return st;
}

uint16_t esp_decap_burst(rte_mbuf** pkts, InboundSa& sa, uint16_t n, EspStatus* st) {
  const uint16_t nat_port = sa.udp_port ? sa.udp_port : kNatTPort;
  uint16_t good = 0;
  for (uint16_t i0 = 0; i0 < n; i0 += crypto::kMaxBurst) {
    const uint16_t cnt = static_cast<uint16_t>(std::min<uint32_t>(crypto::kMaxBurst, n - i0));
    EspInboundInfo info[crypto::kMaxBurst];
    uint64_t seq[crypto::kMaxBurst];
    crypto::AeadOp ops[crypto::kMaxBurst];
    uint8_t aad[crypto::kMaxBurst][kAadScratch];
    uint8_t idx[crypto::kMaxBurst];  // op -> packet (within the chunk)
    uint8_t ok[crypto::kMaxBurst];
    uint32_t nops = 0;
    for (uint16_t j = 0; j < cnt; ++j) {
      const uint16_t i = i0 + j;
      if (j + 1 < cnt) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 1], void*));
      EspStatus s = esp_inbound_parse(pkts[i], info[j], nat_port);
      if (s == EspStatus::kOk && info[j].spi != sa.spi) s = EspStatus::kUnknownSpi;
      if (s == EspStatus::kOk) {
        ReplayVerdict v = sa.replay.check(info[j].seq_low, &seq[j]);
        if (v != ReplayVerdict::kOk) s = replay_status(v);
      }
      if (s == EspStatus::kOk) s = esp_inbound_prepare(info[j], sa, seq[j], ops[nops], aad[nops]);
      st[i] = s;
      if (s == EspStatus::kOk) idx[nops++] = static_cast<uint8_t>(j);
    }
    if (nops == 0) continue;
    crypto::decrypt_burst(ops, nops, ok);
    // Another worker may update this window at the same time: one lock for
    // the chunk's updates (replay_window.h).
    ReplayWindow::UpdateLock guard;
    guard.hold(&sa.replay);
    for (uint32_t k = 0; k < nops; ++k) {
      const uint16_t j = idx[k];
      const uint16_t i = i0 + j;
      if (!ok[k]) {
        st[i] = EspStatus::kIcvMismatch;
        continue;
      }
      // Authentic: the window moves even if the trailer turns out bad (the
      // peer did send this number). A duplicate within the burst fails here.
      ReplayVerdict v = sa.replay.update(seq[j]);
      if (v != ReplayVerdict::kOk) {
        st[i] = replay_status(v);
        continue;
      }
      st[i] = esp_inbound_finish(pkts[i], info[j], true);
      if (st[i] == EspStatus::kOk) ++good;
    }
  }
  return good;
}

}  // namespace espgw::dataplane
