// ESP tunnel mode on mbufs: wire format, round trips, every bad-input status.
// Cross-backend: espgw's SAs use the best backend (IPsec-MB here), packets
// are forged/checked with the OpenSSL backend.
#include "dataplane/esp.h"

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <set>
#include <string>

#include "crypto/state_arena.h"
#include "tests/dataplane/esp_test_util.h"

using namespace espgw::dataplane;
using espgw::crypto::AeadAlgo;
using espgw::crypto::AeadContext;
using espgw::crypto::AeadOp;
using espgw::crypto::Backend;
using namespace esptest;

namespace {

constexpr uint32_t kSrc = 0xc0000201;  // 192.0.2.1
constexpr uint32_t kDst = 0xc6336402;  // 198.51.100.2

struct Pair {
  Bytes km;
  AeadContext fast, oracle;
  explicit Pair(AeadAlgo a)
      : km(keymat(a)), fast(a, km, espgw::crypto::best_backend()), oracle(a, km, Backend::kOpenssl) {}
};

void init_out(OutboundSa& o, const AeadContext* c, bool esn, bool udp, uint64_t seq = 1) {
  o.spi = 0x1000;
  o.esn = esn;
  o.next_seq.store(seq);
  o.outer_src = kSrc;
  o.outer_dst = kDst;
  o.udp_src_port = udp ? 4500 : 0;
  o.udp_dst_port = udp ? 4500 : 0;
  o.aead = c;
  o.seq_limit = esn ? ~uint64_t{0} : kSeqLimitNoEsn;
  finalize_outbound_sa(o);  // as the control thread does at install
}

void init_in(InboundSa& i, const AeadContext* c, bool esn, bool udp, uint32_t window = 1024) {
  i.spi = 0x1000;
  i.local_addr = kDst;
  i.esn = esn;
  i.udp_port = udp ? 4500 : 0;
  i.aead = c;
  ASSERT_TRUE(i.replay.reset(window, esn));
}

// Oracle decryption of an espgw-made packet: returns the plaintext payload
// (inner packet + trailer) or empty on ICV failure.
Bytes oracle_open(const AeadContext& ctx, const Bytes& pkt, bool esn, uint64_t seq, bool udp) {
  const uint32_t off = 20 + (udp ? 8 : 0);
  Bytes b = pkt;
  uint8_t* e = &b[off];
  uint8_t aad[12];
  std::memcpy(aad, e, 4);
  uint32_t aad_len = 8;
  if (esn) {
    st32(aad + 4, static_cast<uint32_t>(seq >> 32));
    std::memcpy(aad + 8, e + 4, 4);
    aad_len = 12;
  } else {
    std::memcpy(aad + 4, e + 4, 4);
  }
  uint32_t len = static_cast<uint32_t>(b.size()) - off - 16 - 16;
  AeadOp op{&ctx, e + 8, aad, aad_len, e + 16, e + 16, len, e + 16 + len};
  if (!ctx.decrypt(op)) return {};
  return Bytes(e + 16, e + 16 + len);
}

struct Variant {
  AeadAlgo algo;
  bool udp, esn;
};

class EspRoundTrip : public ::testing::TestWithParam<Variant> {};

TEST_P(EspRoundTrip, WireFormatAndDecap) {
  const Variant v = GetParam();
  Pair keys(v.algo);
  OutboundSa out;
  const uint64_t start = v.esn ? 0xfffffff0ull : 1;
  init_out(out, &keys.fast, v.esn, v.udp, start);
  InboundSa in;
  init_in(in, &keys.fast, v.esn, v.udp);

  std::vector<uint32_t> sizes;
  for (uint32_t s = 20; s <= 80; ++s) sizes.push_back(s);
  for (uint32_t s = 81; s <= 1500; s += 37) sizes.push_back(s);
  sizes.push_back(1500);
  uint64_t seq = start;
  for (uint32_t size : sizes) {
    SCOPED_TRACE(size);
    Bytes inner = make_inner(size, static_cast<uint8_t>(size), size & 1, size);
    MbufPtr m = to_mbuf(inner);
    m->tx_offload = ~uint64_t{0};  // stale metadata: the whole word is rewritten
    ASSERT_EQ(esp_encap(m.get(), out), EspStatus::kOk);
    // TX metadata for a NIC's offloads: no L2 header yet, the outer IPv4 header,
    // nothing else.
    EXPECT_EQ(m->tx_offload, rte_mbuf_tx_offload(0, 20, 0, 0, 0, 0, 0));
    Bytes w = from_mbuf(m.get());
    const uint32_t pad = (4 - ((size + 2) & 3)) & 3;
    const uint32_t hdr = 20 + (v.udp ? 8 : 0);
    ASSERT_EQ(w.size(), hdr + 16 + size + pad + 2 + 16);
    ASSERT_EQ(w.size(), size + esp_overhead(size, v.udp));
    // Outer IPv4.
    EXPECT_EQ(w[0], 0x45);
    EXPECT_EQ(w[1], inner[1]);  // DSCP and ECN copied by default
    EXPECT_EQ(ld16(&w[2]), w.size());
    EXPECT_EQ(ld16(&w[6]), (size & 1) ? 0x4000 : 0);  // DF copied
    EXPECT_EQ(w[8], 64);
    EXPECT_EQ(w[9], v.udp ? 17 : 50);
    EXPECT_EQ(cksum(w.data(), 20), 0);
    EXPECT_EQ(ld32(&w[12]), kSrc);
    EXPECT_EQ(ld32(&w[16]), kDst);
    if (v.udp) {
      EXPECT_EQ(ld16(&w[20]), 4500);
      EXPECT_EQ(ld16(&w[22]), 4500);
      EXPECT_EQ(ld16(&w[24]), w.size() - 20);
      EXPECT_EQ(ld16(&w[26]), 0);
    }
    const uint8_t* e = &w[hdr];
    EXPECT_EQ(ld32(e), 0x1000u);
    EXPECT_EQ(ld32(e + 4), static_cast<uint32_t>(seq));
    EXPECT_EQ((uint64_t{ld32(e + 8)} << 32) | ld32(e + 12), seq);  // IV = 64-bit seq
    // Oracle (OpenSSL) decryption; trailer bytes.
    Bytes pt = oracle_open(keys.oracle, w, v.esn, seq, v.udp);
    ASSERT_EQ(pt.size(), size + pad + 2);
    EXPECT_TRUE(std::equal(inner.begin(), inner.end(), pt.begin()));
    for (uint32_t i = 0; i < pad; ++i) EXPECT_EQ(pt[size + i], i + 1);
    EXPECT_EQ(pt[size + pad], pad);
    EXPECT_EQ(pt[size + pad + 1], 4);
    // Back through espgw's inbound path.
    m->tx_offload = ~uint64_t{0};
    ASSERT_EQ(esp_decap(m.get(), in), EspStatus::kOk);
    EXPECT_EQ(from_mbuf(m.get()), inner);
    EXPECT_EQ(m->tx_offload, rte_mbuf_tx_offload(0, (inner[0] & 0xfu) * 4, 0, 0, 0, 0, 0));
    EXPECT_EQ(in.replay.top(), seq);
    ++seq;
  }
  EXPECT_EQ(out.next_seq.load(), seq);
}

INSTANTIATE_TEST_SUITE_P(All, EspRoundTrip,
                         ::testing::Values(Variant{AeadAlgo::kAes128Gcm, false, false},
                                           Variant{AeadAlgo::kAes128Gcm, true, false},
                                           Variant{AeadAlgo::kAes128Gcm, false, true},
                                           Variant{AeadAlgo::kAes256Gcm, true, true},
                                           Variant{AeadAlgo::kAes256Gcm, false, false}));

TEST(EspOutbound, JumboInnerPacket) {
  Pair keys(AeadAlgo::kAes256Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, true);
  InboundSa in;
  init_in(in, &keys.fast, false, true);
  Bytes inner = make_inner(9000);
  MbufPtr m = to_mbuf(inner);
  ASSERT_EQ(esp_encap(m.get(), out), EspStatus::kOk);
  EXPECT_EQ(rte_pktmbuf_data_len(m.get()), 9000 + esp_overhead(9000, true));
  ASSERT_EQ(esp_decap(m.get(), in), EspStatus::kOk);
  EXPECT_EQ(from_mbuf(m.get()), inner);
}

TEST(EspOutbound, OuterHeaderPolicies) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false);
  const uint8_t inner_tos = (46 << 2) | 2;  // EF, ECT(0)
  struct Case {
    int16_t dscp;
    DfPolicy df;
    bool ecn_copy;
    bool inner_df;
    uint8_t want_tos;
    uint16_t want_frag;
  } cases[] = {
      {-1, DfPolicy::kCopy, true, true, inner_tos, 0x4000},
      {-1, DfPolicy::kCopy, true, false, inner_tos, 0},
      {10, DfPolicy::kSet, true, false, (10 << 2) | 2, 0x4000},
      {0, DfPolicy::kClear, false, true, 0, 0},
      {-1, DfPolicy::kClear, false, true, 46 << 2, 0},
  };
  for (const Case& c : cases) {
    out.dscp = c.dscp;
    out.df = c.df;
    out.ecn_copy = c.ecn_copy;
    out.ttl = 17;
    finalize_outbound_sa(out);
    MbufPtr m = to_mbuf(make_inner(100, inner_tos, c.inner_df));
    const uint64_t seq = out.next_seq.load();
    ASSERT_EQ(esp_encap(m.get(), out), EspStatus::kOk);
    Bytes w = from_mbuf(m.get());
    EXPECT_EQ(w[1], c.want_tos);
    EXPECT_EQ(ld16(&w[6]), c.want_frag);
    EXPECT_EQ(w[8], 17);
    EXPECT_EQ(ld16(&w[4]), static_cast<uint16_t>(seq));
    EXPECT_EQ(cksum(w.data(), 20), 0);
  }
}

