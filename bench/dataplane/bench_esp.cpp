// ESP transform micro-benchmarks (no I/O): tunnel-mode encap and decap of one
// packet on an mbuf, AES-128/256-GCM through the best backend (IPsec-MB),
// inner packets of 64/512/1400 bytes, single-packet calls (esp_encap /
// esp_decap) and bursts of 32 (esp_outbound_burst / esp_decap_burst); plus
// the anti-replay window's check + update.
//
// Names: esp/<dir>/<mode>/<algo>/<inner bytes>, replay/<pattern>/<window>.
// Counters: cyc/pkt = TSC cycles (rte_rdtsc) around the transform calls only,
// per packet. Restoring the packets between rounds (a 20-byte header copy
// outbound, a full-packet copy inbound: in-place crypto destroys the input)
// is outside that count but inside Google Benchmark's wall time.
#include <benchmark/benchmark.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "crypto/aead.h"
#include "dataplane/esp.h"
#include "dataplane/replay_window.h"

using namespace espgw;
using namespace espgw::dataplane;

namespace {

rte_mempool* g_pool;
constexpr uint16_t kBurst = 32;

std::vector<uint8_t> keymat(crypto::AeadAlgo a) {
  std::vector<uint8_t> k(crypto::keymat_len(a));
  std::mt19937 g(99);
  for (auto& b : k) b = static_cast<uint8_t>(g());
  return k;
}

std::vector<uint8_t> inner_packet(uint32_t len) {
  std::vector<uint8_t> b(len);
  std::mt19937 g(len);
  for (auto& x : b) x = static_cast<uint8_t>(g());
  b[0] = 0x45;
  b[1] = 0;
  b[2] = static_cast<uint8_t>(len >> 8);
  b[3] = static_cast<uint8_t>(len);
  b[6] = 0x40;
  b[7] = 0;
  b[9] = 17;
  return b;
}

void set_packet(rte_mbuf* m, const uint8_t* data, uint32_t len) {
  m->data_off = RTE_PKTMBUF_HEADROOM;
  m->data_len = static_cast<uint16_t>(len);
  m->pkt_len = len;
  std::memcpy(rte_pktmbuf_mtod(m, uint8_t*), data, len);
}

void init_out(OutboundSa& sa, const crypto::AeadContext* c) {
  sa.spi = 0x1000;
  sa.esn = true;  // no 2^32 limit in long runs
  sa.next_seq.store(1);
  sa.outer_src = 0xc0000201;
  sa.outer_dst = 0xc6336402;
  sa.aead = c;
  sa.seq_limit = ~uint64_t{0};
  finalize_outbound_sa(sa);  // the per-SA outer header template, as the control thread builds it
}

crypto::AeadAlgo algo_of(int64_t a) { return a == 256 ? crypto::AeadAlgo::kAes256Gcm : crypto::AeadAlgo::kAes128Gcm; }

void BM_Outbound(benchmark::State& state, uint32_t len, uint16_t burst, crypto::AeadAlgo algo) {
  auto km = keymat(algo);
  crypto::AeadContext ctx(algo, km);
  OutboundSa sa;
  init_out(sa, &ctx);
  const auto inner = inner_packet(len);
  rte_mbuf* m[kBurst];
  if (rte_pktmbuf_alloc_bulk(g_pool, m, burst) != 0) {
    state.SkipWithError("mbuf alloc");
    return;
  }
  for (uint16_t i = 0; i < burst; ++i) set_packet(m[i], inner.data(), len);
  EspStatus st[kBurst];
  uint64_t cycles = 0, pkts = 0;
  bool ok = true;
  for (auto _ : state) {
    for (uint16_t i = 0; i < burst; ++i) {  // restore: header + lengths
      m[i]->data_off = RTE_PKTMBUF_HEADROOM;
      m[i]->data_len = static_cast<uint16_t>(len);
      m[i]->pkt_len = len;
      std::memcpy(rte_pktmbuf_mtod(m[i], uint8_t*), inner.data(), 20);
    }
    const uint64_t t0 = rte_rdtsc();
    if (burst == 1) {
      st[0] = esp_encap(m[0], sa);
    } else {
      esp_outbound_burst(m, &sa, burst, st);
    }
    cycles += rte_rdtsc() - t0;
    pkts += burst;
    ok &= st[0] == EspStatus::kOk && st[burst - 1] == EspStatus::kOk;
  }
  if (!ok) state.SkipWithError("encap failed");
  rte_pktmbuf_free_bulk(m, burst);
  state.SetItemsProcessed(static_cast<int64_t>(pkts));
  state.SetBytesProcessed(static_cast<int64_t>(pkts * len));
  state.counters["cyc/pkt"] = static_cast<double>(cycles) / static_cast<double>(pkts);
}

void BM_Inbound(benchmark::State& state, uint32_t len, uint16_t burst, crypto::AeadAlgo algo) {
  auto km = keymat(algo);
  crypto::AeadContext ctx(algo, km);
  OutboundSa osa;
  init_out(osa, &ctx);
  osa.esn = false;
  osa.seq_limit = kSeqLimitNoEsn;
  finalize_outbound_sa(osa);
  InboundSa isa;
  isa.spi = osa.spi;
  isa.local_addr = osa.outer_dst;
  isa.aead = &ctx;
  constexpr uint32_t kTemplates = 1024;  // distinct sequence numbers, window 1024
  isa.replay.reset(1024, false);
  // Encrypted templates with sequence numbers 1..kTemplates.
  const auto inner = inner_packet(len);
  const uint32_t wire = len + esp_overhead(len, false);
  std::vector<uint8_t> tmpl(size_t{kTemplates} * wire);
  rte_mbuf* m[kBurst];
  if (rte_pktmbuf_alloc_bulk(g_pool, m, burst) != 0) {
    state.SkipWithError("mbuf alloc");
    return;
  }
  for (uint32_t t = 0; t < kTemplates; ++t) {
    set_packet(m[0], inner.data(), len);
    if (esp_encap(m[0], osa) != EspStatus::kOk || rte_pktmbuf_data_len(m[0]) != wire) {
      state.SkipWithError("template encap");
      return;
    }
    std::memcpy(&tmpl[size_t{t} * wire], rte_pktmbuf_mtod(m[0], uint8_t*), wire);
  }
  EspStatus st[kBurst];
  uint64_t cycles = 0, pkts = 0;
  uint32_t next = 0;
  bool ok = true;
  for (auto _ : state) {
    if (next + burst > kTemplates) {  // start the stream again on a fresh window
      next = 0;
      isa.replay.reset(1024, false);
    }
    for (uint16_t i = 0; i < burst; ++i) set_packet(m[i], &tmpl[size_t{next + i} * wire], wire);
    next += burst;
    const uint64_t t0 = rte_rdtsc();
    if (burst == 1) {
      st[0] = esp_decap(m[0], isa);
    } else {
      esp_decap_burst(m, isa, burst, st);
    }
    cycles += rte_rdtsc() - t0;
    pkts += burst;
    ok &= st[0] == EspStatus::kOk && st[burst - 1] == EspStatus::kOk;
  }
  if (!ok) state.SkipWithError("decap failed");
  rte_pktmbuf_free_bulk(m, burst);
  state.SetItemsProcessed(static_cast<int64_t>(pkts));
  state.SetBytesProcessed(static_cast<int64_t>(pkts * len));
  state.counters["cyc/pkt"] = static_cast<double>(cycles) / static_cast<double>(pkts);
}

// Replay window: check + update per packet. pattern 0 = in order, 1 =
// reordered (blocks of 32 shuffled, as after multi-queue reordering), 2 =
// ESN in order across a 2^32 wrap.
void BM_Replay(benchmark::State& state, uint32_t window, int pattern) {
  constexpr uint32_t kN = 1 << 16;
  std::vector<uint64_t> seqs(kN);
  const uint64_t base = pattern == 2 ? 0xffff8000ull : 1;
  for (uint32_t i = 0; i < kN; ++i) seqs[i] = base + i;
  if (pattern == 1) {
    std::mt19937 g(1);
    for (uint32_t i = 0; i < kN; i += 32) std::shuffle(seqs.begin() + i, seqs.begin() + i + 32, g);
  }
  ReplayWindow w;
  uint64_t cycles = 0, n = 0, accepted = 0;
  for (auto _ : state) {
    state.PauseTiming();
    w.reset(window, pattern == 2, base - 1);
    state.ResumeTiming();
    const uint64_t t0 = rte_rdtsc();
    for (uint32_t i = 0; i < kN; ++i) {
      uint64_t full;
      if (w.check(static_cast<uint32_t>(seqs[i]), &full) == ReplayVerdict::kOk &&
          w.update(full) == ReplayVerdict::kOk)
        ++accepted;
    }
    cycles += rte_rdtsc() - t0;
    n += kN;
  }
  if (accepted != n) state.SkipWithError("window rejected a new packet");
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.counters["cyc/pkt"] = static_cast<double>(cycles) / static_cast<double>(n);
}

void register_all() {
  for (int64_t algo : {128, 256}) {
    for (int64_t burst : {1, 32}) {
      for (int64_t size : {64, 512, 1400}) {
        char name[96];
        std::snprintf(name, sizeof name, "esp/outbound/%s/aes%ld-gcm/%ld", burst == 1 ? "single" : "burst32",
                      static_cast<long>(algo), static_cast<long>(size));
        const auto len = static_cast<uint32_t>(size);
        const auto b = static_cast<uint16_t>(burst);
        const auto a = algo_of(algo);
        benchmark::RegisterBenchmark(name, [=](benchmark::State& s) { BM_Outbound(s, len, b, a); });
        std::snprintf(name, sizeof name, "esp/inbound/%s/aes%ld-gcm/%ld", burst == 1 ? "single" : "burst32",
                      static_cast<long>(algo), static_cast<long>(size));
        benchmark::RegisterBenchmark(name, [=](benchmark::State& s) { BM_Inbound(s, len, b, a); });
      }
    }
  }
  const char* pat[] = {"in-order", "reordered32", "esn-wrap"};
  for (int64_t p : {0, 1, 2}) {
    for (int64_t w : {64, 1024, 4096}) {
      char name[64];
      std::snprintf(name, sizeof name, "replay/%s/%ld", pat[p], static_cast<long>(w));
      const auto win = static_cast<uint32_t>(w);
      const int pp = static_cast<int>(p);
      benchmark::RegisterBenchmark(name, [=](benchmark::State& s) { BM_Replay(s, win, pp); });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  char a0[] = "bench_esp", a1[] = "--no-huge", a2[] = "-m", a3[] = "256", a4[] = "--no-pci",
       a5[] = "--no-shconf", a6[] = "--log-level=error", a7[] = "-l", a8[] = "0";
  char* eal_argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, nullptr};
  if (rte_eal_init(9, eal_argv) < 0) {
    std::fprintf(stderr, "rte_eal_init: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  g_pool = rte_pktmbuf_pool_create("bench_esp", 255, 0, 0, 2048 + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
  if (!g_pool) {
    std::fprintf(stderr, "mempool: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  std::fprintf(stderr, "IPsec-MB arch: %.*s, TSC %.3f GHz\n",
               static_cast<int>(crypto::ipsecmb_arch().size()), crypto::ipsecmb_arch().data(),
               static_cast<double>(rte_get_tsc_hz()) / 1e9);
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  rte_eal_cleanup();
  return 0;
}
