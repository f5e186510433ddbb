// esp-vector: runs pcap files through espgw's ESP tunnel-mode code (real
// mbufs, dataplane/esp.h) for interop tests against independent ESP
// implementations (scapy, tshark).
//
//   esp-vector encrypt --spi SPI --key HEX --src ADDR --dst ADDR [--udp]
//       [--sport P] [--dport P] [--esn] [--seq START] [--ttl N] [--dscp N|copy]
//       [--df copy|set|clear] [--burst N] [--backend ipsecmb|openssl] IN.pcap OUT.pcap
//   esp-vector decrypt --spi SPI --key HEX [--dst ADDR] [--udp] [--port P]
//       [--esn] [--window N] [--top SEQ] [--burst N] [--backend ...] IN.pcap OUT.pcap
//
// HEX is key || 4-byte salt (40 hex digits: AES-128-GCM, 72: AES-256-GCM).
// IN.pcap: classic pcap (µs or ns, either byte order), linktype RAW (101, or
// 12/14) or IPV4 (228) — IPv4 packets without L2 — or Ethernet (1; the
// 14-byte header is dropped; other frames become empty packets, which fail
// with bad-inner / truncated and keep the indexes aligned). OUT.pcap: classic
// pcap, µs, linktype 101 (raw IPv4), one record per packet that succeeded, in
// input order. Every packet that failed gets a line "<index> <status>" on
// stdout (index counts input records from 0); a summary goes to stderr. Exit
// status 0 when the files could be read and written (whatever the packets
// did), 2 on usage errors, 1 on I/O or setup errors.
//
// --burst 1 uses the single-packet calls (esp_encap / esp_decap); larger
// values the burst calls (esp_outbound_burst / esp_decap_burst), default 32.
// --top SEQ starts the inbound replay window as if SEQ had been received.
#include <arpa/inet.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "crypto/aead.h"
#include "dataplane/esp.h"

using namespace espgw;
using dataplane::EspStatus;

namespace {

struct Packet {
  uint32_t ts_sec, ts_usec;
  std::vector<uint8_t> data;
};

uint32_t rd32(const uint8_t* p, bool swap) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return swap ? __builtin_bswap32(v) : v;
}

bool read_pcap(const std::string& path, std::vector<Packet>& out, std::string& err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) { err = "cannot open " + path; return false; }
  std::vector<uint8_t> all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (all.size() < 24) { err = path + ": not a pcap file"; return false; }
  uint32_t magic;
  std::memcpy(&magic, all.data(), 4);
  bool swap, nsec;
  if (magic == 0xa1b2c3d4) { swap = false; nsec = false; }
  else if (magic == 0xd4c3b2a1) { swap = true; nsec = false; }
  else if (magic == 0xa1b23c4d) { swap = false; nsec = true; }
  else if (magic == 0x4d3cb2a1) { swap = true; nsec = true; }
  else { err = path + ": not a classic pcap file (pcapng is not supported)"; return false; }
  const uint32_t linktype = rd32(all.data() + 20, swap) & 0x0fffffff;
  size_t l2;
  if (linktype == 101 || linktype == 12 || linktype == 14 || linktype == 228) l2 = 0;
  else if (linktype == 1) l2 = 14;
  else { err = path + ": unsupported linktype " + std::to_string(linktype); return false; }
  size_t off = 24;
  while (off + 16 <= all.size()) {
    Packet p;
    p.ts_sec = rd32(&all[off], swap);
    p.ts_usec = rd32(&all[off + 4], swap);
    if (nsec) p.ts_usec /= 1000;
    const uint32_t incl = rd32(&all[off + 8], swap);
    off += 16;
    if (off + incl > all.size()) { err = path + ": truncated record"; return false; }
    const uint8_t* d = &all[off];
    off += incl;
    if (l2) {
      if (incl < l2 || d[12] != 0x08 || d[13] != 0x00) {  // not IPv4: keep the index, empty packet
        out.push_back({p.ts_sec, p.ts_usec, {}});
        continue;
      }
      p.data.assign(d + l2, d + incl);
    } else {
      p.data.assign(d, d + incl);
    }
    out.push_back(std::move(p));
  }
  return true;
}

