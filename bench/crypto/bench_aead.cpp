// AEAD micro-benchmarks: AES-GCM encrypt/decrypt at 64/512/1400 bytes, single
// op and bursts of 32, IPsec-MB (direct GCM calls, as used by espgw) vs
// OpenSSL, plus IPsec-MB's job API (32 jobs, then flush) and its burst API
// (IMB_SUBMIT_BURST), which justify the choice of the direct calls; and a
// random one of 10,000 SAs per op, with and without the key-state prefetch.
//
// Names: <op>/<impl>/<mode>/<algo>/<bytes>, e.g. encrypt/ipsec-mb/burst32/aes128-gcm/64.
// Counters: cyc/op and cyc/B (TSC cycles, __rdtsc around the timed loop),
// ns/op (steady clock around the same loop).
#include "crypto/aead.h"

#include <benchmark/benchmark.h>
#include <intel-ipsec-mb.h>
#include <x86intrin.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

using namespace espgw::crypto;

namespace {

constexpr uint32_t kAadLen = 8;  // SPI || seq, as dpdk-test-crypto-perf --aead-aad-sz 8
constexpr uint32_t kSizes[] = {64, 512, 1400};

// Header fields first, payloads after: keeps the ICV store from 4K-aliasing
// the next op's payload loads (a layout artefact that cost ~40 cycles/op).
struct alignas(64) Pkt {
  uint8_t iv[kIvLen];
  uint8_t aad[16];
  uint8_t icv[kIcvLen];
  alignas(64) uint8_t buf[1536];
  alignas(64) uint8_t ct[1536];
};

std::vector<uint8_t> keymat(AeadAlgo algo) {
  std::vector<uint8_t> km(keymat_len(algo));
  std::mt19937 g(1234);
  for (auto& b : km) b = static_cast<uint8_t>(g());
  return km;
}

std::unique_ptr<Pkt[]> make_pkts(uint32_t n, uint32_t len) {
  auto p = std::make_unique<Pkt[]>(n);
  std::mt19937 g(77);
  for (uint32_t i = 0; i < n; ++i) {
    for (uint32_t j = 0; j < len; ++j) p[i].buf[j] = static_cast<uint8_t>(g());
    for (auto& b : p[i].iv) b = static_cast<uint8_t>(g());
    for (auto& b : p[i].aad) b = static_cast<uint8_t>(g());
  }
  return p;
}

struct Timer {
  uint64_t tsc0;
  std::chrono::steady_clock::time_point t0;
  void start() {
    t0 = std::chrono::steady_clock::now();
    tsc0 = __rdtsc();
  }
  void stop(benchmark::State& st, uint64_t ops, uint32_t len) {
    const uint64_t cyc = __rdtsc() - tsc0;
    const double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    const double o = static_cast<double>(ops);
    st.counters["cyc/op"] = static_cast<double>(cyc) / o;
    st.counters["cyc/B"] = len ? static_cast<double>(cyc) / (o * len) : 0.0;
    st.counters["ns/op"] = ns / o;
    st.SetBytesProcessed(static_cast<int64_t>(ops * len));
    st.SetItemsProcessed(static_cast<int64_t>(ops));
  }
};

// Our library: single op or burst, encrypt or decrypt.
void bm_ours(benchmark::State& st, bool enc, Backend be, AeadAlgo algo, uint32_t burst,
             uint32_t len) {
  if (!backend_available(be)) {
    st.SkipWithError("backend not available on this CPU");
    return;
  }
  const auto km = keymat(algo);
  AeadContext ctx(algo, km, be);
  auto pk = make_pkts(burst, len);
  std::vector<AeadOp> ops(burst);
  for (uint32_t i = 0; i < burst; ++i) {
    Pkt& p = pk[i];
    ops[i] = {&ctx, p.iv, p.aad, kAadLen, p.buf, p.buf, len, p.icv};
  }
  if (!enc) {
    // Valid ciphertexts in ct[]; decrypt out of place into buf so that every
    // iteration verifies.
    for (uint32_t i = 0; i < burst; ++i) {
      Pkt& p = pk[i];
      AeadOp e{&ctx, p.iv, p.aad, kAadLen, p.buf, p.ct, len, p.icv};
      ctx.encrypt(e);
      ops[i].src = p.ct;
      ops[i].dst = p.buf;
    }
  }
  uint8_t ok[kMaxBurst];
  uint64_t bad = 0;
  Timer t;
  t.start();
  for (auto _ : st) {
    if (burst == 1) {
      if (enc) {
        ctx.encrypt(ops[0]);
      } else {
        bad += !ctx.decrypt(ops[0]);
      }
    } else if (enc) {
      encrypt_burst(ops.data(), burst);
    } else {
      bad += burst - decrypt_burst(ops.data(), burst, ok);
    }
    benchmark::ClobberMemory();
  }
  t.stop(st, st.iterations() * burst, len);
  if (bad) st.SkipWithError("decrypt failed to verify");
}

// IPsec-MB job API: 32 jobs submitted one by one, then flushed (same work as
// a burst); or (burst_api) through IMB_SUBMIT_BURST.
void bm_jobapi(benchmark::State& st, bool enc, AeadAlgo algo, uint32_t burst, uint32_t len, bool burst_api) {
  IMB_MGR* mgr = alloc_mb_mgr(0);
  if (mgr == nullptr) {
    st.SkipWithError("alloc_mb_mgr failed");
    return;
  }
  init_mb_mgr_auto(mgr, nullptr);
  const auto km = keymat(algo);
  auto* key = static_cast<gcm_key_data*>(aligned_alloc(64, sizeof(gcm_key_data)));
  if (algo == AeadAlgo::kAes128Gcm)
    IMB_AES128_GCM_PRE(mgr, km.data(), key);
  else
    IMB_AES256_GCM_PRE(mgr, km.data(), key);
  auto pk = make_pkts(burst, len);
  std::vector<std::array<uint8_t, 12>> nonce(burst);
  for (uint32_t i = 0; i < burst; ++i) {
    std::memcpy(nonce[i].data(), km.data() + key_len(algo), kSaltLen);
    std::memcpy(nonce[i].data() + kSaltLen, pk[i].iv, kIvLen);
  }
  uint8_t tags[kMaxBurst][kIcvLen];
  uint64_t errors = 0;
  auto fill = [&](IMB_JOB* job, uint32_t i) {
    Pkt& p = pk[i];
    job->cipher_mode = IMB_CIPHER_GCM;
    job->hash_alg = IMB_AUTH_AES_GMAC;
    job->cipher_direction = enc ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    job->chain_order = enc ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->enc_keys = key;
    job->dec_keys = key;
    job->key_len_in_bytes = key_len(algo);
    job->src = p.buf;
    job->dst = p.buf;
    job->cipher_start_src_offset_in_bytes = 0;
    job->msg_len_to_cipher_in_bytes = len;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = len;
    job->iv = nonce[i].data();
    job->iv_len_in_bytes = 12;
    job->u.GCM.aad = p.aad;
    job->u.GCM.aad_len_in_bytes = kAadLen;
    job->auth_tag_output = enc ? p.icv : tags[i];
    job->auth_tag_output_len_in_bytes = kIcvLen;
  };
  auto drain = [&](IMB_JOB* job) {
    for (; job != nullptr; job = IMB_GET_COMPLETED_JOB(mgr))
      errors += job->status != IMB_STATUS_COMPLETED;
  };
  // IPsec-MB 1.3's burst API: the burst's jobs taken at once, submitted at
  // once (validated), the rest flushed.
  IMB_JOB* jobs[kMaxBurst];
  auto count = [&](uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) errors += jobs[i]->status != IMB_STATUS_COMPLETED;
    return n;
  };
  Timer t;
  t.start();
  for (auto _ : st) {
    if (burst_api) {
      if (IMB_GET_NEXT_BURST(mgr, burst, jobs) < burst) {
        errors++;
        break;
      }
      for (uint32_t i = 0; i < burst; ++i) fill(jobs[i], i);
      uint32_t done = count(IMB_SUBMIT_BURST(mgr, burst, jobs));
      if (done == 0) {
        errors++;
        break;
      }
      while (done < burst) done += count(IMB_FLUSH_BURST(mgr, burst - done, jobs));
    } else {
      for (uint32_t i = 0; i < burst; ++i) {
        IMB_JOB* job = IMB_GET_NEXT_JOB(mgr);
        fill(job, i);
        drain(IMB_SUBMIT_JOB(mgr));
      }
      IMB_JOB* job;
      while ((job = IMB_FLUSH_JOB(mgr)) != nullptr) drain(job);
    }
    benchmark::ClobberMemory();
  }
  t.stop(st, st.iterations() * burst, len);
  if (errors) st.SkipWithError("job API returned an error status");
  free(key);
  free_mb_mgr(mgr);
}

