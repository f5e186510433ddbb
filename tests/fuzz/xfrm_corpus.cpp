// Writes fuzz_xfrm's seeds: XFRM netlink messages built with the XFRM
// tests' builder (tests/xfrm/xfrm_builder.h: <linux/xfrm.h> structures and
// libmnl), for the fuzz gateway's tunnels. Called by make_corpus.py:
//   xfrm_corpus DIR
#include <cstdio>
#include <string>
#include <vector>

#include "tests/xfrm/xfrm_builder.h"

using namespace xfrm_test;

namespace {

void write(const std::string& dir, const std::string& name, const std::vector<std::vector<uint8_t>>& msgs) {
  std::FILE* f = std::fopen((dir + "/seed-" + name + ".bin").c_str(), "wb");
  if (!f) return;
  for (const auto& m : msgs) {
    std::fwrite(m.data(), 1, m.size(), f);
    static const uint8_t pad[4] = {};
    std::fwrite(pad, 1, (4 - m.size() % 4) % 4, f);
  }
  std::fclose(f);
}

SaSpec sa(uint32_t spi, bool out, bool t2, uint8_t key_seed) {
  SaSpec s;
  s.spi = spi;
  const char* local = t2 ? "198.51.100.11" : "198.51.100.10";
  const char* remote = t2 ? "203.0.113.2" : "203.0.113.1";
  s.saddr = ip(out ? local : remote);
  s.daddr = ip(out ? remote : local);
  s.keymat = seq_bytes(20, key_seed);
  s.replay_window = 64;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string d = argv[1];
  SaSpec out = sa(0x5001, true, false, 0x10), in = sa(0x5002, false, false, 0x30);
  write(d, "newsa-out", {build_sa(out)});
  write(d, "newsa-in-then-updsa", {build_sa(in), build_sa(in, XFRM_MSG_UPDSA)});
  SaSpec udp = sa(0x5003, false, true, 0x50);
  udp.encap_type = UDP_ENCAP_ESPINUDP;
  udp.encap_dport = 4501;
  udp.keymat = seq_bytes(36, 0x50);
  write(d, "newsa-udp-aes256", {build_sa(udp)});
  SaSpec esn = sa(0x5004, true, true, 0x70);
  esn.with_esn_attr = true;
  esn.flags = XFRM_STATE_ESN;
  esn.encap_type = UDP_ENCAP_ESPINUDP;
  write(d, "newsa-esn", {build_sa(esn)});
  SaSpec cbc = sa(0x5005, true, false, 0x90);
  cbc.with_aead = false;
  cbc.with_cbc_hmac = true;
  write(d, "newsa-cbc", {build_sa(cbc)});
  SaSpec v6 = sa(0x5006, true, false, 0xa0);
  v6.family = AF_INET6;
  write(d, "newsa-v6", {build_sa(v6)});
  write(d, "delsa", {build_sa(sa(0x5007, true, false, 0xb0)), build_delsa(0x5007, ip("203.0.113.1"))});
  SaSpec exp = sa(0x5008, false, false, 0xc0);
  write(d, "expire", {build_sa(exp), build_expire(exp, false), build_expire(exp, true)});
  MsgBuilder flush(XFRM_MSG_FLUSHSA);
  flush.put_struct<xfrm_usersa_flush>()->proto = IPPROTO_ESP;
  write(d, "flush", {build_sa(sa(0x5009, true, false, 0xd0)), flush.bytes()});
  PolicySpec pol;
  write(d, "policies", {build_newpolicy(pol), build_newpolicy(pol, XFRM_MSG_UPDPOLICY), build_delpolicy(pol, true),
                        build_delpolicy(pol)});
  return 0;
}
