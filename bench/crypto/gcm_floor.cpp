// The crypto floor of the end-to-end harness: what one AES-GCM operation
// costs when nothing else runs, so that "own cost" is measured against the
// crypto espgw actually calls (IPsec-MB's one-shot GCM entry points), not
// against dpdk-test-crypto-perf's cryptodev queue.
//
// One key, 32 buffers that stay in L1, AAD of 8 bytes (SPI || seq), 16-byte
// tag; per size the best of 50 rounds of 10,000 calls, in TSC cycles per
// call. Output: one JSON object per line, for scripts/bench_e2e.py.
//
// --nonce and --aad reproduce what the caller does just before the call, to
// show what store forwarding costs (crypto/aead.cpp, make_nonce):
//   --nonce ready   the 12-byte nonce was written long before (the floor);
//   --nonce split   salt || IV built on the stack with two copies per call,
//                   as espgw did until 2026-12-05;
//   --nonce single  built per call with one 16-byte store, as espgw does now;
//   --aad fresh     the 8-byte AAD written per call with two 4-byte stores.
//
// --arch picks IPsec-MB's code path instead of its own choice for this CPU
// (init_mb_mgr_auto, what espgw uses), to see whether that choice is the
// fastest here at a given length; the output names the path that ran.
//
//   gcm_floor [--algo aes128|aes256] [--op encrypt|decrypt] [--rounds N]
//             [--calls N] [--nonce ready|split|single] [--aad ready|fresh]
//             [--arch auto|sse|avx|avx2|avx512] SIZE...
#include <emmintrin.h>
#include <intel-ipsec-mb.h>
#include <x86intrin.h>

#include <algorithm>
#include <initializer_list>
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
                       "[--rounds N] [--calls N] [--nonce ready|split|single] [--aad ready|fresh]\n"
                       "                 [--arch auto|sse|avx|avx2|avx512] SIZE...\n", why);
  std::exit(64);
}

uint64_t parse_count(const char* s, uint64_t lo, uint64_t hi, const char* what) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (!*s || *end || s[0] == '-' || v < lo || v > hi) usage(what);
  return v;
}

// The index of v among names; usage(why) when it is none of them.
int choice(const std::string& v, std::initializer_list<const char*> names, const char* why) {
  int i = 0;
  for (const char* n : names) {
    if (v == n) return i;
    ++i;
  }
  usage(why);
}

}  // namespace

int main(int argc, char** argv) {
  bool aes256 = false, decrypt = false, aad_fresh = false;
  int arch = 0;  // 0 auto, then sse, avx, avx2, avx512
  enum class Nonce { kReady, kSplit, kSingle } nonce_mode = Nonce::kReady;
  uint64_t rounds = 50, calls = 10000;
  std::vector<uint32_t> sizes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--algo") {
      aes256 = choice(value(), {"aes128", "aes256"}, "--algo is aes128 or aes256") == 1;
    } else if (a == "--op") {
      decrypt = choice(value(), {"encrypt", "decrypt"}, "--op is encrypt or decrypt") == 1;
    } else if (a == "--nonce") {
      nonce_mode = static_cast<Nonce>(choice(value(), {"ready", "split", "single"}, "--nonce is ready, split or single"));
    } else if (a == "--aad") {
      aad_fresh = choice(value(), {"ready", "fresh"}, "--aad is ready or fresh") == 1;
    } else if (a == "--arch") {
      arch = choice(value(), {"auto", "sse", "avx", "avx2", "avx512"}, "--arch is auto, sse, avx, avx2 or avx512");
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
  // The init_mb_mgr_<arch> calls need the CPU features of their path: check
  // them first (a missing one would be an illegal instruction, not an error).
  const uint64_t f = mgr->features;
  const uint64_t need[] = {0, IMB_CPUFLAGS_SSE, IMB_CPUFLAGS_AVX, IMB_CPUFLAGS_AVX2, IMB_CPUFLAGS_AVX512};
  if ((f & need[arch]) != need[arch]) usage("this CPU lacks the features of the --arch asked for");
  IMB_ARCH used = IMB_ARCH_NONE;
  switch (arch) {
    case 0: init_mb_mgr_auto(mgr, &used); break;
    case 1: init_mb_mgr_sse(mgr); used = IMB_ARCH_SSE; break;
    case 2: init_mb_mgr_avx(mgr); used = IMB_ARCH_AVX; break;
    case 3: init_mb_mgr_avx2(mgr); used = IMB_ARCH_AVX2; break;
    default: init_mb_mgr_avx512(mgr); used = IMB_ARCH_AVX512; break;
  }
  if (imb_get_errno(mgr) != 0) usage("IPsec-MB: no usable architecture");
  const char* used_name = used == IMB_ARCH_SSE    ? "sse"
                          : used == IMB_ARCH_AVX  ? "avx"
                          : used == IMB_ARCH_AVX2 ? "avx2"
                          : used == IMB_ARCH_AVX512 ? "avx512"
                                                    : "other";

  std::mt19937 g(4106);
  uint8_t key[32];
  for (auto& b : key) b = static_cast<uint8_t>(g());
  uint8_t salt[4];
  for (auto& b : salt) b = static_cast<uint8_t>(g());
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
        const uint8_t* iv = b.iv;
        const uint8_t* aad = b.aad;
        alignas(16) uint8_t nonce[16];
        alignas(16) uint8_t fresh_aad[16];
        if (nonce_mode == Nonce::kSplit) {
          std::memcpy(nonce, salt, 4);
          std::memcpy(nonce + 4, b.iv + 4, 8);
          iv = nonce;
        } else if (nonce_mode == Nonce::kSingle) {
          uint32_t s;
          std::memcpy(&s, salt, 4);
          const __m128i v = _mm_or_si128(_mm_slli_si128(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b.iv + 4)), 4),
                                         _mm_cvtsi32_si128(static_cast<int>(s)));
          _mm_store_si128(reinterpret_cast<__m128i*>(nonce), v);
          iv = nonce;
        }
        if (aad_fresh) {
          const uint32_t spi = 0x1000, seq = static_cast<uint32_t>(c);
          std::memcpy(fresh_aad, &spi, 4);
          std::memcpy(fresh_aad + 4, &seq, 4);
          aad = fresh_aad;
        }
        // Keeps the compiler from merging or sinking the stores above.
        asm volatile("" : : "r"(nonce), "r"(fresh_aad) : "memory");
        // In place, as espgw encrypts and decrypts the mbuf's own bytes.
        fn(kd, ctx, b.data, b.data, size, iv, aad, kAadLen, b.tag, kTagLen);
      }
      uint64_t t = __rdtsc() - t0;
      if (r > 0) best = std::min(best, t);
    }
    std::printf("{\"arch\":\"%s\",\"algo\":\"%s\",\"op\":\"%s\",\"nonce\":\"%s\",\"aad\":\"%s\",\"bytes\":%u,\"cycles\":%.1f,\"rounds\":%llu,\"calls\":%llu}\n",
                used_name, aes256 ? "aes256" : "aes128", decrypt ? "decrypt" : "encrypt",
                nonce_mode == Nonce::kReady ? "ready" : nonce_mode == Nonce::kSplit ? "split" : "single",
                aad_fresh ? "fresh" : "ready", size,
                static_cast<double>(best) / static_cast<double>(calls), static_cast<unsigned long long>(rounds),
                static_cast<unsigned long long>(calls));
  }
  std::fflush(stdout);
  std::free(ctx);
  std::free(kd);
  free_mb_mgr(mgr);
  return 0;
}
