// libFuzzer harness: frames arriving on the protected port (the outbound
// pipeline through the real worker code): frame checks, inner IPv4 and its
// checksum, martians, traffic for the gateway (exception path), FIB lookup,
// tunnel state, TTL (ICMP time exceeded), MSS clamping, the tunnel MTU (ICMP
// fragmentation needed with DF set, fragmentation before encryption with DF
// clear), ESP encapsulation and encryption under the fuzz config's
// outbound SAs (plain ESP with a 576-byte MTU; ESP-in-UDP with ESN).
//
// Records (fuzz_gateway.h) all go to the LAN port; flags unused.
//
// Beyond the fuzz_gateway.h checks, every frame the gateway sends is
// checked against an independent reading:
//   - WAN, ESP (plain or in UDP): outer IPv4 checksum and lengths right;
//     decrypts under the SA (OpenSSL) with a valid ICV; the trailer is RFC
//     4303's (pad 1, 2, ..., next header 4); the inner packet is IPv4 with a
//     valid header checksum and its total length fills the payload (every
//     frame accepted on the LAN had a valid header: what the gateway
//     changed, TTL, fragment fields, MSS, must keep it valid);
//   - LAN, ICMP errors the gateway made: IPv4 and ICMP checksums valid;
//   - a TCP segment (not a fragment) that arrived with a valid checksum
//     leaves with a valid one (the MSS clamp updates it incrementally).
#include <fmt/format.h>

#include <cstring>
#include <set>
#include <string>

#include "tests/fuzz/fuzz_gateway.h"

