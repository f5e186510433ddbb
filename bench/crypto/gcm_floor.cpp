// The crypto floor of the end-to-end harness: what one AES-GCM operation
// costs when nothing else runs, so that "own cost" is measured against the
// crypto espgw actually calls (IPsec-MB's one-shot GCM entry points), not
// against dpdk-test-crypto-perf's cryptodev queue.
//
// One key, 32 buffers that stay in L1, AAD of 8 bytes (SPI || seq), 16-byte
// tag; per size the best of 50 rounds of 10,000 calls, in TSC cycles per
// call. Output: one JSON object per line, for scripts/bench_e2e.py.
//
//   gcm_floor [--algo aes128|aes256] [--op encrypt|decrypt] [--rounds N]
//             [--calls N] SIZE...
#include <intel-ipsec-mb.h>
#include <x86intrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int kBuffers = 32;
constexpr uint32_t kMaxSize = 2048;
constexpr uint64_t kAadLen = 8;
constexpr uint64_t kTagLen = 16;

struct alignas(64) Buffer {
  uint8_t iv[16];
  uint8_t aad[16];
  uint8_t tag[16];
  alignas(64) uint8_t data[kMaxSize];
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "gcm_floor: %s\nusage: gcm_floor [--algo aes128|aes256] [--op encrypt|decrypt] "
                       "[--rounds N] [--calls N] SIZE...\n", why);
  std::exit(64);
}

uint64_t parse_count(const char* s, uint64_t lo, uint64_t hi, const char* what) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (!*s || *end || s[0] == '-' || v < lo || v > hi) usage(what);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  bool aes256 = false, decrypt = false;
  uint64_t rounds = 50, calls = 10000;
  std::vector<uint32_t> sizes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--algo") {
      std::string v = value();
      if (v == "aes128") aes256 = false;
      else if (v == "aes256") aes256 = true;
      else usage("--algo is aes128 or aes256");
    } else if (a == "--op") {
      std::string v = value();
      if (v == "encrypt") decrypt = false;
      else if (v == "decrypt") decrypt = true;
      else usage("--op is encrypt or decrypt");
    } else if (a == "--rounds") {
      rounds = parse_count(value(), 1, 100000, "--rounds: 1..100000");
    } else if (a == "--calls") {
      calls = parse_count(value(), 1, 100000000, "--calls: 1..100000000");
    } else {
      sizes.push_back(static_cast<uint32_t>(parse_count(argv[i], 1, kMaxSize, "SIZE: 1..2048")));
    }
  }
  if (sizes.empty()) usage("no SIZE given");

  IMB_MGR* mgr = alloc_mb_mgr(0);
  if (!mgr) usage("alloc_mb_mgr failed");
  init_mb_mgr_auto(mgr, nullptr);
  if (imb_get_errno(mgr) != 0) usage("IPsec-MB: no usable architecture");

  std::mt19937 g(4106);
  uint8_t key[32];
  for (auto& b : key) b = static_cast<uint8_t>(g());
  auto* kd = static_cast<gcm_key_data*>(std::aligned_alloc(64, sizeof(gcm_key_data)));
  auto* ctx = static_cast<gcm_context_data*>(std::aligned_alloc(64, sizeof(gcm_context_data)));
  if (aes256) IMB_AES256_GCM_PRE(mgr, key, kd);
  else IMB_AES128_GCM_PRE(mgr, key, kd);
  aes_gcm_enc_dec_t fn = aes256 ? (decrypt ? mgr->gcm256_dec : mgr->gcm256_enc)
                                : (decrypt ? mgr->gcm128_dec : mgr->gcm128_enc);

  auto bufs = std::make_unique<Buffer[]>(kBuffers);
  for (int i = 0; i < kBuffers; ++i) {
    for (auto& b : bufs[i].iv) b = static_cast<uint8_t>(g());
    for (auto& b : bufs[i].aad) b = static_cast<uint8_t>(g());
    for (auto& b : bufs[i].data) b = static_cast<uint8_t>(g());
  }

  for (uint32_t size : sizes) {
    uint64_t best = UINT64_MAX;
    for (uint64_t r = 0; r <= rounds; ++r) {  // round 0 warms caches and clocks
      uint64_t t0 = __rdtsc();
      for (uint64_t c = 0; c < calls; ++c) {
        Buffer& b = bufs[c % kBuffers];
        // In place, as espgw encrypts and decrypts the mbuf's own bytes.
        fn(kd, ctx, b.data, b.data, size, b.iv, b.aad, kAadLen, b.tag, kTagLen);
      }
      uint64_t t = __rdtsc() - t0;
      if (r > 0) best = std::min(best, t);
    }
    std::printf("{\"algo\":\"%s\",\"op\":\"%s\",\"bytes\":%u,\"cycles\":%.1f,\"rounds\":%llu,\"calls\":%llu}\n",
                aes256 ? "aes256" : "aes128", decrypt ? "decrypt" : "encrypt", size,
                static_cast<double>(best) / static_cast<double>(calls), static_cast<unsigned long long>(rounds),
                static_cast<unsigned long long>(calls));
  }
  std::fflush(stdout);
  std::free(ctx);
  std::free(kd);
  free_mb_mgr(mgr);
  return 0;
}
