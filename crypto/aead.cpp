// AES-GCM AEAD contexts: IPsec-MB direct GCM calls (hot path) and an OpenSSL 3
// EVP backend (fallback on CPUs without AES-NI/PCLMULQDQ, and test oracle).
#include "crypto/aead.h"
#include "crypto/vaes_avx2_gcm.h"

#include <intel-ipsec-mb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <emmintrin.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace espgw::crypto {

namespace {

// ---------------------------------------------------------------------------
// IPsec-MB's direct GCM entry points, by AeadAlgo (index 0: AES-128, 1:
// AES-256). Written once, by ImbRuntime's constructor; read by every op. A
// context is built only after imb() returned, and reaches a worker through
// the SA's release/acquire publication, so the reads never race the write.
aes_gcm_enc_dec_t g_gcm_enc[2];
aes_gcm_enc_dec_t g_gcm_dec[2];

inline int algo_index(AeadAlgo a) { return a == AeadAlgo::kAes128Gcm ? 0 : 1; }

// Two code paths. IPsec-MB 2.x has an AES-GCM for AVX2 CPUs with VAES and
// VPCLMULQDQ (two blocks per instruction, 16 hash-key powers) that its own
// dispatch picks only when the CPU also has GFNI, which GCM does not use:
// on such a CPU without GFNI or AVX-512 (AMD Zen 3) it runs the AES-NI AVX2
// code, which costs 1.5-1.9x as much from ~100 bytes up (bench/crypto/
// gcm_floor --arch avx2 against --arch vaes-avx2: 516 bytes ~420 cycles
// against ~250, 1,404 bytes ~960 against ~520) but less below (68 bytes:
// ~103 against ~135). espgw then calls the VAES code itself for ops of
// g_large_min bytes or more, with its own key block (kLargeKeyOffset into
// the context's key area: the two paths' hash-key layouts differ), and the
// library's pick for the shorter ones.
#ifdef ESPGW_HAVE_VAES_AVX2_GCM  // crypto/vaes_avx2_gcm.h
// The short path's key data (the AVX2/AVX-512 layout: 8 powers and their
// reductions) and the VAES AVX2 path's (16 and 16), one after the other in
// the key area; the second on a line of its own.
inline constexpr uint32_t kSmallKeyBytes =
    offsetof(gcm_key_data, ghash_keys) + sizeof(gcm_key_data::ghash_keys.avx2_avx512);  // 496
inline constexpr uint32_t kLargeKeyBytes =
    offsetof(gcm_key_data, ghash_keys) + sizeof(gcm_key_data::ghash_keys.vaes_avx2);  // 752
inline constexpr uint32_t kLargeKeyOffset = AeadContext::kVaesAvx2KeyAt - AeadContext::kImbKeyOffset;  // into the area
static_assert(kSmallKeyBytes <= kLargeKeyOffset && kLargeKeyOffset + kLargeKeyBytes <= AeadContext::kImbAreaBytes &&
              AeadContext::kVaesAvx2KeyAt % 64 == 0);
inline constexpr bool kTwoPaths = true;
#else
inline constexpr uint32_t kLargeKeyOffset = 0;
inline constexpr bool kTwoPaths = false;  // built against IPsec-MB 1.x: its pick only
#endif
// Ops of at least this many bytes take the VAES AVX2 path; UINT32_MAX: one
// path (written once, as g_gcm_enc). The crossover measured on the AMD EPYC
// (Zen 3) VM of bench/README.md: 68 bytes are cheaper on the AES-NI code, 84
// and more on the VAES code.
inline constexpr uint32_t kVaesAvx2MinLen = 80;
uint32_t g_large_min = UINT32_MAX;
// The library's pick's key data: this many bytes into the key area (0, or
// 48 for IPsec-MB 2.x's AVX-512 code, whose vmovdqa64 loads of the key
// data need it 64-byte aligned). Written once, as g_gcm_enc.
#if IMB_VERSION_NUM >= 0x20000
uint32_t g_key_shift = 0;
#else
inline constexpr uint32_t g_key_shift = 0;  // 1.3: every code path takes 16-byte aligned key data
#endif
aes_gcm_enc_dec_t g_gcm_enc_large[2];
aes_gcm_enc_dec_t g_gcm_dec_large[2];

// Where the GCM code IPsec-MB picked keeps the hash-key powers in
// gcm_key_data (the header's ghash_keys union): the VAES/AVX-512 code keeps 48
// powers at the end, H^1 last; the AVX2 code 8 powers right after the round
// keys, H^1 first; the SSE/AVX code those 8 and, 128 bytes on, their
// Karatsuba halves. Read off a precomputed key (ImbRuntime), not guessed from
// the CPU: prefetch_ahead fetches the lines an op reads, and fetching the
// wrong ones (the AVX-512 layout on an AVX2-only CPU) leaves every hash-key
// line of a cold SA to miss.
// IPsec-MB 2.x changed two of them: its AVX2 code keeps each power next to
// its reduction (8 pairs from byte 240), its VAES/AVX-512 code 32 powers from
// byte 240 and their reductions 512 bytes on (kPairs8, kSplit32).
enum class HashKeyLayout : uint8_t { kTail48, kHead8, kHead8Karatsuba, kPairs8, kSplit32 };
HashKeyLayout g_hash_layout = HashKeyLayout::kTail48;  // written once, as g_gcm_enc
inline constexpr uint32_t kRoundKeyBytes = 16 * 15;     // gcm_key_data: the round keys first
inline constexpr uint32_t kHeadKaratsuba = kRoundKeyBytes + 16 * 8;  // sse_avx.shifted_hkey_k

HashKeyLayout detect_hash_layout(IMB_MGR* mgr, IMB_ARCH arch) {
#if IMB_VERSION_NUM >= 0x20000
  // The SSE code's layout is 1.3's; the others are told by the path, as
  // where the precompute writes no longer tells them apart.
  if (arch == IMB_ARCH_AVX2) return HashKeyLayout::kPairs8;
  if (arch == IMB_ARCH_AVX512) return HashKeyLayout::kSplit32;
#else
  (void)arch;
#endif
  alignas(64) gcm_key_data kd;
  std::memset(&kd, 0, sizeof(kd));
  const uint8_t key[16] = {0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
                           0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c};
  IMB_AES128_GCM_PRE(mgr, key, &kd);
  auto written = [&](uint32_t off) {
    const auto* b = reinterpret_cast<const uint8_t*>(&kd) + off;
    uint8_t any = 0;
    for (int i = 0; i < 16; i++) any |= b[i];
    return any != 0;
  };
  HashKeyLayout l = written(sizeof(kd) - 16)  ? HashKeyLayout::kTail48
                    : written(kHeadKaratsuba) ? HashKeyLayout::kHead8Karatsuba
                                              : HashKeyLayout::kHead8;
  std::memset(&kd, 0, sizeof(kd));
  return l;
}

// IPsec-MB: one process-wide manager, used only for its direct GCM function
// pointers (which are stateless: all per-op state lives in a caller-provided
// gcm_context_data). Built once, thread-safely, on first use.
struct ImbRuntime {
  IMB_MGR* mgr = nullptr;
  IMB_ARCH arch = IMB_ARCH_NONE;
  bool usable = false;  // AES-NI + PCLMULQDQ path selected

