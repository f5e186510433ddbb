// libFuzzer harness: the exception path and ARP. Records (fuzz_gateway.h)
// go to the port their byte 0 names: frames from the host's TAP (the
// exception port: IKE and ICMP leaving by the port that owns their source,
// towards a tunnel's next hop or the port's neighbour table, ARP answered by
// proxy) and ARP on the LAN and WAN ports (answers for our addresses,
// learning, the hold queues' release). The neighbour tables persist across
// inputs (as in the daemon); the hold queues are flushed after each.
//
// Beyond the fuzz_gateway.h checks: every ARP frame the gateway sends is a
// well-formed Ethernet/IPv4 ARP packet from the sending port's MAC, and
// every frame it sends is single-segment.
#include <fmt/format.h>

#include <cstring>

#include "tests/fuzz/fuzz_gateway.h"

namespace {

void check_sent(uint16_t port, const rte_mbuf* m) {
  const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  const char* bad = nullptr;
  if (m->nb_segs != 1) bad = "multi-segment frame sent";
  else if (len < 14) bad = "frame shorter than Ethernet sent";
  else if (f[12] == 0x08 && f[13] == 0x06) {
    const auto& mac = fuzz::FuzzGateway::instance().dp().ports[port].mac;
    if (len < 42) bad = "short ARP frame sent";
    else if (memcmp(f + 6, mac.addr_bytes, 6) != 0 || memcmp(f + 22, mac.addr_bytes, 6) != 0)
      bad = "ARP frame not from the sending port's MAC";
    else if (f[14] != 0 || f[15] != 1 || f[16] != 8 || f[17] != 0 || f[18] != 6 || f[19] != 4 || f[20] != 0 ||
             (f[21] != 1 && f[21] != 2))
      bad = "ARP frame with a bad header";
  }
  if (bad) fuzz::fail(fmt::format("{} (port {}, {} bytes)", bad, port, len));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::FuzzGateway::instance();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& g = fuzz::FuzzGateway::instance();
  g.run(fuzz::split_records(data, size), check_sent);
  return 0;
}