TEST(EspOutbound, TrimsEthernetPaddingOfInnerPacket) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false);
  InboundSa in;
  init_in(in, &keys.fast, false, false);
  Bytes inner = make_inner(28);
  Bytes padded = inner;
  padded.resize(46, 0);  // minimum Ethernet payload
  MbufPtr m = to_mbuf(padded);
  ASSERT_EQ(esp_encap(m.get(), out), EspStatus::kOk);
  EXPECT_EQ(rte_pktmbuf_data_len(m.get()), 28 + esp_overhead(28, false));
  ASSERT_EQ(esp_decap(m.get(), in), EspStatus::kOk);
  EXPECT_EQ(from_mbuf(m.get()), inner);
}

TEST(EspOutbound, BurstReservesSequenceNumbersWithOneAdd) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, true, 500);
  InboundSa in;
  init_in(in, &keys.fast, false, true);
  constexpr uint16_t n = 45;  // more than one crypto burst
  rte_mbuf* pk[n];
  std::vector<Bytes> inner;
  for (uint16_t i = 0; i < n; ++i) {
    inner.push_back(make_inner(40 + i * 31, 0, false, i));
    pk[i] = to_mbuf(inner.back()).release();
  }
  // Packet 7 is not IPv4: it fails, the others still get consecutive numbers.
  rte_pktmbuf_mtod(pk[7], uint8_t*)[0] = 0x65;
  EspStatus st[n];
  EXPECT_EQ(esp_outbound_burst(pk, &out, n, st), n - 1);
  EXPECT_EQ(out.next_seq.load(), 500u + n);
  for (uint16_t i = 0; i < n; ++i) {
    SCOPED_TRACE(i);
    if (i == 7) {
      EXPECT_EQ(st[i], EspStatus::kBadInner);
      EXPECT_EQ(rte_pktmbuf_data_len(pk[i]), inner[i].size());
      rte_pktmbuf_free(pk[i]);
      continue;
    }
    ASSERT_EQ(st[i], EspStatus::kOk);
    Bytes w = from_mbuf(pk[i]);
    EXPECT_EQ(ld32(&w[32]), 500u + i);
    Bytes pt = oracle_open(keys.oracle, w, false, 500 + i, true);
    ASSERT_FALSE(pt.empty());
    EXPECT_TRUE(std::equal(inner[i].begin(), inner[i].end(), pt.begin()));
  }
  // Inbound burst, in reverse order (reordering within the window).
  rte_mbuf* rev[n - 1];
  std::vector<uint16_t> orig;
  for (int i = n - 1, k = 0; i >= 0; --i)
    if (i != 7) { rev[k++] = pk[i]; orig.push_back(static_cast<uint16_t>(i)); }
  EspStatus ist[n - 1];
  EXPECT_EQ(esp_decap_burst(rev, in, n - 1, ist), n - 1);
  for (uint16_t k = 0; k < n - 1; ++k) {
    EXPECT_EQ(ist[k], EspStatus::kOk);
    EXPECT_EQ(from_mbuf(rev[k]), inner[orig[k]]);
    rte_pktmbuf_free(rev[k]);
  }
}