  ImbRuntime() {
    mgr = alloc_mb_mgr(0);
    if (mgr == nullptr) return;
    init_mb_mgr_auto(mgr, &arch);
    if (imb_get_errno(mgr) != 0) {
      free_mb_mgr(mgr);
      mgr = nullptr;
      arch = IMB_ARCH_NONE;
      return;
    }
    const bool cpu_ok = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
    usable = cpu_ok && arch >= IMB_ARCH_SSE;
    g_gcm_enc[0] = mgr->gcm128_enc;
    g_gcm_dec[0] = mgr->gcm128_dec;
    g_gcm_enc[1] = mgr->gcm256_enc;
    g_gcm_dec[1] = mgr->gcm256_dec;
    if (usable) g_hash_layout = detect_hash_layout(mgr, arch);
#if IMB_VERSION_NUM >= 0x20000
    if (arch == IMB_ARCH_AVX512) g_key_shift = AeadContext::kImbKeyOffsetAligned - AeadContext::kImbKeyOffset;
#endif
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
    const char* env = std::getenv("ESPGW_GCM_VAES_AVX2");  // "0": the library's pick only (A/B runs)
    // Not when the library picked that code itself (an AVX2 CPU with GFNI):
    // its key data then has the VAES layout, and one path is all there is.
    if (usable && arch == IMB_ARCH_AVX2 && vaes_avx2_gcm_runs(mgr->features) &&
        mgr->gcm128_enc != aes_gcm_enc_128_vaes_avx2 && !(env != nullptr && std::strcmp(env, "0") == 0)) {
      g_gcm_enc_large[0] = aes_gcm_enc_128_vaes_avx2;
      g_gcm_dec_large[0] = aes_gcm_dec_128_vaes_avx2;
      g_gcm_enc_large[1] = aes_gcm_enc_256_vaes_avx2;
      g_gcm_dec_large[1] = aes_gcm_dec_256_vaes_avx2;
      g_large_min = kVaesAvx2MinLen;
    }
#endif
  }
  ~ImbRuntime() {
    if (mgr != nullptr) free_mb_mgr(mgr);
  }
};

const ImbRuntime& imb() {
  static const ImbRuntime rt;  // C++11 magic statics: thread-safe lazy init
  return rt;
}

// ---------------------------------------------------------------------------
// OpenSSL: ciphers fetched once; one EVP_CIPHER_CTX per thread and algorithm,
// allocated on the thread's first op, re-keyed on every op (cipher == NULL in
// EVP_CipherInit_ex keeps the provider context, so no allocation per op), and
// re-keyed with an all-zero key after the op so that no SA's expanded key
// outlives its AeadContext in a thread's cache.
const EVP_CIPHER* ossl_cipher(AeadAlgo a) {
  struct Ciphers {
    EVP_CIPHER* c128 = EVP_CIPHER_fetch(nullptr, "AES-128-GCM", nullptr);
    EVP_CIPHER* c256 = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
    ~Ciphers() {
      EVP_CIPHER_free(c128);
      EVP_CIPHER_free(c256);
    }
  };
  static const Ciphers c;
  return a == AeadAlgo::kAes128Gcm ? c.c128 : c.c256;
}

struct ThreadCtx {
  EVP_CIPHER_CTX* ctx[2] = {nullptr, nullptr};
  ~ThreadCtx() {
    for (auto* c : ctx) EVP_CIPHER_CTX_free(c);  // frees and cleanses
  }
};

EVP_CIPHER_CTX* thread_ctx(AeadAlgo a) {
  thread_local ThreadCtx tc;
  const int i = a == AeadAlgo::kAes128Gcm ? 0 : 1;
  if (tc.ctx[i] == nullptr) {
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    if (c == nullptr) return nullptr;
    if (EVP_CipherInit_ex(c, ossl_cipher(a), nullptr, nullptr, nullptr, 1) != 1) {
      EVP_CIPHER_CTX_free(c);
      return nullptr;
    }
    tc.ctx[i] = c;
  }
  return tc.ctx[i];
}

constexpr uint8_t kZeroKey[32] = {};

inline bool ct_equal16(const uint8_t* a, const uint8_t* b) {
  uint64_t a0, a1, b0, b1;
  std::memcpy(&a0, a, 8);
  std::memcpy(&a1, a + 8, 8);
  std::memcpy(&b0, b, 8);
  std::memcpy(&b1, b + 8, 8);
  return ((a0 ^ b0) | (a1 ^ b1)) == 0;  // no early exit
}

}  // namespace

