// libFuzzer harness: the XFRM netlink parser (xfrm::parse_message, what the
// mirror's socket feeds every message through) and the mirror's mapping of
// the parsed events onto the real ControlOps of the fuzz gateway (tunnels
// t1: 198.51.100.10 <-> 203.0.113.1 and t2: 198.51.100.11 <-> 203.0.113.2):
// NEWSA/UPDSA (install, reconcile), DELSA, EXPIRE, FLUSHSA, policies.
//
// An input is a netlink stream: messages one after the other, each as long
// as its nlmsg_len says (cut to what is left). Each message is copied into a
// buffer of exactly that length, so reading past it is an ASan report (the
// parser promises never to read past the length it is given). The events
// are applied in order; when the input's last byte is odd they are then
// also replayed as a re-dump (XfrmMirror::resync_from: the overrun path).
// After each input the SAs the mirror installed are deleted again.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "control/control_ops.h"
#include "control/xfrm.h"
#include "control/xfrm_mirror.h"
#include "tests/fuzz/fuzz_gateway.h"

namespace {
using namespace espgw::control;

using fuzz::ip4;

XfrmMirror* g_mirror;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  auto& g = fuzz::FuzzGateway::instance();
  g_mirror = new XfrmMirror(g.gateway().ops(),
                            {{"t1", ip4(198, 51, 100, 10), ip4(203, 0, 113, 1)},
                             {"t2", ip4(198, 51, 100, 11), ip4(203, 0, 113, 2)}},
                            XfrmMirror::NoSocket{});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<xfrm::Event> events;
  size_t off = 0;
  while (off < size && events.size() < 64) {
    size_t len = size - off;
    if (len >= 4) {
      uint32_t nl;
      memcpy(&nl, data + off, 4);  // nlmsg_len, host order
      if (nl >= 16 && nl < len) len = nl;
    }
    std::unique_ptr<uint8_t[]> msg(new uint8_t[len]);
    memcpy(msg.get(), data + off, len);
    events.push_back(xfrm::parse_message(msg.get(), len));
    (void)xfrm::to_string(events.back());
    off += (len + 3) & ~size_t{3};  // NLMSG_ALIGN
  }
  for (const auto& ev : events) g_mirror->apply(ev);
  if (size && (data[size - 1] & 1)) g_mirror->resync_from(events);
  ControlOps& ops = fuzz::FuzzGateway::instance().gateway().ops();
  ops.delete_all_sas(SaOrigin::kXfrm, "fuzz reset");
  return 0;
}