TEST(EspOutbound, SeqExhaustedLeavesPacketUntouched) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false, 0xffffffffull);
  Bytes inner = make_inner(64);
  MbufPtr m = to_mbuf(inner);
  ASSERT_EQ(esp_encap(m.get(), out), EspStatus::kOk);  // the last 32-bit number
  MbufPtr m2 = to_mbuf(inner);
  EXPECT_EQ(esp_encap(m2.get(), out), EspStatus::kSeqExhausted);  // never wraps
  EXPECT_EQ(from_mbuf(m2.get()), inner);
  EXPECT_EQ(m2->data_off, RTE_PKTMBUF_HEADROOM);
  // Even a misconfigured limit above 2^32 does not wrap a non-ESN SA.
  out.seq_limit = ~uint64_t{0};
  finalize_outbound_sa(out);
  EXPECT_EQ(esp_encap(m2.get(), out), EspStatus::kSeqExhausted);
  // Explicit lower limit.
  out.seq_limit = 10;
  finalize_outbound_sa(out);
  out.next_seq.store(10);
  EXPECT_EQ(esp_encap(m2.get(), out), EspStatus::kSeqExhausted);
  // ESN continues past 2^32.
  out.esn = true;
  out.seq_limit = ~uint64_t{0};
  finalize_outbound_sa(out);
  out.next_seq.store(uint64_t{1} << 32);
  EXPECT_EQ(esp_encap(m2.get(), out), EspStatus::kOk);
  EXPECT_EQ(ld32(rte_pktmbuf_mtod_offset(m2.get(), uint8_t*, 24)), 0u);  // low 32 bits on the wire
}

TEST(EspOutbound, NoRoom) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, true);
  Bytes inner = make_inner(100);
  // Headroom 43 < 44 needed with UDP.
  MbufPtr m = to_mbuf(inner, 43);
  EXPECT_EQ(esp_encap(m.get(), out), EspStatus::kNoRoom);
  EXPECT_EQ(from_mbuf(m.get()), inner);
  EXPECT_EQ(m->data_off, 43);
  out.udp_dst_port = out.udp_src_port = 0;  // plain ESP needs 36: fits
  finalize_outbound_sa(out);
  EXPECT_EQ(esp_encap(m.get(), out), EspStatus::kOk);
  // Tailroom: fill the buffer to 10 bytes short of the end (needs 2+2+16).
  rte_mbuf* t = rte_pktmbuf_alloc(pool());
  uint16_t room = rte_pktmbuf_tailroom(t);
  Bytes big = make_inner(room - 10);
  std::memcpy(rte_pktmbuf_append(t, static_cast<uint16_t>(big.size())), big.data(), big.size());
  EXPECT_EQ(esp_encap(t, out), EspStatus::kNoRoom);
  EXPECT_EQ(from_mbuf(t), big);
  rte_pktmbuf_free(t);
}

TEST(EspOutbound, PrepareWritesTheEthernetHeaderInTheSamePass) {
  // The worker's path: esp_outbound_prepare with the next hop's Ethernet
  // header, then the crypto burst; the frame is then ready to send.
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false);
  // 16 readable bytes (the contract): the last two are not Ethernet and
  // must not survive (the outer header overwrites them).
  const uint8_t eth[16] = {0x02, 0, 0, 0, 0, 0x09, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, 0xee, 0xee};
  Bytes inner = make_inner(100);
  AeadOp op;
  uint8_t aad[kAadScratch];
  // Plain ESP needs 36 bytes of headroom, 50 with Ethernet.
  MbufPtr small = to_mbuf(inner, 49);
  EXPECT_EQ(esp_outbound_prepare(small.get(), out, 1, op, aad, eth), EspStatus::kNoRoom);
  EXPECT_EQ(from_mbuf(small.get()), inner);
  EXPECT_EQ(small->data_off, 49);
  MbufPtr m = to_mbuf(inner, 50);
  m->tx_offload = ~uint64_t{0};
  ASSERT_EQ(esp_outbound_prepare(m.get(), out, 1, op, aad, eth), EspStatus::kOk);
  espgw::crypto::encrypt_burst(&op, 1);
  EXPECT_EQ(m->data_off, 0);
  EXPECT_EQ(m->tx_offload, rte_mbuf_tx_offload(14, 20, 0, 0, 0, 0, 0));
  Bytes f = from_mbuf(m.get());
  ASSERT_EQ(f.size(), 14 + inner.size() + esp_overhead(inner.size(), false));
  EXPECT_TRUE(std::equal(eth, eth + 14, f.begin()));
  Bytes w(f.begin() + 14, f.end());
  EXPECT_EQ(w[0], 0x45);
  EXPECT_EQ(w[1], 0);  // TOS copied from the inner packet's
  EXPECT_EQ(ld16(&w[2]), w.size());
  EXPECT_EQ(cksum(w.data(), 20), 0);
  Bytes pt = oracle_open(keys.oracle, w, false, 1, false);  // OpenSSL opens it
  ASSERT_GE(pt.size(), inner.size());
  EXPECT_TRUE(std::equal(inner.begin(), inner.end(), pt.begin()));
}

TEST(EspOutbound, BadInnerAndMultiSegment) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false);
  Bytes inner = make_inner(60);
  Bytes v6 = inner;
  v6[0] = 0x60;
  MbufPtr a = to_mbuf(v6);
  EXPECT_EQ(esp_encap(a.get(), out), EspStatus::kBadInner);
  EXPECT_EQ(from_mbuf(a.get()), v6);
  Bytes long_tot = inner;
  st16(&long_tot[2], 61);
  MbufPtr b = to_mbuf(long_tot);
  EXPECT_EQ(esp_encap(b.get(), out), EspStatus::kBadInner);
  MbufPtr c = to_mbuf(Bytes(inner.begin(), inner.begin() + 19));
  EXPECT_EQ(esp_encap(c.get(), out), EspStatus::kBadInner);
  // Two segments.
  MbufPtr h = to_mbuf(Bytes(inner.begin(), inner.begin() + 30));
  rte_mbuf* tail = to_mbuf(Bytes(inner.begin() + 30, inner.end())).release();
  ASSERT_EQ(rte_pktmbuf_chain(h.get(), tail), 0);
  EXPECT_EQ(esp_encap(h.get(), out), EspStatus::kUnsupported);
  EXPECT_EQ(rte_pktmbuf_pkt_len(h.get()), 60u);
}