bool write_pcap(const std::string& path, const std::vector<Packet>& pkts) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const uint32_t hdr[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 101};
  bool ok = std::fwrite(hdr, sizeof hdr, 1, f) == 1;
  for (const Packet& p : pkts) {
    const uint32_t rec[4] = {p.ts_sec, p.ts_usec, static_cast<uint32_t>(p.data.size()),
                             static_cast<uint32_t>(p.data.size())};
    ok = ok && std::fwrite(rec, sizeof rec, 1, f) == 1;
    if (!p.data.empty()) ok = ok && std::fwrite(p.data.data(), p.data.size(), 1, f) == 1;
  }
  return std::fclose(f) == 0 && ok;
}

bool parse_hex(const std::string& s, std::vector<uint8_t>& out) {
  if (s.size() % 2) return false;
  out.clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    char b[3] = {s[i], s[i + 1], 0};
    char* end;
    long v = std::strtol(b, &end, 16);
    if (*end) return false;
    out.push_back(static_cast<uint8_t>(v));
  }
  return true;
}

bool parse_ip(const std::string& s, uint32_t& out) {
  in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  out = ntohl(a.s_addr);
  return true;
}

bool parse_u64(const std::string& s, uint64_t& out) {
  if (s.empty()) return false;
  char* end;
  errno = 0;
  out = std::strtoull(s.c_str(), &end, 0);
  return !*end && errno == 0;
}

