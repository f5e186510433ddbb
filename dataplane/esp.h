// ESP tunnel mode (RFC 4303) with AES-GCM (RFC 4106) on rte_mbufs: pure
// functions, no ports. IPv4 outer, IPv4 inner; optional UDP encapsulation
// (RFC 3948).
//
// Packets are single-segment mbufs whose data starts at the IP header (no
// L2: the caller strips/adds Ethernet). Multi-segment mbufs get
// kUnsupported (no linearisation on the hot path; the caller may
// rte_pktmbuf_linearize() and retry).
//
// Outbound, in the style of DPDK lib/ipsec esp_outb.c:
//   esp_outbound_prepare() per packet -> crypto::encrypt_burst() -> done.
// The wire format it writes:
//   outer IPv4 [UDP 4500] | SPI | seq low | IV = 64-bit seq (BE) |
//   ciphertext(inner packet | pad 1,2,3.. | pad len | next header 4) | ICV 16
// The IV is the 64-bit sequence number, so it never repeats under one key
// (RFC 4106 §3.1). Outer header: TTL from the SA, DSCP copied or fixed,
// ECN copied (RFC 6040 normal mode) or Not-ECT, DF per DfPolicy, IP ID =
// low 16 bits of the sequence number, checksum computed; UDP checksum 0.
// The inner packet is trimmed to its IPv4 total length first (drops Ethernet
// minimum-frame padding).
//
// Inbound:
//   esp_inbound_parse() -> SA lookup by SPI (caller) -> ReplayWindow::check()
//   -> esp_inbound_prepare() -> crypto::decrypt_burst() ->
//   ReplayWindow::update() if the ICV verified -> esp_inbound_finish().
// finish() leaves exactly the inner IPv4 packet in the mbuf: TFC padding
// after it (RFC 4303 §2.4, §2.7: the payload is longer than the inner total
// length) is trimmed. ECN per RFC 6040 §4.2 (normal mode): outer CE marks an
// ECN-capable inner packet CE and drops a Not-ECT one (kCeNotEct); outer
// ECT(1) turns an inner ECT(0) into ECT(1); otherwise the inner field stays.
//
// On any failure status the mbuf is left as it was, except that after
// esp_inbound_prepare()+decrypt the payload region has been decrypted in
// place (the packet is then only fit to be dropped).
#pragma once

#include <rte_byteorder.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include <cstdint>
#include <cstring>

#include "crypto/aead.h"
#include "dataplane/replay_window.h"
#include "dataplane/sa.h"