// Many SAs: a random one of `nsa` contexts per op, as the worker sees with one
// packet per tunnel (bench/README.md, "The cost curve"). Each context is 16
// lines, so 10,000 of them (10 MB) live in the last-level cache at best.
// `prefetched`: encrypt_burst (which fetches each op's key lines a few ops
// ahead, AeadContext::prefetch_ahead); otherwise the same ops one call at a
// time with no prefetch: the ratio of the two is what the prefetch buys.
void bm_many_sa(benchmark::State& st, uint32_t nsa, uint32_t len, bool prefetched) {
  if (!backend_available(Backend::kIpsecMb)) {
    st.SkipWithError("IPsec-MB not available on this CPU");
    return;
  }
  std::vector<std::unique_ptr<AeadContext>> ctxs;
  ctxs.reserve(nsa);
  std::mt19937 g(4242);
  for (uint32_t i = 0; i < nsa; ++i) {
    std::vector<uint8_t> km(keymat_len(AeadAlgo::kAes128Gcm));
    for (auto& b : km) b = static_cast<uint8_t>(g());
    ctxs.push_back(std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, km, Backend::kIpsecMb));
  }
  constexpr uint32_t kOrder = 1u << 16;
  std::vector<const AeadContext*> order(kOrder);
  for (auto& c : order) c = ctxs[g() % nsa].get();
  const uint32_t burst = kMaxBurst;
  auto pk = make_pkts(burst, len);
  std::vector<AeadOp> ops(burst);
  for (uint32_t i = 0; i < burst; ++i) ops[i] = {nullptr, pk[i].iv, pk[i].aad, kAadLen, pk[i].buf, pk[i].buf, len, pk[i].icv};
  uint32_t pos = 0;
  Timer t;
  t.start();
  for (auto _ : st) {
    for (uint32_t i = 0; i < burst; ++i) ops[i].ctx = order[(pos + i) & (kOrder - 1)];
    pos += burst;
    if (prefetched) {
      encrypt_burst(ops.data(), burst);
    } else {
      for (uint32_t i = 0; i < burst; ++i) ops[i].ctx->encrypt(ops[i]);
    }
    benchmark::ClobberMemory();
  }
  t.stop(st, st.iterations() * burst, len);
}

