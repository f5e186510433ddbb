// Helpers for the ESP tests: EAL/mempool, packets built by hand, and a
// forger that builds validly-authenticated ESP packets with any trailer,
// encrypted by the OpenSSL backend (the oracle).
#pragma once

#include <rte_eal.h>
#include <rte_mbuf.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "crypto/aead.h"
#include "dataplane/esp.h"

namespace esptest {

using Bytes = std::vector<uint8_t>;

rte_mempool* pool();  // defined in eal_main.cpp: 8k mbufs, 10 KB data room

inline uint16_t ld16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t ld32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}
inline void st16(uint8_t* p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
inline void st32(uint8_t* p, uint32_t v) {
  p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

// RFC 1071 checksum, written independently of the code under test.
inline uint16_t cksum(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i < n; i += 2) s += (i + 1 < n) ? ld16(p + i) : uint32_t{p[i]} << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}
inline void fix_ip_cksum(uint8_t* ip) {
  ip[10] = ip[11] = 0;
  st16(ip + 10, cksum(ip, (ip[0] & 0xf) * 4));
}

// Inner IPv4/UDP packet of `total` bytes (>= 28), or a bare IPv4 header with
// protocol 253 and payload when total < 28.
inline Bytes make_inner(uint32_t total, uint8_t tos = 0, bool df = false, uint32_t seed = 1) {
  Bytes b(total);
  b[0] = 0x45;
  b[1] = tos;
  st16(&b[2], static_cast<uint16_t>(total));
  st16(&b[4], static_cast<uint16_t>(seed));
  st16(&b[6], df ? 0x4000 : 0);
  b[8] = 63;
  b[9] = total >= 28 ? 17 : 253;
  st32(&b[12], 0x0a000001);  // 10.0.0.1
  st32(&b[16], 0x0a010002);  // 10.1.0.2
  for (uint32_t i = 20; i < total; ++i) b[i] = static_cast<uint8_t>(i * 7 + seed);
  if (total >= 28) {
    st16(&b[20], 1234);
    st16(&b[22], 5678);
    st16(&b[24], static_cast<uint16_t>(total - 20));
    st16(&b[26], 0);
  }
  fix_ip_cksum(b.data());
  return b;
}

struct MbufDeleter {
  void operator()(rte_mbuf* m) const { rte_pktmbuf_free(m); }
};
using MbufPtr = std::unique_ptr<rte_mbuf, MbufDeleter>;

inline MbufPtr to_mbuf(const Bytes& b, uint16_t headroom = RTE_PKTMBUF_HEADROOM) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool());
  if (!m) return nullptr;
  m->data_off = headroom;
  char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(b.size()));
  if (!p) { rte_pktmbuf_free(m); return nullptr; }
  if (!b.empty()) std::memcpy(p, b.data(), b.size());
  return MbufPtr(m);
}

inline Bytes from_mbuf(const rte_mbuf* m) {
  const uint8_t* p = rte_pktmbuf_mtod(m, const uint8_t*);
  return Bytes(p, p + rte_pktmbuf_data_len(m));
}

// Key material: key || salt.
inline Bytes keymat(espgw::crypto::AeadAlgo a, uint8_t seed = 0x11) {
  Bytes k(espgw::crypto::keymat_len(a));
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed + i * 13);
  return k;
}

struct ForgeSpec {
  uint32_t spi = 0x1000;
  uint64_t seq = 1;
  bool esn = false;
  uint16_t udp_dport = 0;  // 0 = plain ESP
  uint32_t src = 0xc0000201, dst = 0xc6336402;
  uint8_t outer_tos = 0;
};

// Outer IPv4 [UDP] + ESP(spi, seq) + IV + Enc(plaintext) + ICV, where
// `plaintext` is the whole ESP payload including any trailer the test wants.
inline Bytes forge(const espgw::crypto::AeadContext& oracle, const ForgeSpec& f, const Bytes& plaintext) {
  const uint32_t hdr = 20 + (f.udp_dport ? 8 : 0);
  const uint32_t total = hdr + 16 + static_cast<uint32_t>(plaintext.size()) + 16;
  Bytes b(total);
  b[0] = 0x45;
  b[1] = f.outer_tos;
  st16(&b[2], static_cast<uint16_t>(total));
  st16(&b[4], 0x1234);
  b[8] = 64;
  b[9] = f.udp_dport ? 17 : 50;
  st32(&b[12], f.src);
  st32(&b[16], f.dst);
  fix_ip_cksum(b.data());
  if (f.udp_dport) {
    st16(&b[20], 4500);
    st16(&b[22], f.udp_dport);
    st16(&b[24], static_cast<uint16_t>(total - 20));
  }
  uint8_t* e = &b[hdr];
  st32(e, f.spi);
  st32(e + 4, static_cast<uint32_t>(f.seq));
  for (int i = 0; i < 8; ++i) e[8 + i] = static_cast<uint8_t>(0xa0 + i);  // arbitrary IV
  uint8_t aad[12];
  st32(aad, f.spi);
  uint32_t aad_len = 8;
  if (f.esn) {
    st32(aad + 4, static_cast<uint32_t>(f.seq >> 32));
    st32(aad + 8, static_cast<uint32_t>(f.seq));
    aad_len = 12;
  } else {
    st32(aad + 4, static_cast<uint32_t>(f.seq));
  }
  std::memcpy(e + 16, plaintext.data(), plaintext.size());
  espgw::crypto::AeadOp op{&oracle, e + 8, aad, aad_len, e + 16, e + 16,
                           static_cast<uint32_t>(plaintext.size()), e + 16 + plaintext.size()};
  oracle.encrypt(op);
  return b;
}

// ESP payload for an inner packet with a correct RFC 4303 trailer.
inline Bytes good_payload(const Bytes& inner, uint8_t nh = 4) {
  Bytes p = inner;
  uint32_t pad = (4 - ((inner.size() + 2) & 3)) & 3;
  for (uint32_t i = 1; i <= pad; ++i) p.push_back(static_cast<uint8_t>(i));
  p.push_back(static_cast<uint8_t>(pad));
  p.push_back(nh);
  return p;
}

}  // namespace esptest