namespace espgw::dataplane {

enum class EspStatus : uint8_t {
  kOk = 0,
  kTruncated,       // shorter than the outer IPv4 (+UDP) header
  kBadOuterHeader,  // version/IHL/total length/checksum/fragment/UDP length
  kNotEsp,          // not ESP: other protocol, other UDP port, IKE (non-ESP marker), NAT keepalive
  kShortEsp,        // ESP shorter than header + IV + 2 trailer bytes + ICV
  kUnknownSpi,      // no SA (callers), or SA's address/encapsulation does not match
  kReplay,          // already received
  kTooOld,          // left of the replay window
  kIcvMismatch,     // authentication failed
  kBadPadding,      // padding bytes are not 1, 2, 3, ...
  kPadLength,       // pad length beyond the payload
  kBadNextHeader,   // next header is not 4 (IPv4) (nor 41 / 59, below)
  kDummy,           // next header 59: RFC 4303 §2.6 dummy (TFC) packet, discard silently
  kBadInner,        // inner packet not IPv4, bad IHL or header checksum, total length beyond the decrypted payload
  kNoRoom,          // not enough headroom/tailroom, or outer packet > 65535 bytes
  kSeqExhausted,    // SA's sequence numbers used up (rekey needed)
  kUnsupported,     // multi-segment mbuf, inner IPv6 (next header 41)
  kCeNotEct,        // outer CE over a Not-ECT inner packet: RFC 6040 §4.2 says drop
  kCount
};

const char* to_string(EspStatus s);

inline constexpr uint32_t kIpv4HdrLen = 20;
inline constexpr uint32_t kUdpHdrLen = 8;
inline constexpr uint32_t kEspHdrLen = 8;  // SPI + seq
inline constexpr uint32_t kEspIvLen = crypto::kIvLen;
inline constexpr uint32_t kEspIcvLen = crypto::kIcvLen;
inline constexpr uint32_t kEspMinLen = kEspHdrLen + kEspIvLen + 2 + kEspIcvLen;  // 34
inline constexpr uint32_t kAadScratch = 12;  // bytes of AAD scratch per packet
inline constexpr uint8_t kIpProtoEsp = 50;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr uint8_t kNextHdrIpv4 = 4;
inline constexpr uint8_t kNextHdrIpv6 = 41;
inline constexpr uint8_t kNextHdrNone = 59;

// Outer bytes ESP tunnel mode adds to an inner packet of `inner_len` bytes.
inline constexpr uint32_t esp_overhead(uint32_t inner_len, bool udp) {
  uint32_t pad = (4 - ((inner_len + 2) & 3)) & 3;
  return kIpv4HdrLen + (udp ? kUdpHdrLen : 0) + kEspHdrLen + kEspIvLen + pad + 2 + kEspIcvLen;
}

namespace detail {
// Host <-> network order with the compiler's builtins (DPDK's rte_bswap16 is
// an asm volatile the compiler can neither fold nor schedule).
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
inline constexpr uint16_t be16(uint16_t v) { return __builtin_bswap16(v); }
inline constexpr uint32_t be32(uint32_t v) { return __builtin_bswap32(v); }
inline constexpr uint64_t be64(uint64_t v) { return __builtin_bswap64(v); }
#else
inline constexpr uint16_t be16(uint16_t v) { return v; }
inline constexpr uint32_t be32(uint32_t v) { return v; }
inline constexpr uint64_t be64(uint64_t v) { return v; }
#endif
// Big-endian loads/stores: one (unaligned) access plus a bswap each.
inline uint16_t ld16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return be16(v);
}
inline uint32_t ld32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return be32(v);
}
inline void st16(uint8_t* p, uint16_t v) {
  v = be16(v);
  memcpy(p, &v, 2);
}
inline void st32(uint8_t* p, uint32_t v) {
  v = be32(v);
  memcpy(p, &v, 4);
}
inline void st64(uint8_t* p, uint64_t v) {
  v = be64(v);
  memcpy(p, &v, 8);
}
// Folds a 32-bit ones' complement accumulator to 16 bits.
inline uint16_t fold16(uint32_t s) {
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}
// Whether an IPv4 header (ihl*4 bytes) has a valid checksum: its ones'
// complement sum folds to 0xffff (RFC 1071), decided without folding. As
// 2^16 = 1 (mod 0xffff), the folded sum is the plain sum of the 16-bit words
// modulo 0xffff (0xffff standing for 0), and it is 0 only when every word is:
// valid means a non-zero multiple of 0xffff. 64-bit words with end-around
// carry keep that residue (2^64 = 1 mod 0xffff), and so does byte order (a
// swapped word is 256 times the word, and 256 is invertible). Divisibility
// by the odd 0xffff is a multiply by its inverse modulo 2^64 and a compare
// (n is a multiple exactly when n * inverse <= (2^64 - 1) / 0xffff), written
// out: left as `s % 0xffff`, GCC emitted that test at one call site and a
// remainder (multiply, shift, multiply back, compare) at the other. Folding
// was a chain of a dozen operations.
inline constexpr uint64_t kInverseOf0xffff = 0xfffefffefffeffffull;
static_assert(kInverseOf0xffff * 0xffffull == 1 && ~uint64_t{0} / 0xffff == 0x0001000100010001ull);
inline bool ip_sum_ok(const uint8_t* p, uint32_t len) {
  uint64_t s;
  if (len == kIpv4HdrLen) {  // no options: two 64-bit words and a 32-bit one
    uint64_t a, b;
    uint32_t c;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    memcpy(&c, p + 16, 4);
    s = a + b;
    s += s < b;  // end-around carry
    s += c;
    s += s < c;
  } else {
    s = 0;
    for (uint32_t i = 0; i + 3 < len; i += 4) {
      uint32_t w;
      memcpy(&w, p + i, 4);
      s += w;  // at most 15 words: no carry out of 64 bits
    }
  }
  return s != 0 && s * kInverseOf0xffff <= ~uint64_t{0} / 0xffff;
}
// An IPv4 header's first byte with version 4 and an IHL of 5..15 words is
// 0x45..0x4f: one compare for both.
inline constexpr bool ipv4_version_ihl_ok(uint8_t b0) { return static_cast<uint8_t>(b0 - 0x45) <= 0x0a; }
inline void write_aad(uint8_t* aad, uint32_t spi, uint64_t seq, bool esn) {
  if (esn) {
    st32(aad, spi);
    st64(aad + 4, seq);  // seq high 32 bits || seq low 32 bits
  } else {
    // One 8-byte store: the AEAD's 8-byte read forwards from it (two 4-byte
    // stores would stall the load).
    st64(aad, uint64_t{spi} << 32 | static_cast<uint32_t>(seq));
  }
}
}  // namespace detail