// The prebuilt outer header template (finalize_outbound_sa) must give the
// same bytes as an SA that was never finalized (built on the fly from its
// settings) for every combination of settings.
TEST(EspOutbound, TemplateMatchesSettingsForEveryPolicy) {
  Pair keys(AeadAlgo::kAes128Gcm);
  int combos = 0;
  for (bool udp : {false, true})
    for (bool esn : {false, true})
      for (int16_t dscp : {int16_t{-1}, int16_t{0}, int16_t{46}})
        for (DfPolicy df : {DfPolicy::kCopy, DfPolicy::kSet, DfPolicy::kClear})
          for (bool ecn : {false, true}) {
            SCOPED_TRACE(::testing::Message() << "udp " << udp << " esn " << esn << " dscp " << dscp << " df "
                                              << int(df) << " ecn " << ecn);
            const uint64_t start = esn ? 0x1fffffff0ull : 0xfff0;
            OutboundSa fast, slow;
            for (OutboundSa* o : {&fast, &slow}) {
              init_out(*o, &keys.fast, esn, udp, start);
              o->dscp = dscp;
              o->df = df;
              o->ecn_copy = ecn;
              o->ttl = static_cast<uint8_t>(3 + combos);
              o->spi = 0xa1b2c3d4;
              o->outer_src = 0x0a000001 + combos;
              o->outer_dst = 0xfffefdfc - combos;
            }
            finalize_outbound_sa(fast);
            slow.tmpl.ready = false;  // as an SA nobody finalized
            ASSERT_TRUE(fast.tmpl.ready);
            for (uint32_t size : {20u, 21u, 22u, 23u, 64u, 577u, 1400u}) {
              for (uint8_t tos : {uint8_t{0}, uint8_t{0xff}, uint8_t{(46 << 2) | 1}}) {
                Bytes inner = make_inner(size, tos, (size & 1) != 0, size);
                MbufPtr a = to_mbuf(inner), b = to_mbuf(inner);
                ASSERT_EQ(esp_encap(a.get(), fast), EspStatus::kOk);
                ASSERT_EQ(esp_encap(b.get(), slow), EspStatus::kOk);
                Bytes wa = from_mbuf(a.get());
                ASSERT_EQ(wa, from_mbuf(b.get()));
                EXPECT_EQ(cksum(wa.data(), 20), 0);
                EXPECT_EQ(wa[1], dscp >= 0 ? ((dscp << 2) | (ecn ? tos & 3 : 0)) : ((tos & 0xfc) | (ecn ? tos & 3 : 0)));
                EXPECT_EQ(a->data_off, b->data_off);
              }
            }
            combos++;
          }
  EXPECT_EQ(combos, 72);
}

TEST(EspOutbound, TemplateSequenceLimits) {
  Pair keys(AeadAlgo::kAes128Gcm);
  OutboundSa out;
  init_out(out, &keys.fast, false, false);
  Bytes inner = make_inner(64);
  // seq 0 is never used; a limit of 0 or 1 allows nothing.
  for (uint64_t limit : {uint64_t{0}, uint64_t{1}}) {
    out.seq_limit = limit;
    finalize_outbound_sa(out);
    out.next_seq.store(1);
    MbufPtr m = to_mbuf(inner);
    EXPECT_EQ(esp_encap(m.get(), out), EspStatus::kSeqExhausted);
  }
  out.seq_limit = 3;
  finalize_outbound_sa(out);
  out.next_seq.store(0);
  MbufPtr z = to_mbuf(inner);
  EXPECT_EQ(esp_encap(z.get(), out), EspStatus::kSeqExhausted);  // 0
  for (int i = 1; i <= 2; i++) {
    MbufPtr m = to_mbuf(inner);
    EXPECT_EQ(esp_encap(m.get(), out), EspStatus::kOk) << i;
  }
  MbufPtr m = to_mbuf(inner);
  EXPECT_EQ(esp_encap(m.get(), out), EspStatus::kSeqExhausted);  // 3 == limit
}

// ---------------------------------------------------------------- inbound

class EspInbound : public ::testing::Test {
 protected:
  EspInbound() : keys(AeadAlgo::kAes128Gcm) {}
  void SetUp() override { init_in(in, &keys.fast, false, false, 64); }

  // Runs esp_decap and checks that a failing packet was not modified at all
  // (pre-decryption failures) or not moved/resized (post-decryption ones).
  EspStatus decap(const Bytes& pkt, bool payload_may_change = false) {
    MbufPtr m = to_mbuf(pkt);
    EspStatus s = esp_decap(m.get(), in);
    if (s != EspStatus::kOk) {
      EXPECT_EQ(m->data_off, RTE_PKTMBUF_HEADROOM);
      EXPECT_EQ(rte_pktmbuf_data_len(m.get()), pkt.size());
      EXPECT_EQ(rte_pktmbuf_pkt_len(m.get()), pkt.size());
      Bytes after = from_mbuf(m.get());
      if (payload_may_change) {
        const size_t hdr = 20 + 16 + ((pkt.size() > 9 && pkt[9] == 17) ? 8 : 0);
        EXPECT_TRUE(std::equal(pkt.begin(), pkt.begin() + std::min(hdr, pkt.size()), after.begin()));
      } else {
        EXPECT_EQ(after, pkt);
      }
    } else {
      last = from_mbuf(m.get());
    }
    return s;
  }
  Bytes good(uint64_t seq, uint32_t inner = 60, uint16_t udp = 0) {
    ForgeSpec f;
    f.seq = seq;
    f.udp_dport = udp;
    return forge(keys.oracle, f, good_payload(make_inner(inner)));
  }

  Pair keys;
  InboundSa in;
  Bytes last;
};

TEST_F(EspInbound, ForgedGoodPacketDecaps) {
  EXPECT_EQ(decap(good(1)), EspStatus::kOk);
  EXPECT_EQ(last, make_inner(60));
}