namespace {

using fuzz::ld16, fuzz::ld32;

[[noreturn]] void fail(const std::string& what, const uint8_t* f, uint32_t len) {
  std::string hex;
  for (uint32_t i = 0; i < len && i < 96; i++) hex += fmt::format(" {:02x}", f[i]);
  fuzz::fail(fmt::format("{} (frame of {} bytes:{})", what, len, hex));
}

// TCP segments received with a valid checksum, and with a bad one, by what
// the gateway never changes: addresses, ports, sequence and acknowledgement
// numbers, data offset, flags, window. A key seen with both is ambiguous
// and not checked.
std::set<std::vector<uint8_t>> g_tcp_valid, g_tcp_invalid;

// An unfragmented TCP segment in the IPv4 packet at `ip` (`avail` bytes):
// its key, and whether its checksum is valid.
bool tcp_segment(const uint8_t* ip, uint32_t avail, std::vector<uint8_t>* key, bool* valid) {
  if (avail < 20 || (ip[0] >> 4) != 4 || ip[9] != 6) return false;
  const uint32_t ihl = (ip[0] & 0xf) * 4u, tot = ld16(ip + 2);
  if (ihl < 20 || tot > avail || tot < ihl + 20 || (ld16(ip + 6) & 0x3fff) != 0) return false;
  key->assign(ip + 12, ip + 20);
  key->insert(key->end(), ip + ihl, ip + ihl + 16);
  std::vector<uint8_t> pseudo(12 + tot - ihl);
  memcpy(pseudo.data(), ip + 12, 8);
  pseudo[9] = 6;
  pseudo[10] = uint8_t((tot - ihl) >> 8);
  pseudo[11] = uint8_t(tot - ihl);
  memcpy(pseudo.data() + 12, ip + ihl, tot - ihl);
  *valid = fuzz::cksum(pseudo.data(), pseudo.size()) == 0;
  return true;
}

bool ipv4_header_ok(const uint8_t* ip, uint32_t avail) {
  if (avail < 20 || (ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5) return false;
  const uint32_t ihl = (ip[0] & 0xf) * 4u;
  return ihl <= avail && fuzz::cksum(ip, ihl) == 0;
}

void check_esp(const uint8_t* f, uint32_t len) {
  const uint8_t* ip = f + 14;
  if (!ipv4_header_ok(ip, len - 14)) fail("ESP frame with a bad outer IPv4 header", f, len);
  if (ld16(ip + 2) != len - 14) fail("ESP frame: outer total length is not the frame's", f, len);
  uint32_t off = 14 + (ip[0] & 0xf) * 4u;
  if (ip[9] == 17) {
    if (ld16(f + off + 4) != len - off) fail("ESP-in-UDP frame: UDP length wrong", f, len);
    off += 8;
  } else if (ip[9] != 50) {
    return;  // not ESP
  }
  if (len < off + 16 + 2 + 16) fail("ESP frame shorter than ESP", f, len);
  const uint32_t spi = ld32(f + off), seq = ld32(f + off + 4);
  bool esn = false, known = false;
  for (const auto& k : fuzz::sa_keys())
    if (!k.inbound && k.spi == spi) known = true, esn = k.esn;
  if (!known) fail("ESP frame under an SPI that is no outbound SA", f, len);
  std::vector<uint8_t> buf(f + off, f + len);
  uint8_t aad[12];
  const uint32_t aad_len = fuzz::esp_aad(aad, spi, seq, esn);
  uint8_t* ct = buf.data() + 16;
  const uint32_t ct_len = uint32_t(buf.size() - 16 - 16);
  espgw::crypto::AeadOp op{&fuzz::sa_context(spi, false), buf.data() + 8, aad, aad_len, ct, ct, ct_len, ct + ct_len};
  if (!fuzz::sa_context(spi, false).decrypt(op)) fail("ESP frame does not authenticate under its SA", f, len);
  const uint32_t pad = ct[ct_len - 2], nh = ct[ct_len - 1];
  if (nh != 4 || pad + 2 > ct_len) fail("ESP trailer: next header / pad length wrong", f, len);
  const uint32_t inner = ct_len - 2 - pad;
  for (uint32_t i = 0; i < pad; i++)
    if (ct[inner + i] != i + 1) fail("ESP trailer: padding bytes wrong", f, len);
  if (!ipv4_header_ok(ct, inner)) fail("inner IPv4 header invalid after encapsulation (checksum/IHL)", f, len);
  if (ld16(ct + 2) != inner) fail("inner total length does not fill the ESP payload", f, len);
  if (ct[8] == 0) fail("inner TTL 0 sent", f, len);
  std::vector<uint8_t> key;
  bool valid;
  if (tcp_segment(ct, inner, &key, &valid) && !valid && g_tcp_valid.count(key) &&
      !g_tcp_invalid.count(key))
    fail("a TCP segment received with a valid checksum left with a bad one", f, len);
}

void check_sent(uint16_t port, const rte_mbuf* m) {
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  if (m->nb_segs != 1) fail("multi-segment frame sent", f, len);
  if (len < 14 || ld16(f + 12) != 0x0800) return;  // ARP
  if (port == fuzz::kWan) {
    check_esp(f, len);
  } else if (port == fuzz::kLan) {
    const uint8_t* ip = f + 14;
    if (!ipv4_header_ok(ip, len - 14)) fail("LAN frame with a bad IPv4 header", f, len);
    const uint32_t ihl = (ip[0] & 0xf) * 4u, tot = ld16(ip + 2);
    if (tot != len - 14) fail("LAN frame: total length is not the frame's", f, len);
    if (ip[9] == 1 && fuzz::cksum(ip + ihl, tot - ihl) != 0) fail("ICMP error with a bad checksum", f, len);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::FuzzGateway::instance();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& g = fuzz::FuzzGateway::instance();
  std::vector<fuzz::Frame> frames = fuzz::split_records(data, size);
  g_tcp_valid.clear();
  g_tcp_invalid.clear();
  for (auto& f : frames) {
    f.port = fuzz::kLan;
    std::vector<uint8_t> key;
    bool valid;
    if (f.bytes.size() > 14 && ld16(f.bytes.data() + 12) == 0x0800 &&
        tcp_segment(f.bytes.data() + 14, uint32_t(f.bytes.size() - 14), &key, &valid))
      (valid ? g_tcp_valid : g_tcp_invalid).insert(key);
  }
  g.run(frames, check_sent);
  return 0;
}