// ---------------------------------------------------------------- outbound

// Builds `t` from sa's settings (finalize_outbound_sa() stores it in sa.tmpl).
void esp_outbound_build_template(const OutboundSa& sa, OutboundTemplate& t);

// Writes outer headers and trailer around the inner IPv4 packet and fills
// `op` for in-place encryption; aad_scratch (12 bytes) must live until the
// encryption ran. The caller then runs crypto::encrypt_burst(). On failure
// the mbuf is untouched.
//
// Reads the SA's prebuilt template (sa.tmpl, see finalize_outbound_sa()): the
// outer header is one 32-byte copy with TOS, total length, ID, fragment
// field (and UDP length) patched in and the checksum completed from the
// template's partial sum. An SA that was never finalized still works (the
// template is then built on the stack for every packet: slow).
//
// kInnerChecked: the caller guarantees a single-segment mbuf holding exactly
// one IPv4 packet with a valid version, IHL and total length == data length
// (the worker's check_ipv4() + trim did that); the inner checks are skipped.
//
// eth: when not null, the 14-byte Ethernet header to put in front of the
// outer header, in the same pass (the worker's next-hop header): the frame
// is then ready to send once encrypted. 16 bytes must be readable there.
inline constexpr uint32_t kEspEthLen = 14;
template <bool kInnerChecked = false>
inline EspStatus esp_outbound_prepare(rte_mbuf* m, const OutboundSa& sa, uint64_t seq,
                                      crypto::AeadOp& op, uint8_t* aad_scratch,
                                      const uint8_t* eth = nullptr) {
  using namespace detail;
  OutboundTemplate local;
  const OutboundTemplate* tp = &sa.tmpl;
  if (__builtin_expect(!tp->ready, 0)) {
    esp_outbound_build_template(sa, local);
    tp = &local;
  }
  const OutboundTemplate& t = *tp;
  if (!kInnerChecked && m->nb_segs != 1) return EspStatus::kUnsupported;
  if (seq - 1 >= t.seq_max_m1) return EspStatus::kSeqExhausted;  // also seq == 0

  const uint32_t dlen = rte_pktmbuf_data_len(m);
  const uint8_t* in = rte_pktmbuf_mtod(m, const uint8_t*);
  uint32_t inner_len;
  if (kInnerChecked) {
    inner_len = dlen;
  } else {
    if (dlen < kIpv4HdrLen || (in[0] >> 4) != 4 || (in[0] & 0xf) < 5) return EspStatus::kBadInner;
    inner_len = ld16(in + 2);
    if (inner_len < uint32_t{in[0] & 0xfu} * 4 || inner_len > dlen) return EspStatus::kBadInner;
  }

  const uint32_t hdr = t.hdr_len;
  const uint32_t pad = (4 - ((inner_len + 2) & 3)) & 3;
  const uint32_t tail = pad + 2 + kEspIcvLen;
  const uint32_t total = hdr + inner_len + tail;
  if (total > 0xffff) return EspStatus::kNoRoom;
  // Tailroom counts the Ethernet padding we are about to trim.
  const uint32_t l2 = eth != nullptr ? kEspEthLen : 0;
  if (rte_pktmbuf_headroom(m) < hdr + l2 || rte_pktmbuf_tailroom(m) + (dlen - inner_len) < tail)
    return EspStatus::kNoRoom;

  const uint8_t tos = static_cast<uint8_t>(t.tos_fixed | (in[1] & t.tos_inner_mask));
  const uint16_t frag = static_cast<uint16_t>(t.df_fixed | (ld16(in + 6) & t.df_inner_mask));

  // Grow the mbuf: trim to the inner total length, add the tail and the head.
  m->data_off = static_cast<uint16_t>(m->data_off - hdr - l2);
  m->data_len = static_cast<uint16_t>(total + l2);
  m->pkt_len = total + l2;
  uint8_t* o = rte_pktmbuf_mtod(m, uint8_t*) + l2;
  // 16 bytes in one move: the 2 past the Ethernet header are the outer
  // header's first, written below.
  if (eth != nullptr) memcpy(o - kEspEthLen, eth, 16);

  // Trailer: pad 1,2,3..., pad length, next header (4 bytes of pattern
  // first: they land in the ICV room at worst).
  uint8_t* tr = o + hdr + inner_len;
  memcpy(tr, "\x01\x02\x03\x00", 4);
  tr[pad] = static_cast<uint8_t>(pad);
  tr[pad + 1] = kNextHdrIpv4;

  // Outer IPv4 [+ UDP] + SPI from the template.
  memcpy(o, t.hdr, sizeof(t.hdr));
  const uint16_t tot_be = be16(static_cast<uint16_t>(total));
  const uint16_t id_be = be16(static_cast<uint16_t>(seq));
  const uint16_t frag_be = be16(frag);
  o[1] = tos;
  memcpy(o + 2, &tot_be, 2);
  memcpy(o + 4, &id_be, 2);
  memcpy(o + 6, &frag_be, 2);
  const uint16_t ck = static_cast<uint16_t>(
      ~fold16(t.csum_base + be16(uint16_t{tos}) + tot_be + id_be + frag_be));
  memcpy(o + 10, &ck, 2);
  if (t.udp) st16(o + kIpv4HdrLen + 4, static_cast<uint16_t>(total - kIpv4HdrLen));

  uint8_t* e = o + t.esp_off;
  st32(e + 4, static_cast<uint32_t>(seq));
  st64(e + 8, seq);  // IV

  if (t.esn) {
    memcpy(aad_scratch, &t.spi_be, 4);
    st64(aad_scratch + 4, seq);
  } else {
    // SPI || seq as one 8-byte store: the AEAD's 8-byte read of it then
    // forwards from the store buffer instead of stalling on two halves.
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
    const uint64_t a = uint64_t{t.spi_be} | uint64_t{be32(static_cast<uint32_t>(seq))} << 32;
#else
    const uint64_t a = uint64_t{t.spi_be} << 32 | static_cast<uint32_t>(seq);
#endif
    memcpy(aad_scratch, &a, 8);
  }
  uint8_t* payload = o + hdr;
  op.ctx = sa.aead;
  op.iv = e + kEspHdrLen;
  op.aad = aad_scratch;
  op.aad_len = t.aad_len;
  op.src = payload;
  op.dst = payload;
  op.len = inner_len + pad + 2;
  op.icv = payload + op.len;

  m->packet_type = RTE_PTYPE_L3_IPV4 | (t.udp ? RTE_PTYPE_L4_UDP : 0) | RTE_PTYPE_TUNNEL_ESP;
  // One 8-byte store for the whole tx_offload word: setting the bit-fields
  // one by one is a byte store then a wider load of the same word, which
  // cannot forward and stalls (~15 cycles per packet measured inbound).
  m->tx_offload = rte_mbuf_tx_offload(l2, kIpv4HdrLen, 0, 0, 0, 0, 0);
  m->ol_flags &= ~(RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_SEG);
  return EspStatus::kOk;
}