// ---------------------------------------------------------------------------
// OpenSSL backend: a few pre-keyed EVP_CIPHER_CTX slots per context, taken
// with a non-blocking atomic exchange (never waits: when every slot is busy
// the op falls back to the calling thread's cached context, re-keyed for that
// op). A slot only needs its IV set per op, so the common path does no key
// schedule and no allocation.
inline constexpr int kOsslSlots = 4;

struct AeadContext::OsslState : InStateArena {
  uint8_t raw_key[32];  // the AES key
  struct alignas(64) Slot {
    std::atomic<uint8_t> busy{0};
    EVP_CIPHER_CTX* ctx = nullptr;
  };
  Slot slot[kOsslSlots];
};

static_assert(sizeof(gcm_key_data) == AeadContext::kImbKeyBytes, "IPsec-MB's gcm_key_data changed size");

std::string_view to_string(AeadAlgo a) {
  switch (a) {
    case AeadAlgo::kAes128Gcm: return "aes128-gcm";
    case AeadAlgo::kAes256Gcm: return "aes256-gcm";
  }
  return "unknown";
}

std::string_view to_string(Backend b) {
  switch (b) {
    case Backend::kIpsecMb: return "ipsec-mb";
    case Backend::kOpenssl: return "openssl";
  }
  return "unknown";
}