TEST_F(EspInbound, Truncated) {
  Bytes p = good(1);
  EXPECT_EQ(decap(Bytes(p.begin(), p.begin() + 19)), EspStatus::kTruncated);
  EXPECT_EQ(decap(Bytes()), EspStatus::kTruncated);
  // IHL says 24 bytes, only 20 present.
  Bytes q(p.begin(), p.begin() + 20);
  q[0] = 0x46;
  st16(&q[2], 20);
  EXPECT_EQ(decap(q), EspStatus::kTruncated);
  // UDP header cut short (total length covers only 4 of its 8 bytes).
  in.udp_port = 4500;
  Bytes u = good(1, 60, 4500);
  u.resize(24);
  st16(&u[2], 24);
  fix_ip_cksum(u.data());
  EXPECT_EQ(decap(u), EspStatus::kTruncated);
}

TEST_F(EspInbound, BadOuterHeader) {
  const Bytes p = good(1);
  auto mutate = [&](auto fn, bool fix = true) {
    Bytes q = p;
    fn(q);
    if (fix) fix_ip_cksum(q.data());
    return decap(q);
  };
  EXPECT_EQ(mutate([](Bytes& q) { q[0] = 0x65; }), EspStatus::kBadOuterHeader);  // version 6
  EXPECT_EQ(mutate([](Bytes& q) { q[0] = 0x44; }, false), EspStatus::kBadOuterHeader);  // IHL 4
  EXPECT_EQ(mutate([&](Bytes& q) { st16(&q[2], static_cast<uint16_t>(p.size() + 1)); }),
            EspStatus::kBadOuterHeader);  // longer than the mbuf
  EXPECT_EQ(mutate([](Bytes& q) { st16(&q[2], 19); }), EspStatus::kBadOuterHeader);
  EXPECT_EQ(mutate([](Bytes& q) { st16(&q[6], 0x2000); }), EspStatus::kBadOuterHeader);  // MF
  EXPECT_EQ(mutate([](Bytes& q) { st16(&q[6], 0x0001); }), EspStatus::kBadOuterHeader);  // offset
  EXPECT_EQ(mutate([](Bytes& q) { q[8] ^= 1; }, false), EspStatus::kBadOuterHeader);     // checksum
  // UDP length disagreeing with the IP total length.
  in.udp_port = 4500;
  Bytes u = good(1, 60, 4500);
  st16(&u[24], static_cast<uint16_t>(ld16(&u[24]) - 4));
  EXPECT_EQ(decap(u), EspStatus::kBadOuterHeader);
  // Nothing moved.
  EXPECT_EQ(in.replay.top(), 0u);
}

TEST_F(EspInbound, EthernetPaddingAfterOuterPacketIsIgnored) {
  Bytes p = good(1);
  p.resize(p.size() + 6, 0);
  EXPECT_EQ(decap(p), EspStatus::kOk);
  EXPECT_EQ(last, make_inner(60));
}

TEST_F(EspInbound, OptionsInOuterHeader) {
  // IHL 6 (4 bytes of options, NOP NOP NOP EOL).
  Bytes p = good(1);
  Bytes q(p.begin(), p.begin() + 20);
  q.insert(q.end(), {1, 1, 1, 0});
  q.insert(q.end(), p.begin() + 20, p.end());
  q[0] = 0x46;
  st16(&q[2], static_cast<uint16_t>(q.size()));
  fix_ip_cksum(q.data());
  EXPECT_EQ(decap(q), EspStatus::kOk);
  EXPECT_EQ(last, make_inner(60));
}

TEST_F(EspInbound, NotEsp) {
  Bytes p = good(1);
  Bytes tcp = p;
  tcp[9] = 6;
  fix_ip_cksum(tcp.data());
  EXPECT_EQ(decap(tcp), EspStatus::kNotEsp);
  in.udp_port = 4500;
  Bytes dns = good(1, 60, 53);
  EXPECT_EQ(decap(dns), EspStatus::kNotEsp);
  // IKE on 4500: the non-ESP marker (four zero bytes where the SPI would be).
  Bytes ike = good(1, 60, 4500);
  st32(&ike[28], 0);
  EXPECT_EQ(decap(ike), EspStatus::kNotEsp);
  // NAT keepalive: one 0xff byte of UDP payload.
  Bytes ka(29);
  ka[0] = 0x45;
  st16(&ka[2], 29);
  ka[8] = 64;
  ka[9] = 17;
  st32(&ka[12], kSrc);
  st32(&ka[16], kDst);
  fix_ip_cksum(ka.data());
  st16(&ka[20], 4500);
  st16(&ka[22], 4500);
  st16(&ka[24], 9);
  ka[28] = 0xff;
  EXPECT_EQ(decap(ka), EspStatus::kNotEsp);
}

TEST_F(EspInbound, ShortEsp) {
  Bytes p = good(1);
  // 33 bytes of ESP: one less than header + IV + 2 + ICV.
  Bytes q(p.begin(), p.begin() + 20 + 33);
  st16(&q[2], static_cast<uint16_t>(q.size()));
  fix_ip_cksum(q.data());
  EXPECT_EQ(decap(q), EspStatus::kShortEsp);
  // Over UDP, 4 bytes (SPI only).
  in.udp_port = 4500;
  Bytes u = good(1, 60, 4500);
  u.resize(32);
  st16(&u[2], 32);
  st16(&u[24], 12);
  fix_ip_cksum(u.data());
  EXPECT_EQ(decap(u), EspStatus::kShortEsp);
}

TEST_F(EspInbound, UnknownSpiOrWrongArrival) {
  Bytes p = good(1);
  in.spi = 0x1001;
  EXPECT_EQ(decap(p), EspStatus::kUnknownSpi);
  in.spi = 0x1000;
  in.local_addr = kDst + 1;
  EXPECT_EQ(decap(p), EspStatus::kUnknownSpi);
  in.local_addr = 0;  // any destination
  in.udp_port = 4500;  // SA expects UDP, packet is plain ESP
  EXPECT_EQ(decap(p), EspStatus::kUnknownSpi);
  in.udp_port = 0;
  EXPECT_EQ(decap(good(1, 60, 4500)), EspStatus::kUnknownSpi);  // UDP on an SA for plain ESP
  EXPECT_EQ(in.replay.top(), 0u);
  EXPECT_EQ(decap(p), EspStatus::kOk);
}