// Burst: reserves n sequence numbers with one fetch_add on sa->next_seq,
// prepares every packet, encrypts those that prepared in one crypto burst.
// st[i] gets each packet's status; returns the number with kOk. Packets that
// failed are untouched (their reserved sequence number is skipped). Any n.
uint16_t esp_outbound_burst(rte_mbuf** pkts, OutboundSa* sa, uint16_t n, EspStatus* st);

// Single packet: reserve one sequence number, prepare, encrypt.
EspStatus esp_encap(rte_mbuf* m, OutboundSa& sa);

// ----------------------------------------------------------------- inbound

struct EspInboundInfo {
  uint32_t spi;        // host order
  uint32_t seq_low;    // host order
  uint32_t outer_src;  // host order
  uint32_t outer_dst;
  uint8_t* esp;        // the ESP header (valid while the mbuf's data stays where parse found it)
  uint16_t esp_off;    // offset of the ESP header from the data start
  uint16_t esp_len;    // ESP header .. end of ICV
  uint16_t udp_sport;  // valid when udp
  uint16_t udp_dport;  // 0 when not udp (and never 0 when udp)
  uint8_t outer_tos;
  bool udp;
};

inline constexpr uint16_t kIkePort = 500;
// esp_inbound_parse()'s nat_t_port for "ESP-in-UDP on any port but 500".
inline constexpr uint16_t kAnyNatTPort = 0;