int usage(const char* why) {
  std::fprintf(stderr,
               "esp-vector: %s\n"
               "usage: esp-vector encrypt --spi SPI --key HEX --src ADDR --dst ADDR [--udp] [--sport P]\n"
               "         [--dport P] [--esn] [--seq START] [--ttl N] [--dscp N|copy] [--df copy|set|clear]\n"
               "         [--burst N] [--backend ipsecmb|openssl] IN.pcap OUT.pcap\n"
               "       esp-vector decrypt --spi SPI --key HEX [--dst ADDR] [--udp] [--port P] [--esn]\n"
               "         [--window N] [--top SEQ] [--burst N] [--backend ipsecmb|openssl] IN.pcap OUT.pcap\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage("missing mode");
  const std::string mode = argv[1];
  if (mode != "encrypt" && mode != "decrypt") return usage("mode must be encrypt or decrypt");
  const bool enc = mode == "encrypt";

  uint64_t spi = 0, seq = 1, ttl = 64, burst = 32, window = 1024, top = 0, port = 4500, sport = 4500,
           dport = 4500;
  int64_t dscp = -1;
  bool have_spi = false, have_key = false, have_src = false, have_dst = false, udp = false, esn = false;
  uint32_t src = 0, dst = 0;
  std::vector<uint8_t> key;
  dataplane::DfPolicy df = dataplane::DfPolicy::kCopy;
  crypto::Backend backend = crypto::best_backend();
  std::vector<std::string> files;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&](std::string& v) {
      if (i + 1 >= argc) return false;
      v = argv[++i];
      return true;
    };
    std::string v;
    bool ok = true;
    if (a == "--udp") udp = true;
    else if (a == "--esn") esn = true;
    else if (a == "--spi") ok = have_spi = val(v) && parse_u64(v, spi) && spi <= 0xffffffff;
    else if (a == "--key") ok = have_key = val(v) && parse_hex(v, key);
    else if (a == "--src") ok = have_src = val(v) && parse_ip(v, src);
    else if (a == "--dst") ok = have_dst = val(v) && parse_ip(v, dst);
    else if (a == "--seq") ok = val(v) && parse_u64(v, seq) && seq > 0;
    else if (a == "--top") ok = val(v) && parse_u64(v, top);
    else if (a == "--ttl") ok = val(v) && parse_u64(v, ttl) && ttl <= 255;
    else if (a == "--burst") ok = val(v) && parse_u64(v, burst) && burst >= 1 && burst <= 1024;
    else if (a == "--window") ok = val(v) && parse_u64(v, window);
    else if (a == "--port") ok = val(v) && parse_u64(v, port) && port >= 1 && port <= 65535;
    else if (a == "--sport") ok = val(v) && parse_u64(v, sport) && sport >= 1 && sport <= 65535;
    else if (a == "--dport") ok = val(v) && parse_u64(v, dport) && dport >= 1 && dport <= 65535;
    else if (a == "--dscp") {
      uint64_t d;
      ok = val(v) && (v == "copy" || (parse_u64(v, d) && d <= 63));
      if (ok) dscp = v == "copy" ? -1 : static_cast<int64_t>(d);
    } else if (a == "--df") {
      ok = val(v) && (v == "copy" || v == "set" || v == "clear");
      if (ok) df = v == "copy" ? dataplane::DfPolicy::kCopy : v == "set" ? dataplane::DfPolicy::kSet
                                                                          : dataplane::DfPolicy::kClear;
    } else if (a == "--backend") {
      ok = val(v) && (v == "ipsecmb" || v == "openssl");
      if (ok) backend = v == "ipsecmb" ? crypto::Backend::kIpsecMb : crypto::Backend::kOpenssl;
    } else if (a.size() > 1 && a[0] == '-') return usage(("unknown option " + a).c_str());
    else files.push_back(a);
    if (!ok) return usage(("bad value for " + a).c_str());
  }
  if (files.size() != 2) return usage("need IN.pcap and OUT.pcap");
  if (!have_spi || !have_key) return usage("--spi and --key are required");
  if (enc && (!have_src || !have_dst)) return usage("encrypt needs --src and --dst");
  crypto::AeadAlgo algo;
  if (key.size() == crypto::keymat_len(crypto::AeadAlgo::kAes128Gcm)) algo = crypto::AeadAlgo::kAes128Gcm;
  else if (key.size() == crypto::keymat_len(crypto::AeadAlgo::kAes256Gcm)) algo = crypto::AeadAlgo::kAes256Gcm;
  else return usage("--key must be 20 or 36 bytes (key || salt) in hex");
  if (!crypto::backend_available(backend)) return usage("backend not available on this CPU");
  if (!enc && window != 0 && (window < dataplane::ReplayWindow::kMinWindow ||
                              window > dataplane::ReplayWindow::kMaxWindow))
    return usage("--window must be 0 or 32..4096");
  if (!esn && seq > 0xffffffffull && enc) return usage("--seq beyond 2^32-1 needs --esn");

  std::vector<Packet> in;
  std::string err;
  if (!read_pcap(files[0], in, err)) {
    std::fprintf(stderr, "esp-vector: %s\n", err.c_str());
    return 1;
  }

  char a0[] = "esp-vector", a1[] = "--no-huge", a2[] = "-m", a3[] = "256", a4[] = "--no-pci",
       a5[] = "--no-shconf", a6[] = "--log-level=error", a7[] = "-l", a8[] = "0";
  char* eal_argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, nullptr};
  if (rte_eal_init(9, eal_argv) < 0) {
    std::fprintf(stderr, "esp-vector: rte_eal_init: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  rte_mempool* pool = rte_pktmbuf_pool_create("esp_vector", 2047, 0, 0, 10240 + RTE_PKTMBUF_HEADROOM,
                                              SOCKET_ID_ANY);
  if (!pool) {
    std::fprintf(stderr, "esp-vector: mempool: %s\n", rte_strerror(rte_errno));
    return 1;
  }

  std::unique_ptr<crypto::AeadContext> ctx;
  try {
    ctx = std::make_unique<crypto::AeadContext>(algo, key, backend);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "esp-vector: %s\n", e.what());
    return 1;
  }

  dataplane::OutboundSa osa;
  dataplane::InboundSa isa;
  if (enc) {
    osa.spi = static_cast<uint32_t>(spi);
    osa.esn = esn;
    osa.next_seq.store(seq);
    osa.outer_src = src;
    osa.outer_dst = dst;
    osa.udp_src_port = udp ? static_cast<uint16_t>(sport) : 0;
    osa.udp_dst_port = udp ? static_cast<uint16_t>(dport) : 0;
    osa.ttl = static_cast<uint8_t>(ttl);
    osa.dscp = static_cast<int16_t>(dscp);
    osa.df = df;
    osa.aead = ctx.get();
    osa.seq_limit = esn ? ~uint64_t{0} : dataplane::kSeqLimitNoEsn;
  } else {
    isa.spi = static_cast<uint32_t>(spi);
    isa.local_addr = have_dst ? dst : 0;
    isa.esn = esn;
    isa.udp_port = udp ? static_cast<uint16_t>(port) : 0;
    isa.aead = ctx.get();
    isa.replay.reset(static_cast<uint32_t>(window), esn, top);
  }

  std::vector<Packet> out;
  size_t n_ok = 0, n_fail = 0;
  std::vector<rte_mbuf*> ms(burst);
  std::vector<EspStatus> st(burst);
  std::vector<size_t> idx(burst);
  for (size_t base = 0; base < in.size();) {
    size_t n = 0;
    while (base < in.size() && n < burst) {
      const Packet& p = in[base];
      rte_mbuf* m = rte_pktmbuf_alloc(pool);
      if (!m) {
        std::fprintf(stderr, "esp-vector: out of mbufs\n");
        return 1;
      }
      char* d = p.data.size() <= rte_pktmbuf_tailroom(m)
                    ? rte_pktmbuf_append(m, static_cast<uint16_t>(p.data.size()))
                    : nullptr;
      if (!d) {
        std::printf("%zu too-big-for-mbuf\n", base);
        ++n_fail;
        rte_pktmbuf_free(m);
        ++base;
        continue;
      }
      if (!p.data.empty()) std::memcpy(d, p.data.data(), p.data.size());
      ms[n] = m;
      idx[n] = base;
      ++n;
      ++base;
    }
    if (n == 0) continue;
    if (burst == 1) {
      st[0] = enc ? dataplane::esp_encap(ms[0], osa) : dataplane::esp_decap(ms[0], isa);
    } else if (enc) {
      dataplane::esp_outbound_burst(ms.data(), &osa, static_cast<uint16_t>(n), st.data());
    } else {
      dataplane::esp_decap_burst(ms.data(), isa, static_cast<uint16_t>(n), st.data());
    }
    for (size_t k = 0; k < n; ++k) {
      if (st[k] == EspStatus::kOk) {
        const uint8_t* d = rte_pktmbuf_mtod(ms[k], const uint8_t*);
        out.push_back({in[idx[k]].ts_sec, in[idx[k]].ts_usec,
                       std::vector<uint8_t>(d, d + rte_pktmbuf_data_len(ms[k]))});
        ++n_ok;
      } else {
        std::printf("%zu %s\n", idx[k], dataplane::to_string(st[k]));
        ++n_fail;
      }
      rte_pktmbuf_free(ms[k]);
    }
  }
  std::fflush(stdout);
  if (!write_pcap(files[1], out)) {
    std::fprintf(stderr, "esp-vector: cannot write %s\n", files[1].c_str());
    return 1;
  }
  std::fprintf(stderr, "esp-vector %s: %zu ok, %zu failed (%s, %s)\n", mode.c_str(), n_ok, n_fail,
               std::string(crypto::to_string(algo)).c_str(), std::string(crypto::to_string(backend)).c_str());
  rte_mempool_free(pool);
  rte_eal_cleanup();
  return 0;
}