bool backend_available(Backend b) {
  switch (b) {
    case Backend::kIpsecMb: return imb().usable;
    case Backend::kOpenssl: return true;
  }
  return false;
}

Backend best_backend() {
  return imb().usable ? Backend::kIpsecMb : Backend::kOpenssl;
}

std::string_view ipsecmb_arch() {
  const ImbRuntime& rt = imb();
  if (rt.mgr == nullptr) return "unavailable";
  switch (rt.arch) {
    case IMB_ARCH_SSE: return "sse";
#if IMB_VERSION_NUM < 0x20000  // 2.x dropped its no-AES-NI and AVX code
    case IMB_ARCH_NOAESNI: return "no-aesni";
    case IMB_ARCH_AVX: return "avx";
#endif
    case IMB_ARCH_AVX2: return g_large_min != UINT32_MAX ? "avx2+vaes-avx2" : "avx2";
    case IMB_ARCH_AVX512: return "avx512";
    default: return "unknown";
  }
}

uint32_t ipsecmb_vaes_avx2_min_len() {
  imb();
  return g_large_min;
}

size_t ipsecmb_key_offset() {
  imb();
  return AeadContext::kImbKeyOffset + g_key_shift;
}

ByteRange ipsecmb_hash_key_bytes() {
  imb();
  switch (g_hash_layout) {
    case HashKeyLayout::kHead8: return {kRoundKeyBytes, kRoundKeyBytes + 16 * 8};
    case HashKeyLayout::kHead8Karatsuba: return {kRoundKeyBytes, kHeadKaratsuba + 16 * 8};
    case HashKeyLayout::kPairs8: return {kRoundKeyBytes, kRoundKeyBytes + 32 * 8};
    case HashKeyLayout::kSplit32: return {kRoundKeyBytes, kRoundKeyBytes + 32 * 32};
    default: return {kRoundKeyBytes, kRoundKeyBytes + 16 * 48};
  }
}

