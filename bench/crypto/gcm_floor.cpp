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
// --arch auto (the default) runs what espgw runs at each size: IPsec-MB's
// own choice for this CPU (init_mb_mgr_auto), or, built against IPsec-MB 2.x
// on an AVX2 CPU with VAES, its VAES AVX2 code from the length espgw sends
// there (crypto::ipsecmb_vaes_avx2_min_len). The other values pick one
// code path at every size, to see which is the fastest here at a given
// length (avx: IPsec-MB 1.x only; vaes-avx2: 2.x only); the output names
// the path that ran.
//
//   gcm_floor [--algo aes128|aes256] [--op encrypt|decrypt] [--rounds N]
//             [--calls N] [--nonce ready|split|single] [--aad ready|fresh]
//             [--arch auto|sse|avx|avx2|avx512|vaes-avx2] SIZE...
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

#include "crypto/aead.h"
#include "crypto/vaes_avx2_gcm.h"

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
                       "                 [--arch auto|sse|avx|avx2|avx512|vaes-avx2] SIZE...\n", why);
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
  int arch = 0;  // 0 auto, then sse, avx, avx2, avx512, vaes-avx2
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
      arch = choice(value(), {"auto", "sse", "avx", "avx2", "avx512", "vaes-avx2"},
                    "--arch is auto, sse, avx, avx2, avx512 or vaes-avx2");
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
#if IMB_VERSION_NUM >= 0x20000
  if (arch == 2) usage("--arch avx: IPsec-MB 2.x has no AVX code path (its AVX symbols run the SSE code)");
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
  const bool vaes_cpu = vaes_avx2_gcm_runs(f);
#else
  const bool vaes_cpu = false;
#endif
  const uint64_t need[] = {0, IMB_CPUFLAGS_SSE, 0, IMB_CPUFLAGS_AVX2, IMB_CPUFLAGS_AVX512, IMB_CPUFLAGS_AVX2};
  if (arch == 5 && !vaes_cpu) usage("this CPU lacks VAES or VPCLMULQDQ (--arch vaes-avx2)");
#else
  if (arch == 5) usage("--arch vaes-avx2 needs a build against IPsec-MB 2.x (scripts/ipsec-mb.sh)");
  const uint64_t need[] = {0, IMB_CPUFLAGS_SSE, IMB_CPUFLAGS_AVX, IMB_CPUFLAGS_AVX2, IMB_CPUFLAGS_AVX512, 0};
#endif
  if ((f & need[arch]) != need[arch]) usage("this CPU lacks the features of the --arch asked for");
  IMB_ARCH used = IMB_ARCH_NONE;
  switch (arch) {
    case 0: init_mb_mgr_auto(mgr, &used); break;
    case 1: init_mb_mgr_sse(mgr); used = IMB_ARCH_SSE; break;
#if IMB_VERSION_NUM < 0x20000
    case 2: init_mb_mgr_avx(mgr); used = IMB_ARCH_AVX; break;
#endif
    case 3:
    case 5: init_mb_mgr_avx2(mgr); used = IMB_ARCH_AVX2; break;
    default: init_mb_mgr_avx512(mgr); used = IMB_ARCH_AVX512; break;
  }
  if (imb_get_errno(mgr) != 0) usage("IPsec-MB: no usable architecture");
  const char* used_name = used == IMB_ARCH_SSE    ? "sse"
#if IMB_VERSION_NUM < 0x20000
                          : used == IMB_ARCH_AVX  ? "avx"
#endif
                          : used == IMB_ARCH_AVX2 ? "avx2"
                          : used == IMB_ARCH_AVX512 ? "avx512"
                                                    : "other";
  // From this length on the VAES AVX2 code runs (UINT32_MAX: never).
  uint32_t vaes_from = UINT32_MAX;
  if (arch == 0) vaes_from = espgw::crypto::ipsecmb_vaes_avx2_min_len();
  if (arch == 5) vaes_from = 0;

  std::mt19937 g(4106);
  uint8_t key[32];
  for (auto& b : key) b = static_cast<uint8_t>(g());
  uint8_t salt[4];
  for (auto& b : salt) b = static_cast<uint8_t>(g());
  auto* kd = static_cast<gcm_key_data*>(std::aligned_alloc(64, sizeof(gcm_key_data)));
  auto* kd_vaes = static_cast<gcm_key_data*>(std::aligned_alloc(64, sizeof(gcm_key_data)));
  auto* ctx = static_cast<gcm_context_data*>(std::aligned_alloc(64, sizeof(gcm_context_data)));
  if (aes256) IMB_AES256_GCM_PRE(mgr, key, kd);
  else IMB_AES128_GCM_PRE(mgr, key, kd);
  const aes_gcm_enc_dec_t lib_fn = aes256 ? (decrypt ? mgr->gcm256_dec : mgr->gcm256_enc)
                                          : (decrypt ? mgr->gcm128_dec : mgr->gcm128_enc);
  aes_gcm_enc_dec_t vaes_fn = nullptr;
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
  if (vaes_from != UINT32_MAX) {
    if (aes256) aes_gcm_pre_256_vaes_avx2(key, kd_vaes);
    else aes_gcm_pre_128_vaes_avx2(key, kd_vaes);
    vaes_fn = aes256 ? (decrypt ? aes_gcm_dec_256_vaes_avx2 : aes_gcm_enc_256_vaes_avx2)
                     : (decrypt ? aes_gcm_dec_128_vaes_avx2 : aes_gcm_enc_128_vaes_avx2);
  }
#endif

  auto bufs = std::make_unique<Buffer[]>(kBuffers);
  for (int i = 0; i < kBuffers; ++i) {
    for (auto& b : bufs[i].iv) b = static_cast<uint8_t>(g());
    for (auto& b : bufs[i].aad) b = static_cast<uint8_t>(g());
    for (auto& b : bufs[i].data) b = static_cast<uint8_t>(g());
  }

  for (uint32_t size : sizes) {
    const bool vaes = size >= vaes_from;
    const aes_gcm_enc_dec_t fn = vaes ? vaes_fn : lib_fn;
    const gcm_key_data* k = vaes ? kd_vaes : kd;
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
        fn(k, ctx, b.data, b.data, size, iv, aad, kAadLen, b.tag, kTagLen);
      }
      uint64_t t = __rdtsc() - t0;
      if (r > 0) best = std::min(best, t);
    }
    std::printf("{\"arch\":\"%s\",\"algo\":\"%s\",\"op\":\"%s\",\"nonce\":\"%s\",\"aad\":\"%s\",\"bytes\":%u,\"cycles\":%.1f,\"rounds\":%llu,\"calls\":%llu}\n",
                vaes ? "vaes-avx2" : used_name, aes256 ? "aes256" : "aes128", decrypt ? "decrypt" : "encrypt",
                nonce_mode == Nonce::kReady ? "ready" : nonce_mode == Nonce::kSplit ? "split" : "single",
                aad_fresh ? "fresh" : "ready", size,
                static_cast<double>(best) / static_cast<double>(calls), static_cast<unsigned long long>(rounds),
                static_cast<unsigned long long>(calls));
  }
  std::fflush(stdout);
  std::free(ctx);
  std::free(kd_vaes);
  std::free(kd);
  free_mb_mgr(mgr);
  return 0;
}