// The pipeline's mode (ESP-in-UDP on any port but 500, the SA decides):
// one compare of the datagram's port with the SA's decides the
// encapsulation, so a datagram to port 0 (an SA's udp_port 0 is plain ESP)
// must never be taken for ESP, and every mismatch is an unknown SPI.
TEST_F(EspInbound, AnyPortModeEncapsulationMatchesTheSa) {
  auto prepare = [&](const Bytes& frame, uint16_t sa_port) {
    MbufPtr m = to_mbuf(frame);
    EspInboundInfo info;
    EspStatus st = esp_inbound_parse(m.get(), info, kAnyNatTPort);
    if (st != EspStatus::kOk) return st;
    in.udp_port = sa_port;
    AeadOp op;
    uint8_t aad[kAadScratch];
    return esp_inbound_prepare<true>(info, in, 1, op, aad);
  };
  Bytes zero = good(1, 60, 4500);
  st16(&zero[22], 0);  // UDP destination port 0
  EXPECT_EQ(prepare(zero, 0), EspStatus::kNotEsp);
  EXPECT_EQ(prepare(good(1, 60, 4501), 4501), EspStatus::kOk);
  EXPECT_EQ(prepare(good(1, 60, 4501), 4500), EspStatus::kUnknownSpi);  // on another port than the SA's
  EXPECT_EQ(prepare(good(1, 60, 4500), 0), EspStatus::kUnknownSpi);     // UDP on an SA for plain ESP
  EXPECT_EQ(prepare(good(1), 4500), EspStatus::kUnknownSpi);            // plain ESP on an SA for UDP
  EXPECT_EQ(prepare(good(1), 0), EspStatus::kOk);
  // Found by (SPI, destination): the destination is not compared again;
  // the convenience API compares it.
  in.local_addr = kDst + 1;
  EXPECT_EQ(prepare(good(1), 0), EspStatus::kOk);
  EXPECT_EQ(decap(good(1)), EspStatus::kUnknownSpi);
}

TEST_F(EspInbound, ReplayAndTooOld) {
  Bytes p = good(100);
  EXPECT_EQ(decap(p), EspStatus::kOk);
  EXPECT_EQ(decap(p), EspStatus::kReplay);
  EXPECT_EQ(decap(good(37)), EspStatus::kOk);  // window of 64: [37, 100]
  EXPECT_EQ(decap(good(36)), EspStatus::kTooOld);
  EXPECT_EQ(decap(good(37)), EspStatus::kReplay);
}

TEST_F(EspInbound, DuplicateInOneBurst) {
  Bytes p = good(9);
  rte_mbuf* pk[3] = {to_mbuf(p).release(), to_mbuf(p).release(), to_mbuf(good(10)).release()};
  EspStatus st[3];
  EXPECT_EQ(esp_decap_burst(pk, in, 3, st), 2);
  EXPECT_EQ(st[0], EspStatus::kOk);
  EXPECT_EQ(st[1], EspStatus::kReplay);
  EXPECT_EQ(st[2], EspStatus::kOk);
  for (rte_mbuf* m : pk) rte_pktmbuf_free(m);
}

TEST_F(EspInbound, IcvMismatchDoesNotMoveTheWindow) {
  const Bytes p = good(1000);
  for (size_t pos : {size_t{24}, size_t{28}, size_t{36}, size_t{40}, p.size() - 17, p.size() - 1}) {
    SCOPED_TRACE(pos);
    Bytes q = p;
    q[pos] ^= 0x80;  // seq (AAD), IV, ciphertext, last ciphertext byte, ICV
    EXPECT_EQ(decap(q, true), EspStatus::kIcvMismatch);
    EXPECT_EQ(in.replay.top(), 0u);
  }
  // Wrong key.
  Bytes k = keys.km;
  k[0] ^= 1;
  AeadContext wrong(AeadAlgo::kAes128Gcm, k, Backend::kOpenssl);
  ForgeSpec f;
  f.seq = 1000;
  EXPECT_EQ(decap(forge(wrong, f, good_payload(make_inner(60))), true), EspStatus::kIcvMismatch);
  EXPECT_EQ(in.replay.top(), 0u);
  // The genuine packet still goes through afterwards.
  EXPECT_EQ(decap(p), EspStatus::kOk);
  EXPECT_EQ(in.replay.top(), 1000u);
}

TEST_F(EspInbound, EsnHighBitsAreAuthenticated) {
  init_in(in, &keys.fast, true, false, 64);
  ForgeSpec f;
  f.esn = true;
  f.seq = 0xffffffe0;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(make_inner(60)))), EspStatus::kOk);
  f.seq = (uint64_t{1} << 32) + 6;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(make_inner(60)))), EspStatus::kOk);
  // Same low bits, authenticated with high = 2: the receiver infers high = 1.
  f.seq = (uint64_t{2} << 32) + 7;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(make_inner(60))), true), EspStatus::kIcvMismatch);
  // Late packet from before the wrap (high = 0).
  f.seq = 0xfffffff0;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(make_inner(60)))), EspStatus::kOk);
  // Without ESN in the AAD (8 bytes) it must fail on an ESN SA.
  f.esn = false;
  f.seq = (uint64_t{1} << 32) + 8;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(make_inner(60))), true), EspStatus::kIcvMismatch);
  EXPECT_EQ(in.replay.top(), (uint64_t{1} << 32) + 6);
}

TEST_F(EspInbound, BadPadding) {
  Bytes pl = make_inner(60);
  pl.insert(pl.end(), {2, 1, 2, 4});  // pad length 2, pad bytes should be 1, 2
  ForgeSpec f;
  EXPECT_EQ(decap(forge(keys.oracle, f, pl), true), EspStatus::kBadPadding);
  // A zero pad byte.
  Bytes pl2 = make_inner(60);
  pl2.insert(pl2.end(), {1, 2, 0, 4, 4, 4});
  f.seq = 2;
  EXPECT_EQ(decap(forge(keys.oracle, f, pl2), true), EspStatus::kBadPadding);
  // Authenticated packets move the window even when the trailer is bad.
  EXPECT_EQ(in.replay.top(), 2u);
  // Every pad length up to 20 (short and long compare paths): good, and
  // with each pad byte wrong in turn.
  uint64_t seq = 3;
  for (uint32_t pad = 0; pad <= 20; pad++) {
    SCOPED_TRACE(pad);
    Bytes inner = make_inner(60);
    Bytes ok = inner;
    for (uint32_t i = 1; i <= pad; i++) ok.push_back(static_cast<uint8_t>(i));
    ok.push_back(static_cast<uint8_t>(pad));
    ok.push_back(4);
    f.seq = seq++;
    EXPECT_EQ(decap(forge(keys.oracle, f, ok), true), EspStatus::kOk);
    EXPECT_EQ(last, inner);
    for (uint32_t i = 0; i < pad; i++) {
      Bytes bad = ok;
      bad[inner.size() + i] ^= 0x10;
      f.seq = seq++;
      EXPECT_EQ(decap(forge(keys.oracle, f, bad), true), EspStatus::kBadPadding) << i;
    }
  }
}