AeadContext::AeadContext(AeadAlgo algo, std::span<const uint8_t> keymat, Backend backend)
    : salt_{}, algo_(algo), backend_(backend), imb_key_{} {
  if (algo != AeadAlgo::kAes128Gcm && algo != AeadAlgo::kAes256Gcm)
    throw std::invalid_argument("AeadContext: unknown AEAD algorithm");
  const size_t want = keymat_len(algo);
  if (keymat.size() != want)
    throw std::invalid_argument("AeadContext: " + std::string(to_string(algo)) +
                                " needs " + std::to_string(want) +
                                " bytes of key material (key || 4-byte salt), got " +
                                std::to_string(keymat.size()));
  if (backend != Backend::kIpsecMb && backend != Backend::kOpenssl)
    throw std::invalid_argument("AeadContext: unknown backend");
  if (!backend_available(backend))
    throw std::invalid_argument("AeadContext: backend " + std::string(to_string(backend)) +
                                " is not usable on this CPU (needs AES-NI and PCLMULQDQ)");
  if (backend == Backend::kOpenssl && ossl_cipher(algo) == nullptr)
    throw std::invalid_argument("AeadContext: OpenSSL cannot fetch " +
                                std::string(to_string(algo)));

  static_assert(offsetof(AeadContext, imb_key_) == kImbKeyOffset && offsetof(AeadContext, ossl_) < kImbKeyOffset &&
                    (kImbKeyOffset + kImbAreaBytes + 63) / 64 * 64 == sizeof(AeadContext) && kImbKeyOffset % 16 == 0 &&
                    (kImbKeyOffsetAligned == kImbKeyOffset || kImbKeyOffsetAligned % 64 == 0),
                "the per-op fields, then the key area to the end, sharing the first round key's line");
  const size_t klen = key_len(algo);
  std::memcpy(salt_, keymat.data() + klen, kSaltLen);
  if (backend == Backend::kIpsecMb) {
    IMB_MGR* mgr = imb().mgr;
    auto* key = reinterpret_cast<gcm_key_data*>(imb_key_ + g_key_shift);
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
    if (g_large_min != UINT32_MAX) {
      // Both paths' key blocks, each expanded in full and cut to what its
      // code reads (the temporary is wiped).
      alignas(64) gcm_key_data tmp;
      if (algo == AeadAlgo::kAes128Gcm) IMB_AES128_GCM_PRE(mgr, keymat.data(), &tmp);
      else IMB_AES256_GCM_PRE(mgr, keymat.data(), &tmp);
      std::memcpy(imb_key_ + g_key_shift, &tmp, kSmallKeyBytes);
      if (algo == AeadAlgo::kAes128Gcm) aes_gcm_pre_128_vaes_avx2(keymat.data(), &tmp);
      else aes_gcm_pre_256_vaes_avx2(keymat.data(), &tmp);
      std::memcpy(imb_key_ + kLargeKeyOffset, &tmp, kLargeKeyBytes);
      OPENSSL_cleanse(&tmp, sizeof(tmp));
    } else
#endif
    if (algo == AeadAlgo::kAes128Gcm) IMB_AES128_GCM_PRE(mgr, keymat.data(), key);
    else IMB_AES256_GCM_PRE(mgr, keymat.data(), key);
    // PRE cannot fail on valid pointers; the manager's errno is not read
    // here because the manager is shared by every thread.
    if (g_gcm_enc[algo_index(algo)] == nullptr || g_gcm_dec[algo_index(algo)] == nullptr) {
      wipe();
      throw std::invalid_argument("AeadContext: IPsec-MB has no AES-GCM functions for this CPU");
    }
  } else {
    ossl_ = new OsslState{};
    std::memcpy(ossl_->raw_key, keymat.data(), klen);
    for (auto& sl : ossl_->slot) {
      sl.ctx = EVP_CIPHER_CTX_new();
      if (sl.ctx == nullptr ||
          EVP_CipherInit_ex(sl.ctx, ossl_cipher(algo), nullptr, ossl_->raw_key, nullptr, 1) != 1) {
        wipe();
        throw std::invalid_argument("AeadContext: OpenSSL context setup failed for " +
                                    std::string(to_string(algo)));
      }
    }
  }
}

void AeadContext::wipe() noexcept {
  if (ossl_ != nullptr) {
    for (auto& sl : ossl_->slot) EVP_CIPHER_CTX_free(sl.ctx);  // cleanses the key schedule
    OPENSSL_cleanse(ossl_, sizeof(OsslState));
    delete ossl_;
    ossl_ = nullptr;
  }
  OPENSSL_cleanse(imb_key_, sizeof(imb_key_));
  OPENSSL_cleanse(salt_, sizeof(salt_));
}

AeadContext::~AeadContext() { wipe(); }

namespace {

inline constexpr size_t kNonceBuf = 16;

// The 12-byte GCM nonce, salt || IV, in a 16-byte buffer written with ONE
// 16-byte store. IPsec-MB loads the nonce right after it is built; a load
// that spans two smaller stores still in the store buffer cannot be
// forwarded and waits for them to retire: built with two memcpys it cost 36
// cycles per encrypt and 8 per decrypt at 64 B (bench/crypto/gcm_floor
// --nonce split against --nonce single).
inline void make_nonce(uint8_t nonce[kNonceBuf], const uint8_t salt[kSaltLen], const uint8_t* iv) {
  uint32_t s;
  std::memcpy(&s, salt, kSaltLen);
  const __m128i v = _mm_or_si128(_mm_slli_si128(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(iv)), kSaltLen),
                                 _mm_cvtsi32_si128(static_cast<int>(s)));
  _mm_store_si128(reinterpret_cast<__m128i*>(nonce), v);
}