void register_all() {
  for (bool enc : {true, false}) {
    const char* opn = enc ? "encrypt" : "decrypt";
    for (AeadAlgo algo : {AeadAlgo::kAes128Gcm, AeadAlgo::kAes256Gcm}) {
      for (uint32_t len : kSizes) {
        for (Backend be : {Backend::kIpsecMb, Backend::kOpenssl}) {
          for (uint32_t burst : {1u, static_cast<uint32_t>(kMaxBurst)}) {
            std::string name = std::string(opn) + "/" + std::string(to_string(be)) + "/" +
                               (burst == 1 ? "single" : "burst32") + "/" +
                               std::string(to_string(algo)) + "/" + std::to_string(len);
            benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
              bm_ours(st, enc, be, algo, burst, len);
            });
          }
        }
        for (bool burst_api : {false, true}) {
          std::string name = std::string(opn) + (burst_api ? "/ipsec-mb-burstapi" : "/ipsec-mb-jobapi") +
                             "/burst32/" + std::string(to_string(algo)) + "/" + std::to_string(len);
          benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) {
            bm_jobapi(st, enc, algo, kMaxBurst, len, burst_api);
          });
        }
      }
    }
  }
  for (uint32_t nsa : {1u, 10000u}) {
    for (uint32_t len : kSizes) {
      for (bool pf : {true, false}) {
        std::string name = std::string("encrypt/ipsec-mb/") + (pf ? "burst32" : "loop32") + "-random-of-" +
                           std::to_string(nsa) + "-sa/aes128-gcm/" + std::to_string(len);
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& st) { bm_many_sa(st, nsa, len, pf); });
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("ipsec_mb_version", imb_get_version_str());
  benchmark::AddCustomContext("ipsec_mb_arch", std::string(ipsecmb_arch()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