// Validates the outer IPv4 (+UDP) header and the ESP length; no change to the
// mbuf. `nat_t_port` is the UDP destination port treated as ESP-in-UDP, or
// kAnyNatTPort: every UDP datagram but IKE (port 500), the non-ESP marker and
// NAT keepalives is a candidate (info.udp set) and the caller decides by the
// SA it finds for (SPI, destination): an SA whose UDP port is the datagram's
// destination port makes it ESP (RFC 3948 on a local port other than 4500);
// otherwise it is not ESP. In that mode a datagram to a port other than 4500
// too short for ESP is kNotEsp (someone else's UDP), not kShortEsp.
//
// kOuterChecked: the caller guarantees a single-segment mbuf whose IPv4
// version, IHL, total length (<= data length) and header checksum were
// validated (the worker's check_ipv4()); those checks are skipped.
template <bool kOuterChecked = false>
inline EspStatus esp_inbound_parse(rte_mbuf* m, EspInboundInfo& out, uint16_t nat_t_port = kNatTPort) {
  using namespace detail;
  const uint32_t dlen = rte_pktmbuf_data_len(m);
  uint8_t* p = rte_pktmbuf_mtod(m, uint8_t*);
  if (!kOuterChecked) {
    if (m->nb_segs != 1) return EspStatus::kUnsupported;
    if (dlen < kIpv4HdrLen) return EspStatus::kTruncated;
    if ((p[0] >> 4) != 4 || (p[0] & 0xf) < 5) return EspStatus::kBadOuterHeader;
  }
  const uint32_t ihl = uint32_t{p[0] & 0xfu} * 4;
  if (!kOuterChecked && dlen < ihl) return EspStatus::kTruncated;
  const uint32_t tot = ld16(p + 2);
  if (!kOuterChecked && (tot < ihl || tot > dlen)) return EspStatus::kBadOuterHeader;  // tot < dlen: L2 padding
  if (ld16(p + 6) & 0x3fff) return EspStatus::kBadOuterHeader;     // fragment (MF or offset)
  if (!kOuterChecked && !(m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_GOOD) &&
      ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD || !ip_sum_ok(p, ihl)))
    return EspStatus::kBadOuterHeader;

  uint32_t off = ihl;
  bool udp = false;
  if (p[9] == kIpProtoUdp) {
    if (tot < ihl + kUdpHdrLen) return EspStatus::kTruncated;
    const uint8_t* u = p + ihl;
    const uint16_t dport = ld16(u + 2);
    // Port 0 is no one's (an SA's udp_port 0 means plain ESP): never ESP.
    if (nat_t_port == kAnyNatTPort ? dport == kIkePort || dport == 0 : dport != nat_t_port) return EspStatus::kNotEsp;
    if (ld16(u + 4) != tot - ihl) return EspStatus::kBadOuterHeader;
    off += kUdpHdrLen;
    const uint32_t plen = tot - off;
    if (plen == 1 && p[off] == 0xff) return EspStatus::kNotEsp;                // NAT keepalive
    if (plen >= 4 && ld32(p + off) == 0) return EspStatus::kNotEsp;            // non-ESP marker: IKE
    out.udp_sport = ld16(u);
    out.udp_dport = ld16(u + 2);
    udp = true;
  } else if (p[9] != kIpProtoEsp) {
    return EspStatus::kNotEsp;
  } else {
    out.udp_sport = out.udp_dport = 0;
  }
  const uint32_t esp_len = tot - off;
  if (esp_len < kEspMinLen)
    return udp && nat_t_port == kAnyNatTPort && out.udp_dport != kNatTPort ? EspStatus::kNotEsp : EspStatus::kShortEsp;
  out.spi = ld32(p + off);
  out.seq_low = ld32(p + off + 4);
  out.outer_src = ld32(p + 12);
  out.outer_dst = ld32(p + 16);
  out.esp = p + off;
  out.esp_off = static_cast<uint16_t>(off);
  out.esp_len = static_cast<uint16_t>(esp_len);
  out.outer_tos = p[1];
  out.udp = udp;
  return EspStatus::kOk;
}