// One AEAD pass on an EVP context that already holds the key (key == NULL)
// or is keyed here. Returns false on any EVP failure or (decrypt) tag mismatch.
// `enc`: 1 encrypt (writes icv), 0 decrypt (checks icv, in constant time
// inside OpenSSL).
bool ossl_run(EVP_CIPHER_CTX* c, const uint8_t* key, const uint8_t nonce[12], const AeadOp& op,
              int enc) {
  bool ok = EVP_CipherInit_ex(c, nullptr, nullptr, key, nonce, enc) == 1;
  int outl = 0;
  if (ok && op.aad_len > 0)
    ok = EVP_CipherUpdate(c, nullptr, &outl, op.aad, static_cast<int>(op.aad_len)) == 1;
  if (ok && op.len > 0)
    ok = EVP_CipherUpdate(c, op.dst, &outl, op.src, static_cast<int>(op.len)) == 1;
  if (ok && enc == 0)
    ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kIcvLen, op.icv) == 1;
  uint8_t tail[16];
  if (ok) ok = EVP_CipherFinal_ex(c, tail, &outl) == 1;
  if (ok && enc == 1)
    ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kIcvLen, op.icv) == 1;
  return ok;
}

}  // namespace

// Out of line, so that encrypt() and decrypt() stay small enough to be
// inlined into the burst loops below (the IPsec-MB path is the hot one).
__attribute__((noinline)) bool AeadContext::ossl_aead(const uint8_t nonce[12], const AeadOp& op, int enc) const {
  for (auto& sl : ossl_->slot) {
    if (sl.busy.load(std::memory_order_relaxed) == 0 &&
        sl.busy.exchange(1, std::memory_order_acquire) == 0) {
      const bool ok = ossl_run(sl.ctx, nullptr, nonce, op, enc);
      sl.busy.store(0, std::memory_order_release);
      return ok;
    }
  }
  return ossl_aead_unslotted(nonce, op, enc);
}

// Every slot busy (more concurrent users than slots): the thread's own
// context, keyed for this op and then re-keyed with zeros so that no SA's
// schedule outlives its AeadContext in a thread's cache.
bool AeadContext::ossl_aead_unslotted(const uint8_t nonce[12], const AeadOp& op, int enc) const {
  EVP_CIPHER_CTX* c = thread_ctx(algo_);
  if (c == nullptr) return false;
  const bool ok = ossl_run(c, ossl_->raw_key, nonce, op, enc);
  EVP_CipherInit_ex(c, nullptr, nullptr, kZeroKey, nullptr, 1);
  return ok;
}

__attribute__((always_inline)) inline void AeadContext::imb_encrypt(const AeadOp& op) const {
  alignas(16) uint8_t nonce[kNonceBuf];
  make_nonce(nonce, salt_, op.iv);
  gcm_context_data gctx;
  const int a = algo_index(algo_);
  const bool large = kTwoPaths && op.len >= g_large_min;
  const auto* key = reinterpret_cast<const gcm_key_data*>(imb_key_ + (large ? kLargeKeyOffset : g_key_shift));
  (large ? g_gcm_enc_large[a] : g_gcm_enc[a])(key, &gctx, op.dst, op.src, op.len, nonce, op.aad, op.aad_len, op.icv,
                                               kIcvLen);
}

__attribute__((always_inline)) inline bool AeadContext::imb_decrypt(const AeadOp& op) const {
  alignas(16) uint8_t nonce[kNonceBuf];
  make_nonce(nonce, salt_, op.iv);
  gcm_context_data gctx;
  alignas(16) uint8_t tag[kIcvLen];
  const int a = algo_index(algo_);
  const bool large = kTwoPaths && op.len >= g_large_min;
  const auto* key = reinterpret_cast<const gcm_key_data*>(imb_key_ + (large ? kLargeKeyOffset : g_key_shift));
  (large ? g_gcm_dec_large[a] : g_gcm_dec[a])(key, &gctx, op.dst, op.src, op.len, nonce, op.aad, op.aad_len, tag,
                                               kIcvLen);
  return ct_equal16(tag, op.icv);
}

