// libFuzzer harness: frames arriving on the unprotected port (the inbound
// pipeline through the real worker code): frame checks, outer IPv4 and its
// checksum, outer fragments and reassembly, UDP-encapsulation detection, ESP
// parse, SA lookup, replay window, decryption under the fuzz config's SAs,
// trailer and padding checks, inner parse, selectors, route back, neighbour
// resolution and the hold queue, the exception path.
//
// Records (fuzz_gateway.h) all go to the WAN port. Flag bit 0 ("seal"): the
// frame's ESP payload is plaintext (inner packet and trailer as given): the
// harness encrypts it under the inbound SA its SPI names, appends the ICV
// and fixes the outer lengths and checksum, so the fuzzer's mutations of the
// inner packet and the trailer get past the ICV. The replay windows are reset
// before each input (the same valid ESP is accepted by every input).
//
// Beyond the fuzz_gateway.h checks: every IPv4 frame the LAN port sends is
// one well-formed packet (version 4, IHL >= 5, total length = frame length,
// TTL >= 1: a decrypted packet is forwarded only after those checks).
#include <fmt/format.h>

#include "tests/fuzz/fuzz_gateway.h"

namespace {

using fuzz::ld32, fuzz::st16;

// Encrypts the ESP payload of `b` in place under the inbound SA its SPI names.
void seal(std::vector<uint8_t>& b) {
  if (b.size() < 14 + 20) return;
  uint8_t* ip = b.data() + 14;
  const size_t ihl = (ip[0] & 0xf) * 4u;
  if (ihl < 20 || 14 + ihl > b.size()) return;
  const bool udp = ip[9] == 17;
  const size_t esp = 14 + ihl + (udp ? 8 : 0);
  if (esp + 16 > b.size() || b.size() + 16 > 0xffff + 14) return;
  const uint32_t spi = ld32(&b[esp]), seq = ld32(&b[esp + 4]);
  const fuzz::SaKeys* sa = nullptr;
  for (const auto& k : fuzz::sa_keys())
    if (k.inbound && k.spi == spi) sa = &k;
  if (!sa) return;
  b.resize(b.size() + 16);
  ip = b.data() + 14;
  uint8_t aad[12];
  const uint32_t aad_len = fuzz::esp_aad(aad, spi, seq, sa->esn);  // the windows are reset: ESN's high half is 0
  uint8_t* pt = &b[esp + 16];
  const uint32_t len = uint32_t(b.size() - 16 - (esp + 16));
  espgw::crypto::AeadOp op{&fuzz::sa_context(spi, true), &b[esp + 8], aad, aad_len, pt, pt, len, pt + len};
  fuzz::sa_context(spi, true).encrypt(op);
  const uint16_t total = uint16_t(b.size() - 14);
  st16(ip + 2, total);
  if (udp) st16(ip + ihl + 4, uint16_t(total - ihl));
  ip[10] = ip[11] = 0;
  st16(ip + 10, fuzz::cksum(ip, ihl));
}

void check_sent(uint16_t port, const rte_mbuf* m) {
  if (port != fuzz::kLan) return;
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  if (len < 14 || f[12] != 0x08 || f[13] != 0x00) return;  // ARP requests
  const uint8_t* ip = f + 14;
  const uint32_t tot = len >= 34 ? uint32_t{ip[2]} << 8 | ip[3] : 0;
  if (len < 34 || (ip[0] >> 4) != 4 || (ip[0] & 0xf) < 5 || tot != len - 14 || (ip[0] & 0xf) * 4u > tot ||
      ip[8] == 0)
    fuzz::fail(fmt::format("LAN port sent a malformed IPv4 frame ({} bytes)", len));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::FuzzGateway::instance();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& g = fuzz::FuzzGateway::instance();
  g.reset_replay_windows();
  std::vector<fuzz::Frame> frames = fuzz::split_records(data, size);
  for (auto& f : frames) {
    f.port = fuzz::kWan;
    if (f.flags & 1) seal(f.bytes);
  }
  g.run(frames, check_sent);
  return 0;
}