// Checks that the packet belongs to `sa` (outer destination, encapsulation)
// and fills `op` for in-place decryption of the packet the parse described
// (`info.esp`) with the 64-bit sequence number the replay window inferred.
// kUnknownSpi on a mismatch (SPI is the caller's).
// kFoundByDestination: the caller found `sa` by (SPI, outer destination),
// so the destination matches and is not compared again.
template <bool kFoundByDestination = false>
inline EspStatus esp_inbound_prepare(const EspInboundInfo& info, const InboundSa& sa, uint64_t full_seq,
                                     crypto::AeadOp& op, uint8_t* aad_scratch) {
  if (!kFoundByDestination && sa.local_addr != 0 && sa.local_addr != info.outer_dst) return EspStatus::kUnknownSpi;
  // The encapsulation: parse leaves udp_dport 0 for plain ESP and never
  // takes a datagram to port 0 for ESP, and an SA's udp_port is 0 for plain
  // ESP, so one compare says both "ESP-in-UDP when the SA is" and "on its port".
  if (info.udp_dport != sa.udp_port) return EspStatus::kUnknownSpi;
  // From the info, not the mbuf: its buffer address and data offset would be
  // two dependent loads ahead of the op's stores.
  uint8_t* e = info.esp;
  detail::write_aad(aad_scratch, info.spi, full_seq, sa.esn);
  op.ctx = sa.aead;
  op.iv = e + kEspHdrLen;
  op.aad = aad_scratch;
  op.aad_len = sa.esn ? 12 : 8;
  op.src = e + kEspHdrLen + kEspIvLen;
  op.dst = e + kEspHdrLen + kEspIvLen;
  op.len = info.esp_len - kEspHdrLen - kEspIvLen - kEspIcvLen;
  op.icv = e + info.esp_len - kEspIcvLen;
  return EspStatus::kOk;
}