TEST_F(EspInbound, PadLengthBeyondPayload) {
  Bytes pl = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255, 4};  // pad length 255 > 10
  ForgeSpec f;
  EXPECT_EQ(decap(forge(keys.oracle, f, pl), true), EspStatus::kPadLength);
  Bytes pl2 = {1, 2, 4};  // pad length 2, but only 1 byte precedes the trailer
  f.seq = 2;
  EXPECT_EQ(decap(forge(keys.oracle, f, pl2), true), EspStatus::kPadLength);
  // Exactly 2 bytes of plaintext (only the trailer), pad length 0, next header 4:
  // an empty inner packet.
  f.seq = 3;
  EXPECT_EQ(decap(forge(keys.oracle, f, {0, 4}), true), EspStatus::kBadInner);
}

TEST_F(EspInbound, NextHeader) {
  ForgeSpec f;
  Bytes inner = make_inner(60);
  f.seq = 1;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(inner, 6)), true), EspStatus::kBadNextHeader);
  f.seq = 2;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(inner, 0)), true), EspStatus::kBadNextHeader);
  f.seq = 3;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(inner, 59)), true), EspStatus::kDummy);
  f.seq = 4;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(inner, 41)), true), EspStatus::kUnsupported);
}

TEST_F(EspInbound, BadInner) {
  ForgeSpec f;
  auto with = [&](auto fn) {
    Bytes inner = make_inner(60);
    fn(inner);
    ++f.seq;
    return decap(forge(keys.oracle, f, good_payload(inner)), true);
  };
  EXPECT_EQ(with([](Bytes& b) { b[0] = 0x65; }), EspStatus::kBadInner);          // version 6 with nh 4
  EXPECT_EQ(with([](Bytes& b) { b[0] = 0x44; }), EspStatus::kBadInner);          // IHL 4
  EXPECT_EQ(with([](Bytes& b) { b[0] = 0x4f; b.resize(40); st16(&b[2], 40); }),
            EspStatus::kBadInner);                                                // IHL 60 > 40 bytes
  EXPECT_EQ(with([](Bytes& b) { st16(&b[2], 19); }), EspStatus::kBadInner);      // total length < IHL
  EXPECT_EQ(with([](Bytes& b) { st16(&b[2], 61); }), EspStatus::kBadInner);      // longer
  EXPECT_EQ(with([](Bytes& b) { b.resize(19); }), EspStatus::kBadInner);         // < 20 bytes
  // Every first byte: only version 4 with IHL 5..15 (RFC 791) gets through.
  for (uint32_t b0 = 0; b0 < 256; b0++) {
    const EspStatus want = (b0 >> 4) == 4 && (b0 & 0xf) >= 5 ? EspStatus::kOk : EspStatus::kBadInner;
    EXPECT_EQ(with([b0](Bytes& b) {
                b.resize(80);
                st16(&b[2], 80);
                b[0] = static_cast<uint8_t>(b0);
                if ((b0 & 0xf) >= 5) fix_ip_cksum(b.data());
              }),
              want)
        << b0;
  }
}

TEST_F(EspInbound, EcnCeIsPropagatedToEcnCapableInner) {
  ForgeSpec f;
  f.outer_tos = 3;  // CE
  Bytes ect = make_inner(60, 0xb8 | 2);
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(ect))), EspStatus::kOk);
  EXPECT_EQ(last[1], 0xb8 | 3);
  EXPECT_EQ(cksum(last.data(), 20), 0);
  EXPECT_TRUE(std::equal(last.begin() + 2, last.begin() + 10, ect.begin() + 2));
  EXPECT_TRUE(std::equal(last.begin() + 12, last.end(), ect.begin() + 12));
  // RFC 6040 §4.2: outer CE over a Not-ECT inner packet is dropped (the
  // congestion mark could not be passed on).
  f.seq = 2;
  Bytes plain = make_inner(60, 0xb8);
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(plain)), true), EspStatus::kCeNotEct);
  // Outer ECT(1) over inner ECT(0): ECT(1); outer ECT(0) leaves the inner as is.
  f.seq = 3;
  f.outer_tos = 1;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(ect))), EspStatus::kOk);
  EXPECT_EQ(last[1], 0xb8 | 1);
  EXPECT_EQ(cksum(last.data(), 20), 0);
  f.seq = 4;
  f.outer_tos = 2;
  EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(plain))), EspStatus::kOk);
  EXPECT_EQ(last, plain);
}

// RFC 4303 §2.4/§2.7: TFC padding after the inner packet (the payload is
// longer than the inner total length) is accepted and trimmed.
TEST_F(EspInbound, TfcPaddingTrimmed) {
  ForgeSpec f;
  for (uint32_t extra : {1u, 3u, 64u, 500u}) {
    SCOPED_TRACE(extra);
    ++f.seq;
    Bytes inner = make_inner(60);
    Bytes padded = inner;
    for (uint32_t i = 0; i < extra; ++i) padded.push_back(static_cast<uint8_t>(0xa5 ^ i));
    EXPECT_EQ(decap(forge(keys.oracle, f, good_payload(padded))), EspStatus::kOk);
    EXPECT_EQ(last, inner);
  }
}

TEST_F(EspInbound, MultiSegmentUnsupported) {
  Bytes p = good(1);
  MbufPtr h = to_mbuf(Bytes(p.begin(), p.begin() + 40));
  rte_mbuf* t = to_mbuf(Bytes(p.begin() + 40, p.end())).release();
  ASSERT_EQ(rte_pktmbuf_chain(h.get(), t), 0);
  EXPECT_EQ(esp_decap(h.get(), in), EspStatus::kUnsupported);
  EXPECT_EQ(rte_pktmbuf_pkt_len(h.get()), p.size());
}