void AeadContext::encrypt(const AeadOp& op) const {
  if (backend_ == Backend::kIpsecMb) {
    imb_encrypt(op);
    return;
  }
  alignas(16) uint8_t nonce[kNonceBuf];
  make_nonce(nonce, salt_, op.iv);
  if (!ossl_aead(nonce, op, 1)) {
    // Never reached in practice (EVP failure, e.g. out of memory on a thread's
    // first op). Emit a tag that does not verify rather than crash.
    std::memset(op.icv, 0, kIcvLen);
    if (op.len > 0) std::memset(op.dst, 0, op.len);
  }
}

bool AeadContext::decrypt(const AeadOp& op) const {
  if (backend_ == Backend::kIpsecMb) return imb_decrypt(op);
  alignas(16) uint8_t nonce[kNonceBuf];
  make_nonce(nonce, salt_, op.iv);
  return ossl_aead(nonce, op, 0);
}

namespace {
inline void prefetch_op(const AeadOp& op) {
  __builtin_prefetch(op.src, 0, 3);
  __builtin_prefetch(op.aad, 0, 3);
  __builtin_prefetch(op.icv, 1, 3);
}
}  // namespace

// With one SA per packet (many tunnels) each op's key state is cold: ~1 KB
// of expanded keys and hash-key powers, 16 lines, that IPsec-MB loads in
// dependent order. Fetching them kKeyAhead ops early overlaps those misses
// with the ops before; a burst on one SA pays one compare per op. The lines
// are found from the context's address alone: reading anything of a cold
// context here would stall on the very lines being fetched.
inline constexpr uint32_t kKeyAhead = 3;

// Only the lines the op will read: the per-op fields and the round keys
// (the context's first 192 bytes for AES-128, 256 for AES-256: 4 lines are
// fetched for both, as the algorithm is in the context), and, of the
// hash-key powers, the ones its length needs (a 64-byte packet's GHASH
// covers 7 blocks: the AAD, 5 of data, the lengths). Where they are depends
// on the code path (HashKeyLayout; offsets below are gcm_key_data's, which
// starts ipsecmb_key_offset() bytes into the context): the VAES code keeps
// H^48 .. H^1 at the end (H^k at 16 * (63 - k), its
// gcm_keys_vaes_avx512.inc), so a 64-byte packet reads 2 of its 12 hash-key
// lines; the AVX2 code keeps H^1 .. H^8 from byte 240; the SSE/AVX code the
// same and their Karatsuba halves from byte 368. Fetching all 16 lines per SA
// spent the miss slots on lines an op never reads.
namespace {
inline constexpr uint32_t kHashKeyEnd = 16 * 63;  // 1.3: one past H^1 (offset of H^k: 16 * (63 - k))
static_assert(offsetof(gcm_key_data, ghash_keys) == kRoundKeyBytes);
static_assert(offsetof(gcm_key_data, ghash_keys.sse_avx.shifted_hkey_k) == kHeadKaratsuba);
#if IMB_VERSION_NUM < 0x20000
static_assert(offsetof(gcm_key_data, ghash_keys) + sizeof(gcm_key_data::ghash_keys.vaes_avx512) == kHashKeyEnd);
static_assert(kHashKeyEnd == AeadContext::kImbKeyBytes);
#else
static_assert(sizeof(gcm_key_data::ghash_keys.avx2_avx512) == 32 * 8 &&
              sizeof(gcm_key_data::ghash_keys.vaes_avx512) == 32 * 32);
#endif
inline void prefetch_lines(const char* p, uint32_t from, uint32_t to) {
  for (uint32_t off = from & ~63u; off < to; off += 64) __builtin_prefetch(p + off, 0, 3);
}
}  // namespace