// After an authenticated decryption: checks the trailer and the inner
// header, then strips everything but the inner IPv4 packet, which starts at
// `pt`, the decrypted payload (the op's dst). The mbuf is unchanged unless
// kOk. Taking `pt` from the op spares the burst's last pass a chain of
// dependent loads (the mbuf's buffer address and data offset) ahead of the
// trailer's reads.
inline EspStatus esp_inbound_finish_payload(rte_mbuf* m, const EspInboundInfo& info, uint8_t* pt) {
  using namespace detail;
  const uint32_t ct_len = info.esp_len - kEspHdrLen - kEspIvLen - kEspIcvLen;  // >= 2
  const uint32_t pad = pt[ct_len - 2];
  const uint8_t nh = pt[ct_len - 1];
  if (pad > ct_len - 2) return EspStatus::kPadLength;
  const uint32_t plen = ct_len - 2 - pad;
  if (pad <= 8) {
    // Pad bytes 1, 2, .., pad: one 8-byte compare (the trailer and the ICV
    // follow them, so 8 bytes from pt + plen are inside the packet).
    if (pad) {
      uint64_t got;
      memcpy(&got, pt + plen, 8);
      got = rte_le_to_cpu_64(got);
      const uint64_t mask = ~uint64_t{0} >> (64 - 8 * pad);  // the low `pad` bytes (1 <= pad <= 8)
      if ((got ^ uint64_t{0x0807060504030201}) & mask) return EspStatus::kBadPadding;
    }
  } else {
    for (uint32_t i = 0; i < pad; ++i)
      if (pt[plen + i] != static_cast<uint8_t>(i + 1)) return EspStatus::kBadPadding;
  }
  if (nh != kNextHdrIpv4) {
    if (nh == kNextHdrNone) return EspStatus::kDummy;
    if (nh == kNextHdrIpv6) return EspStatus::kUnsupported;
    return EspStatus::kBadNextHeader;
  }
  if (plen < kIpv4HdrLen || !ipv4_version_ihl_ok(pt[0])) return EspStatus::kBadInner;
  const uint32_t inner_len = ld16(pt + 2);
  // Anything after the inner packet is TFC padding (RFC 4303 §2.4).
  if (uint32_t{pt[0] & 0xfu} * 4 > inner_len || inner_len > plen) return EspStatus::kBadInner;
  // RFC 1812 §5.2.2: a router forwards only headers whose checksum verifies.
  // The ICV proves only that the peer sent it (Linux drops such a packet in
  // ip_rcv after XFRM); forwarding it would hand the LAN a corrupt header.
  if (!ip_sum_ok(pt, uint32_t{pt[0] & 0xfu} * 4)) return EspStatus::kBadInner;

  // RFC 6040 §4.2 decapsulation (ECN codepoints: 0 Not-ECT, 1 ECT(1),
  // 2 ECT(0), 3 CE).
  const uint8_t outer_ecn = info.outer_tos & 3, inner_ecn = pt[1] & 3;
  uint8_t new_ecn = inner_ecn;
  if (outer_ecn == 3) {
    if (inner_ecn == 0) return EspStatus::kCeNotEct;
    new_ecn = 3;
  } else if (outer_ecn == 1 && inner_ecn == 2) {
    new_ecn = 1;
  }
  if (new_ecn != inner_ecn) {
    uint16_t old_w = ld16(pt);
    pt[1] = static_cast<uint8_t>((pt[1] & ~3) | new_ecn);
    uint16_t new_w = ld16(pt);
    uint32_t c = static_cast<uint16_t>(~ld16(pt + 10));  // RFC 1624: HC' = ~(~HC + ~m + m')
    c += static_cast<uint16_t>(~old_w);
    c += new_w;
    while (c >> 16) c = (c & 0xffff) + (c >> 16);
    st16(pt + 10, static_cast<uint16_t>(~c));
  }

  const uint16_t strip = static_cast<uint16_t>(info.esp_off + kEspHdrLen + kEspIvLen);
  if (m->nb_segs == 1) {
    m->data_off = static_cast<uint16_t>(m->data_off + strip);
    m->data_len = static_cast<uint16_t>(inner_len);
    m->pkt_len = inner_len;
  } else {
    rte_pktmbuf_adj(m, strip);
    rte_pktmbuf_trim(m, static_cast<uint16_t>(rte_pktmbuf_pkt_len(m) - inner_len));
  }
  m->packet_type = RTE_PTYPE_L3_IPV4;
  m->tx_offload = rte_mbuf_tx_offload(0, uint64_t{pt[0] & 0xfu} * 4, 0, 0, 0, 0, 0);  // one store (see outbound)
  return EspStatus::kOk;
}

// The same from the mbuf alone, after decryption with `icv_ok` its verdict.
inline EspStatus esp_inbound_finish(rte_mbuf* m, const EspInboundInfo& info, bool icv_ok) {
  if (!icv_ok) return EspStatus::kIcvMismatch;
  return esp_inbound_finish_payload(m, info,
                                    rte_pktmbuf_mtod_offset(m, uint8_t*, info.esp_off + kEspHdrLen + kEspIvLen));
}

// Single packet: parse, SPI match, replay check, decrypt, replay update,
// finish. kUnknownSpi when the packet's SPI is not sa.spi.
EspStatus esp_decap(rte_mbuf* m, InboundSa& sa);

// Burst for one SA (all packets expected on `sa`): like esp_decap per packet
// with one crypto burst. st[i] per packet; returns the number with kOk.
// Duplicates within one burst: the second copy gets kReplay.
uint16_t esp_decap_burst(rte_mbuf** pkts, InboundSa& sa, uint16_t n, EspStatus* st);

}  // namespace espgw::dataplane