TEST_F(EspInbound, SplitApiWithoutTheConvenience) {
  // The pipeline's sequence: parse, look up, check, prepare, burst, update, finish.
  in.udp_port = 4500;
  Bytes p = good(77, 300, 4500);
  MbufPtr m = to_mbuf(p);
  EspInboundInfo info;
  ASSERT_EQ(esp_inbound_parse(m.get(), info), EspStatus::kOk);
  EXPECT_EQ(info.spi, 0x1000u);
  EXPECT_EQ(info.seq_low, 77u);
  EXPECT_TRUE(info.udp);
  EXPECT_EQ(info.esp_off, 28);
  EXPECT_EQ(info.esp, rte_pktmbuf_mtod_offset(m.get(), uint8_t*, 28));  // prepare takes the header from here
  EXPECT_EQ(info.esp_len, p.size() - 28);
  EXPECT_EQ(info.outer_src, kSrc);
  EXPECT_EQ(info.outer_dst, kDst);
  uint64_t full;
  ASSERT_EQ(in.replay.check(info.seq_low, &full), ReplayVerdict::kOk);
  AeadOp op;
  uint8_t aad[kAadScratch];
  ASSERT_EQ(esp_inbound_prepare(info, in, full, op, aad), EspStatus::kOk);
  EXPECT_EQ(op.dst, info.esp + kEspHdrLen + kEspIvLen);  // the payload the pipeline's finish starts from
  uint8_t ok = 0;
  EXPECT_EQ(espgw::crypto::decrypt_burst(&op, 1, &ok), 1u);
  ASSERT_EQ(ok, 1);
  EXPECT_EQ(in.replay.update(full), ReplayVerdict::kOk);
  EXPECT_EQ(esp_inbound_finish(m.get(), info, ok), EspStatus::kOk);
  EXPECT_EQ(from_mbuf(m.get()), make_inner(300));
  // finish() with icv_ok = false is the ICV status.
  MbufPtr m2 = to_mbuf(p);
  ASSERT_EQ(esp_inbound_parse(m2.get(), info), EspStatus::kOk);
  EXPECT_EQ(esp_inbound_finish(m2.get(), info, false), EspStatus::kIcvMismatch);
  EXPECT_EQ(from_mbuf(m2.get()), p);
  // The pipeline's finish, from the op's payload pointer: the same inner
  // packet (the next sequence number: 77 is in the window now).
  Bytes p3 = good(78, 300, 4500);
  MbufPtr m3 = to_mbuf(p3);
  ASSERT_EQ(esp_inbound_parse(m3.get(), info), EspStatus::kOk);
  ASSERT_EQ(in.replay.check(info.seq_low, &full), ReplayVerdict::kOk);
  ASSERT_EQ(esp_inbound_prepare<true>(info, in, full, op, aad), EspStatus::kOk);
  ASSERT_EQ(espgw::crypto::decrypt_burst(&op, 1, &ok), 1u);
  EXPECT_EQ(esp_inbound_finish_payload(m3.get(), info, op.dst), EspStatus::kOk);
  EXPECT_EQ(rte_pktmbuf_mtod(m3.get(), uint8_t*), op.dst);
  EXPECT_EQ(from_mbuf(m3.get()), make_inner(300));
}

TEST(EspStatusNames, AllDistinct) {
  std::set<std::string> names;
  for (int i = 0; i < static_cast<int>(EspStatus::kCount); ++i)
    names.insert(to_string(static_cast<EspStatus>(i)));
  EXPECT_EQ(names.size(), static_cast<size_t>(EspStatus::kCount));
  EXPECT_EQ(names.count("unknown"), 0u);
}

// Random corruption of valid packets: never a crash, never kOk, never an
// mbuf out of bounds (ASan build).
TEST_F(EspInbound, RandomCorruptionNeverAccepted) {
  std::mt19937 rng(42);
  init_in(in, &keys.fast, false, false, 0);  // no replay window: only the checks under test
  for (int iter = 0; iter < 3000; ++iter) {
    const Bytes orig = good(1 + iter, 20 + rng() % 200);
    Bytes p = orig;
    switch (rng() % 3) {
      case 0: p[rng() % p.size()] ^= static_cast<uint8_t>(1 + rng() % 255); break;
      case 1: p.resize(rng() % p.size()); break;
      default: {
        size_t pos = rng() % p.size();
        p[pos] ^= static_cast<uint8_t>(1 + rng() % 255);
        if (pos < 20) fix_ip_cksum(p.data());
        break;
      }
    }
    // Changing the outer TOS, ID, DF/reserved flag, TTL or source (with a
    // valid checksum) is not an attack on ESP: those must still decap --
    // except an outer CE mark, which RFC 6040 drops over this Not-ECT inner.
    const bool benign = p.size() == orig.size() && std::equal(p.begin() + 20, p.end(), orig.begin() + 20) &&
                        p[0] == orig[0] && ld16(&p[2]) == ld16(&orig[2]) && (ld16(&p[6]) & 0x3fff) == 0 &&
                        p[9] == orig[9] && ld32(&p[16]) == ld32(&orig[16]) && cksum(p.data(), 20) == 0 &&
                        (p[1] & 3) != 3;
    MbufPtr m = to_mbuf(p);
    EspStatus s = esp_decap(m.get(), in);
    ASSERT_EQ(s == EspStatus::kOk, benign) << "iter " << iter << " status " << to_string(s);
    if (s == EspStatus::kOk) {
      Bytes got = from_mbuf(m.get());
      ASSERT_EQ(got, make_inner(static_cast<uint32_t>(got.size())));
    } else {
      ASSERT_EQ(rte_pktmbuf_data_len(m.get()), p.size());
    }
  }
}

// The SAs workers read per packet come from the state arena (huge pages,
// cache-line aligned; crypto/state_arena.h), as their key contexts do.
TEST(SaAllocation, SasLiveInTheStateArena) {
  using espgw::crypto::StateArena;
  if (!StateArena::enabled()) GTEST_SKIP() << "sanitizer build: the arena is plain malloc";
  auto lines = [](size_t n) { return (n + 63) / 64 * 64; };
  const size_t before = StateArena::stats().in_use;
  auto out = std::make_unique<OutboundSa>();
  auto in = std::make_unique<InboundSa>();
  EXPECT_EQ(StateArena::stats().in_use, before + lines(sizeof(OutboundSa)) + lines(sizeof(InboundSa)));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(out.get()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(in.get()) % 64, 0u);
  out.reset();
  in.reset();
  EXPECT_EQ(StateArena::stats().in_use, before);
}

}  // namespace