// Out of line: with one SA per burst it never runs past the first op, and
// the burst loops stay small (called for every op it cost ~14 instructions
// per packet, a call to return at once).
__attribute__((noinline)) void AeadContext::prefetch_key(const AeadOp& op) {
  const auto* p = reinterpret_cast<const char*>(op.ctx);
  // [from, to) of gcm_key_data
  // GHASH blocks: the AAD, the data, the length block
  const uint32_t blocks = (op.len + 15) / 16 + 2;
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
  if (op.len >= g_large_min) {  // the VAES AVX2 key block: 16 powers, then their reductions
    const uint32_t powers = std::min<uint32_t>(16, blocks);
    constexpr uint32_t at = kVaesAvx2KeyAt;
    prefetch_lines(p, 0, 64);  // the per-op fields
    prefetch_lines(p, at, at + kRoundKeyBytes + 16 * powers);
    prefetch_lines(p, at + kRoundKeyBytes + 16 * 16, at + kRoundKeyBytes + 16 * (16 + powers));
    return;
  }
#endif
  const uint32_t at = kImbKeyOffset + g_key_shift;  // the library's pick's key data
  auto key_lines = [p, at](uint32_t from, uint32_t to) { prefetch_lines(p, at + from, at + to); };
  prefetch_lines(p, 0, at + kRoundKeyBytes);  // the per-op fields, the round keys
  if (g_hash_layout == HashKeyLayout::kPairs8) {
    key_lines(kRoundKeyBytes, kRoundKeyBytes + 32 * std::min<uint32_t>(8, blocks));
    return;
  }
  if (g_hash_layout == HashKeyLayout::kSplit32) {
    const uint32_t powers = std::min<uint32_t>(32, (blocks + 7) & ~7u);
    key_lines(kRoundKeyBytes, kRoundKeyBytes + 16 * powers);
    key_lines(kRoundKeyBytes + 16 * 32, kRoundKeyBytes + 16 * (32 + powers));
    return;
  }
  if (g_hash_layout == HashKeyLayout::kTail48) {  // powers in groups of 8, up to 48; H^1 in the last line
    const uint32_t powers = std::min<uint32_t>(48, (blocks + 7) & ~7u);
    key_lines(kHashKeyEnd - 16 * powers, kHashKeyEnd);
    return;
  }
  const uint32_t powers = std::min<uint32_t>(8, blocks);
  key_lines(kRoundKeyBytes, kRoundKeyBytes + 16 * powers);
  if (g_hash_layout == HashKeyLayout::kHead8Karatsuba) key_lines(kHeadKaratsuba, kHeadKaratsuba + 16 * powers);
}

// No prefetch of each op's data here: espgw's prepare pass has just written
// every packet's headers and trailer, so they are in L1 (prefetching them
// again cost ~3 cycles per packet at 64 B). Decryption reads ciphertext no
// one has touched since the NIC wrote it: prefetched one op ahead.
// The context of the last op whose key lines were fetched stays in a
// register: per op, one load and one compare (a burst on one SA).
void encrypt_burst(const AeadOp* ops, uint32_t n) {
  for (uint32_t j = 0; j < kKeyAhead; ++j) AeadContext::prefetch_ahead(ops, n, j);
  const AeadContext* ahead = n >= kKeyAhead ? ops[kKeyAhead - 1].ctx : nullptr;
  for (uint32_t i = 0; i < n; ++i) {
    if (i + kKeyAhead < n && ops[i + kKeyAhead].ctx != ahead) {
      ahead = ops[i + kKeyAhead].ctx;
      AeadContext::prefetch_key(ops[i + kKeyAhead]);
    }
    const AeadContext& c = *ops[i].ctx;
    if (c.backend_ == Backend::kIpsecMb) c.imb_encrypt(ops[i]);  // in line: no call per op
    else c.encrypt(ops[i]);
  }
}

uint32_t decrypt_burst(const AeadOp* ops, uint32_t n, uint8_t* ok) {
  uint32_t good = 0;
  for (uint32_t j = 0; j < kKeyAhead; ++j) AeadContext::prefetch_ahead(ops, n, j);
  const AeadContext* ahead = n >= kKeyAhead ? ops[kKeyAhead - 1].ctx : nullptr;
  for (uint32_t i = 0; i < n; ++i) {
    if (i + 1 < n) prefetch_op(ops[i + 1]);
    if (i + kKeyAhead < n && ops[i + kKeyAhead].ctx != ahead) {
      ahead = ops[i + kKeyAhead].ctx;
      AeadContext::prefetch_key(ops[i + kKeyAhead]);
    }
    const AeadContext& c = *ops[i].ctx;
    const bool v = c.backend_ == Backend::kIpsecMb ? c.imb_decrypt(ops[i]) : c.decrypt(ops[i]);
    ok[i] = v ? 1 : 0;
    good += v ? 1u : 0u;
  }
  return good;
}

}  // namespace espgw::crypto
