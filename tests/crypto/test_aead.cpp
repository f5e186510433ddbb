// Tests for crypto/aead.h: published GCM test vectors (McGrew & Viega, "The
// Galois/Counter Mode of Operation", test cases 1-4 and 13-16) on both
// backends, IPsec-MB vs OpenSSL differential testing, tamper rejection, burst
// semantics, key-material validation and concurrent use of one context.
#include "crypto/aead.h"
#include "crypto/vaes_avx2_gcm.h"
#include "crypto/state_arena.h"

#include <gtest/gtest.h>
#include <intel-ipsec-mb.h>
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>


namespace espgw::crypto {

// Reaches the OpenSSL backend's fallback path (taken when every pre-keyed
// slot of a context is in use by other threads).
struct AeadTestPeer {
  static bool unslotted(const AeadContext& c, const AeadOp& op, bool enc) {
    uint8_t nonce[12];
    std::memcpy(nonce, c.salt_, kSaltLen);
    std::memcpy(nonce + kSaltLen, op.iv, kIvLen);
    return c.ossl_aead_unslotted(nonce, op, enc ? 1 : 0);
  }
};

namespace {

using Bytes = std::vector<uint8_t>;

Bytes hex(std::string_view s) {
  Bytes out;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = -1;
  for (char c : s) {
    int v = nib(c);
    if (v < 0) continue;  // allow spaces
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<uint8_t>(hi << 4 | v));
      hi = -1;
    }
  }
  return out;
}

std::string to_hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}
std::string to_hex(const Bytes& b) { return to_hex(b.data(), b.size()); }

std::vector<Backend> all_backends() {
  std::vector<Backend> v{Backend::kOpenssl};
  if (backend_available(Backend::kIpsecMb)) v.push_back(Backend::kIpsecMb);
  return v;
}

// ---------------------------------------------------------------------------
// McGrew & Viega GCM spec test cases with a 96-bit IV (the only nonce size
// ESP uses). The 12-byte IV splits as salt (4) || explicit IV (8).
struct Vector {
  int id;
  AeadAlgo algo;
  const char* key;
  const char* pt;
  const char* aad;
  const char* iv;
  const char* ct;
  const char* tag;
};

constexpr const char* kP64 =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
constexpr const char* kP60 =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";
constexpr const char* kA20 = "feedfacedeadbeeffeedfacedeadbeefabaddad2";

const Vector kVectors[] = {
    {1, AeadAlgo::kAes128Gcm, "00000000000000000000000000000000", "", "",
     "000000000000000000000000", "", "58e2fccefa7e3061367f1d57a4e7455a"},
    {2, AeadAlgo::kAes128Gcm, "00000000000000000000000000000000",
     "00000000000000000000000000000000", "", "000000000000000000000000",
     "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"},
    {3, AeadAlgo::kAes128Gcm, "feffe9928665731c6d6a8f9467308308", kP64, "",
     "cafebabefacedbaddecaf888",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4"},
    {4, AeadAlgo::kAes128Gcm, "feffe9928665731c6d6a8f9467308308", kP60, kA20,
     "cafebabefacedbaddecaf888",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
     "5bc94fbc3221a5db94fae95ae7121a47"},
    {13, AeadAlgo::kAes256Gcm, "0000000000000000000000000000000000000000000000000000000000000000",
     "", "", "000000000000000000000000", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {14, AeadAlgo::kAes256Gcm, "0000000000000000000000000000000000000000000000000000000000000000",
     "00000000000000000000000000000000", "", "000000000000000000000000",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {15, AeadAlgo::kAes256Gcm, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     kP64, "", "cafebabefacedbaddecaf888",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {16, AeadAlgo::kAes256Gcm, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     kP60, kA20, "cafebabefacedbaddecaf888",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

std::unique_ptr<AeadContext> make_ctx(AeadAlgo algo, const Bytes& key, const uint8_t* salt,
                                      Backend b) {
  Bytes km = key;
  km.insert(km.end(), salt, salt + kSaltLen);
  return std::make_unique<AeadContext>(algo, km, b);
}

TEST(AeadVectors, GcmSpecTestCasesBothBackends) {
  ASSERT_TRUE(backend_available(Backend::kIpsecMb))
      << "this CPU lacks AES-NI/PCLMULQDQ; IPsec-MB vectors not exercised";
  for (const Vector& v : kVectors) {
    for (Backend b : all_backends()) {
      SCOPED_TRACE("test case " + std::to_string(v.id) + " backend " +
                   std::string(to_string(b)));
      const Bytes key = hex(v.key), pt = hex(v.pt), aad = hex(v.aad), iv12 = hex(v.iv),
                  ct = hex(v.ct), tag = hex(v.tag);
      ASSERT_EQ(iv12.size(), 12u);
      auto ctx = make_ctx(v.algo, key, iv12.data(), b);
      EXPECT_EQ(ctx->algo(), v.algo);
      EXPECT_EQ(ctx->backend(), b);

      // Encrypt, out of place.
      Bytes out(pt.size() + 1, 0xee), icv(kIcvLen, 0);
      AeadOp op{ctx.get(), iv12.data() + kSaltLen, aad.empty() ? nullptr : aad.data(),
                static_cast<uint32_t>(aad.size()), pt.empty() ? nullptr : pt.data(),
                out.data(), static_cast<uint32_t>(pt.size()), icv.data()};
      ctx->encrypt(op);
      EXPECT_EQ(to_hex(out.data(), pt.size()), to_hex(ct));
      EXPECT_EQ(out.back(), 0xee) << "wrote past the end";
      EXPECT_EQ(to_hex(icv), to_hex(tag));

      // Decrypt in place.
      Bytes buf = ct;
      buf.push_back(0xee);
      Bytes tag_copy = tag;
      AeadOp dop{ctx.get(), iv12.data() + kSaltLen, aad.empty() ? nullptr : aad.data(),
                 static_cast<uint32_t>(aad.size()), buf.data(), buf.data(),
                 static_cast<uint32_t>(ct.size()), tag_copy.data()};
      EXPECT_TRUE(ctx->decrypt(dop));
      EXPECT_EQ(to_hex(buf.data(), ct.size()), to_hex(pt));
      EXPECT_EQ(to_hex(tag_copy), to_hex(tag)) << "decrypt modified the ICV";

      // A wrong tag is rejected.
      Bytes bad_tag = tag;
      bad_tag[15] ^= 0x01;
      buf.assign(ct.begin(), ct.end());
      buf.push_back(0);
      dop.src = dop.dst = buf.data();
      dop.icv = bad_tag.data();
      EXPECT_FALSE(ctx->decrypt(dop));
    }
  }
}

// The OpenSSL fallback path (per-thread context, keyed per op) also matches
// the published vectors, interleaved with the slotted path and other keys.
TEST(AeadVectors, OpensslFallbackPath) {
  for (const Vector& v : kVectors) {
    SCOPED_TRACE("test case " + std::to_string(v.id));
    const Bytes key = hex(v.key), pt = hex(v.pt), aad = hex(v.aad), iv12 = hex(v.iv),
                ct = hex(v.ct), tag = hex(v.tag);
    auto ctx = make_ctx(v.algo, key, iv12.data(), Backend::kOpenssl);
    Bytes other_km(keymat_len(v.algo), 0x42);
    AeadContext other(v.algo, other_km, Backend::kOpenssl);
    for (int round = 0; round < 3; ++round) {
      Bytes out(pt.size()), icv(kIcvLen);
      AeadOp op{ctx.get(), iv12.data() + kSaltLen, aad.data(), static_cast<uint32_t>(aad.size()),
                pt.data(), out.data(), static_cast<uint32_t>(pt.size()), icv.data()};
      ASSERT_TRUE(AeadTestPeer::unslotted(*ctx, op, true));
      EXPECT_EQ(to_hex(out), to_hex(ct));
      EXPECT_EQ(to_hex(icv), to_hex(tag));
      Bytes back(ct.size());
      AeadOp d{ctx.get(), iv12.data() + kSaltLen, aad.data(), static_cast<uint32_t>(aad.size()),
               ct.data(), back.data(), static_cast<uint32_t>(ct.size()), icv.data()};
      EXPECT_TRUE(AeadTestPeer::unslotted(*ctx, d, false));
      EXPECT_EQ(to_hex(back), to_hex(pt));
      EXPECT_TRUE(ctx->decrypt(d));  // slotted path in between
      icv[0] ^= 1;
      EXPECT_FALSE(AeadTestPeer::unslotted(*ctx, d, false));
      // Another key through the same thread-local context.
      uint8_t t2[16];
      AeadOp o2{&other, iv12.data() + kSaltLen, aad.data(), static_cast<uint32_t>(aad.size()),
                pt.data(), out.data(), static_cast<uint32_t>(pt.size()), t2};
      ASSERT_TRUE(AeadTestPeer::unslotted(other, o2, true));
      uint8_t t3[16];
      o2.icv = t3;
      other.encrypt(o2);
      EXPECT_EQ(to_hex(t2, 16), to_hex(t3, 16));
      EXPECT_NE(to_hex(t2, 16), to_hex(tag));
    }
  }
}

// ---------------------------------------------------------------------------
TEST(AeadContext, WrongKeymatLengthThrows) {
  for (Backend b : all_backends()) {
    for (size_t n : {0, 4, 16, 19, 21, 32, 36}) {
      Bytes km(n, 0x11);
      EXPECT_THROW(AeadContext(AeadAlgo::kAes128Gcm, km, b), std::invalid_argument)
          << n << " bytes, " << to_string(b);
    }
    for (size_t n : {0, 20, 32, 35, 37, 40}) {
      Bytes km(n, 0x11);
      EXPECT_THROW(AeadContext(AeadAlgo::kAes256Gcm, km, b), std::invalid_argument)
          << n << " bytes, " << to_string(b);
    }
    Bytes k20(20, 1), k36(36, 1);
    EXPECT_NO_THROW(AeadContext(AeadAlgo::kAes128Gcm, k20, b));
    EXPECT_NO_THROW(AeadContext(AeadAlgo::kAes256Gcm, k36, b));
  }
  try {
    Bytes km(19, 0);
    AeadContext c(AeadAlgo::kAes128Gcm, km, Backend::kOpenssl);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("20"), std::string::npos) << e.what();
  }
}

// Rekey churn (a context made, an older one freed, a small allocation kept,
// as SaDatabase keeps a key fingerprint per SA) must reuse the heap: with
// glibc's memalign every freed context left a chunk too small for the next
// one, ~1.4 KB of heap per SA installed (issue 12's soak).
TEST(AeadContext, ChurnReusesTheHeap) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizer's allocator replaces glibc's heap";
#else
  constexpr int kRounds = 20000;
  std::vector<std::unique_ptr<AeadContext>> live;
  std::vector<std::unique_ptr<std::array<uint8_t, 32>>> kept;
  kept.reserve(kRounds);
  Bytes km(keymat_len(AeadAlgo::kAes128Gcm), 0x5a);
  auto heap = [] { return mallinfo2().arena; };
  for (int i = 0; i < 200; i++) live.push_back(std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, km));
  const size_t before = heap();
  for (int i = 0; i < kRounds; i++) {
    live.push_back(std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, km));
    kept.push_back(std::make_unique<std::array<uint8_t, 32>>());
    live.erase(live.begin());
  }
  const size_t grown = heap() - before;
  // The kept 32-byte blocks (48 B each in glibc's heap) plus 1 MiB of slack.
  EXPECT_LT(grown, kRounds * 48 + (1u << 20)) << "heap grew " << grown << " bytes over " << kRounds << " contexts";
#endif
}

TEST(AeadContext, BestBackendMatchesCpu) {
  const bool has = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
  EXPECT_EQ(best_backend(), has ? Backend::kIpsecMb : Backend::kOpenssl);
  EXPECT_EQ(backend_available(Backend::kIpsecMb), has);
  EXPECT_TRUE(backend_available(Backend::kOpenssl));
  Bytes km(20, 7);
  AeadContext c(AeadAlgo::kAes128Gcm, km);  // default backend
  EXPECT_EQ(c.backend(), best_backend());
  EXPECT_NE(ipsecmb_arch(), "unavailable");
  EXPECT_EQ(to_string(Backend::kIpsecMb), "ipsec-mb");
  EXPECT_EQ(to_string(AeadAlgo::kAes256Gcm), "aes256-gcm");
}

#ifdef ESPGW_HAVE_VAES_AVX2_GCM
// IPsec-MB's view of this CPU (IMB_MGR::features).
uint64_t cpu_features() {
  IMB_MGR* mgr = alloc_mb_mgr(0);
  if (mgr == nullptr) return 0;
  const uint64_t f = mgr->features;
  free_mb_mgr(mgr);
  return f;
}
#endif

// The hash-key range prefetch_ahead fetches from is where IPsec-MB's own
// precompute writes on this CPU: a key expanded over a 0xa5-filled
// gcm_key_data by a separately built manager changes exactly the 16-byte
// blocks of that range (and the round keys before it), nothing after it.
TEST(AeadContext, HashKeyBytesAreWhereIpsecMbWritesThem) {
  if (!backend_available(Backend::kIpsecMb)) GTEST_SKIP() << "no IPsec-MB path on this CPU";
  IMB_MGR* mgr = alloc_mb_mgr(0);
  ASSERT_NE(mgr, nullptr);
  IMB_ARCH arch;
  init_mb_mgr_auto(mgr, &arch);
  alignas(64) gcm_key_data kd;
  std::memset(&kd, 0xa5, sizeof(kd));
  const uint8_t key[32] = {0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae,
                           0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61,
                           0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4};
  IMB_AES256_GCM_PRE(mgr, key, &kd);
  free_mb_mgr(mgr);
  const auto* b = reinterpret_cast<const uint8_t*>(&kd);
  auto changed = [&](size_t off) {
    for (size_t i = 0; i < 16; i++)
      if (b[off + i] != 0xa5) return true;
    return false;
  };
  const ByteRange r = ipsecmb_hash_key_bytes();
  ASSERT_EQ(r.begin, 240u);
  ASSERT_LE(r.end, sizeof(kd));
  for (size_t off = 0; off < sizeof(kd); off += 16)
    EXPECT_EQ(changed(off), off < r.end) << "16 bytes at " << off << ", hash-key range [" << r.begin << ", "
                                         << r.end << "), arch " << ipsecmb_arch();
}

// AeadContext keeps IPsec-MB's key data 16 bytes into a 64-byte-aligned
// block (the per-op fields first), while the library declares gcm_key_data
// 64-byte aligned; with 2.x the AVX-512 path's key data sits 64 bytes in
// (its vmovdqa64 loads fault otherwise). Every GCM code path this CPU can
// run must accept key data at the offset the context gives it (the SSE
// code's legacy memory operands fault below 16-byte alignment) and give the
// published results: GCM spec test cases 4 and 16, both directions, through
// a manager forced onto each path.
TEST(AeadContext, EveryIpsecMbCodePathAcceptsTheContextsKeyOffset) {
  if (!backend_available(Backend::kIpsecMb)) GTEST_SKIP() << "no IPsec-MB path on this CPU";
  static_assert(AeadContext::kImbKeyOffset % 16 == 0);
  struct Path {
    const char* name;
    void (*init)(IMB_MGR*);
    uint64_t needs;
    size_t key_offset;
  };
  constexpr size_t k16 = AeadContext::kImbKeyOffset, k64 = AeadContext::kImbKeyOffsetAligned;
  static_assert(k16 == 16 && (AeadContext::kImbKeyBytes == 1008 ? k64 == 16 : k64 == 64));
  const Path paths[] = {{"sse", init_mb_mgr_sse, IMB_CPUFLAGS_SSE, k16},
#if IMB_VERSION_NUM < 0x20000
                        {"avx", init_mb_mgr_avx, IMB_CPUFLAGS_AVX, k16},
#endif
                        {"avx2", init_mb_mgr_avx2, IMB_CPUFLAGS_AVX2, k16},
                        {"avx512", init_mb_mgr_avx512, IMB_CPUFLAGS_AVX512, k64}};
  int ran = 0;
  for (const Path& path : paths) {
    IMB_MGR* mgr = alloc_mb_mgr(0);
    ASSERT_NE(mgr, nullptr);
    if ((mgr->features & path.needs) != path.needs) {
      free_mb_mgr(mgr);
      continue;
    }
    path.init(mgr);
    ASSERT_EQ(imb_get_errno(mgr), 0) << path.name;
    ran++;
    for (int id : {4, 16}) {
      const Vector& v = *std::find_if(std::begin(kVectors), std::end(kVectors), [&](const Vector& x) { return x.id == id; });
      const Bytes key = hex(v.key), pt = hex(v.pt), aad = hex(v.aad), iv = hex(v.iv);
      alignas(64) uint8_t block[sizeof(AeadContext)];
      std::memset(block, 0, sizeof(block));
      auto* kd = reinterpret_cast<gcm_key_data*>(block + path.key_offset);
      gcm_context_data gctx;
      Bytes ct(pt.size()), back(pt.size());
      uint8_t tag[16], tag2[16];
      if (v.algo == AeadAlgo::kAes128Gcm) {
        IMB_AES128_GCM_PRE(mgr, key.data(), kd);
        IMB_AES128_GCM_ENC(mgr, kd, &gctx, ct.data(), pt.data(), pt.size(), iv.data(), aad.data(), aad.size(), tag, 16);
        IMB_AES128_GCM_DEC(mgr, kd, &gctx, back.data(), ct.data(), ct.size(), iv.data(), aad.data(), aad.size(), tag2, 16);
      } else {
        IMB_AES256_GCM_PRE(mgr, key.data(), kd);
        IMB_AES256_GCM_ENC(mgr, kd, &gctx, ct.data(), pt.data(), pt.size(), iv.data(), aad.data(), aad.size(), tag, 16);
        IMB_AES256_GCM_DEC(mgr, kd, &gctx, back.data(), ct.data(), ct.size(), iv.data(), aad.data(), aad.size(), tag2, 16);
      }
      EXPECT_EQ(to_hex(ct), v.ct) << path.name << ", test case " << id;
      EXPECT_EQ(to_hex(tag, 16), v.tag) << path.name << ", test case " << id;
      EXPECT_EQ(to_hex(tag2, 16), v.tag) << path.name << ", test case " << id;
      EXPECT_EQ(back, pt) << path.name << ", test case " << id;
    }
    free_mb_mgr(mgr);
  }
  EXPECT_GE(ran, 1);
  // The context itself places the library's pick's key data as above.
  const std::string_view arch = ipsecmb_arch();
  EXPECT_EQ(ipsecmb_key_offset(), arch.starts_with("avx512") ? k64 : k16) << arch;
  std::printf("[ note ] key data checked on %d IPsec-MB code path(s); this CPU's pick (%s) at offset %zu\n", ran,
              std::string(arch).c_str(), ipsecmb_key_offset());
}

// IPsec-MB 2.x's VAES AVX2 code, as espgw calls it: its own key block
// kVaesAvx2KeyAt (576) bytes into the context, the published results for GCM spec
// test cases 3, 4, 15 and 16 (AES-128 and AES-256, with and without AAD).
TEST(AeadContext, VaesAvx2PathGivesTheSpecResultsAtItsKeyOffset) {
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
  if (!vaes_avx2_gcm_runs(cpu_features())) GTEST_SKIP() << "this CPU has no VAES AVX2";
  for (int id : {3, 4, 15, 16}) {
    const Vector& v = *std::find_if(std::begin(kVectors), std::end(kVectors), [&](const Vector& x) { return x.id == id; });
    const Bytes key = hex(v.key), pt = hex(v.pt), aad = hex(v.aad), iv = hex(v.iv);
    alignas(64) uint8_t block[sizeof(AeadContext)];
    std::memset(block, 0, sizeof(block));
    auto* kd = reinterpret_cast<gcm_key_data*>(block + AeadContext::kVaesAvx2KeyAt);
    gcm_context_data gctx;
    Bytes ct(pt.size()), back(pt.size());
    uint8_t tag[16], tag2[16];
    const bool a128 = v.algo == AeadAlgo::kAes128Gcm;
    (a128 ? aes_gcm_pre_128_vaes_avx2 : aes_gcm_pre_256_vaes_avx2)(key.data(), kd);
    (a128 ? aes_gcm_enc_128_vaes_avx2 : aes_gcm_enc_256_vaes_avx2)(kd, &gctx, ct.data(), pt.data(), pt.size(),
                                                                   iv.data(), aad.data(), aad.size(), tag, 16);
    (a128 ? aes_gcm_dec_128_vaes_avx2 : aes_gcm_dec_256_vaes_avx2)(kd, &gctx, back.data(), ct.data(), ct.size(),
                                                                   iv.data(), aad.data(), aad.size(), tag2, 16);
    EXPECT_EQ(to_hex(ct), v.ct) << "test case " << id;
    EXPECT_EQ(to_hex(tag, 16), v.tag) << "test case " << id;
    EXPECT_EQ(to_hex(tag2, 16), v.tag) << "test case " << id;
    EXPECT_EQ(back, pt) << "test case " << id;
  }
#else
  GTEST_SKIP() << "built against IPsec-MB " << IMB_VERSION_STR << ": no VAES AVX2 path";
#endif
}

// Which GCM code runs at which length: built against IPsec-MB 2.x on an
// AVX2 CPU with VAES (and neither AVX-512 nor GFNI, with which the library
// picks VAES code itself), ops from ipsecmb_vaes_avx2_min_len() bytes on take the VAES
// AVX2 path; otherwise every op takes the library's pick. Either way every
// length from 0 to 300 (both sides of the switch) and both key sizes give
// OpenSSL's ciphertext and tag, and each side decrypts the other's output.
TEST(AeadContext, BothCodePathsAgreeWithOpensslAroundTheSwitch) {
  if (!backend_available(Backend::kIpsecMb)) GTEST_SKIP() << "no IPsec-MB path on this CPU";
  const char* env = std::getenv("ESPGW_GCM_VAES_AVX2");
  // (With GFNI the library picks its VAES AVX2 code itself: one path.)
#ifdef ESPGW_HAVE_VAES_AVX2_GCM
  const uint64_t f = cpu_features();
  const bool two = std::string_view(ipsecmb_arch()).starts_with("avx2") && vaes_avx2_gcm_runs(f) &&
                   !(f & IMB_FEATURE_GFNI) && !(env != nullptr && std::string_view(env) == "0");
#else
  const bool two = false;
  (void)env;
#endif
  const uint32_t from = ipsecmb_vaes_avx2_min_len();
  EXPECT_EQ(from != UINT32_MAX, two) << "arch " << ipsecmb_arch();
  EXPECT_EQ(std::string_view(ipsecmb_arch()).ends_with("+vaes-avx2"), two);
  if (two) {
    EXPECT_TRUE(from > 16 && from < 300) << from;
  }
  std::mt19937 g(4106);
  auto fill = [&g](uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = static_cast<uint8_t>(g());
  };
  for (AeadAlgo algo : {AeadAlgo::kAes128Gcm, AeadAlgo::kAes256Gcm}) {
    Bytes km(keymat_len(algo));
    fill(km.data(), km.size());
    AeadContext mb(algo, km, Backend::kIpsecMb);
    AeadContext os(algo, km, Backend::kOpenssl);
    for (uint32_t len = 0; len <= 300; len++) {
      SCOPED_TRACE(std::string(to_string(algo)) + " len " + std::to_string(len));
      uint8_t iv[kIvLen], aad[8];
      fill(iv, sizeof iv);
      fill(aad, sizeof aad);
      Bytes pt(len + 1), ct_mb(len + 1), ct_os(len + 1), back(len + 1);
      fill(pt.data(), len);
      uint8_t tag_mb[kIcvLen], tag_os[kIcvLen];
      mb.encrypt(AeadOp{&mb, iv, aad, 8, pt.data(), ct_mb.data(), len, tag_mb});
      os.encrypt(AeadOp{&os, iv, aad, 8, pt.data(), ct_os.data(), len, tag_os});
      ASSERT_EQ(0, std::memcmp(ct_mb.data(), ct_os.data(), len));
      ASSERT_EQ(to_hex(tag_mb, kIcvLen), to_hex(tag_os, kIcvLen));
      ASSERT_TRUE(mb.decrypt(AeadOp{&mb, iv, aad, 8, ct_os.data(), back.data(), len, tag_os}));
      ASSERT_EQ(0, std::memcmp(back.data(), pt.data(), len));
      ASSERT_TRUE(os.decrypt(AeadOp{&os, iv, aad, 8, ct_mb.data(), back.data(), len, tag_mb}));
      tag_mb[len % kIcvLen] ^= 1;
      ASSERT_FALSE(mb.decrypt(AeadOp{&mb, iv, aad, 8, ct_os.data(), back.data(), len, tag_mb}));
    }
  }
}

// ---------------------------------------------------------------------------
// Differential testing: IPsec-MB vs OpenSSL over random inputs.
struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  uint64_t operator()() { return g(); }
  uint64_t below(uint64_t n) { return g() % n; }
  void fill(uint8_t* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t v = g();
      std::memcpy(p + i, &v, 8);
    }
    if (i < n) {
      uint64_t v = g();
      std::memcpy(p + i, &v, n - i);
    }
  }
};

uint64_t test_seed() {
  if (const char* s = std::getenv("ESPGW_CRYPTO_SEED")) return std::strtoull(s, nullptr, 0);
  return std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
}

void run_differential(uint64_t seed, int cases, uint32_t max_len, bool any_aad_len) {
  ASSERT_TRUE(backend_available(Backend::kIpsecMb));
  SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with ESPGW_CRYPTO_SEED=" +
               std::to_string(seed) + ")");
  Rng rng(seed);
  // Buffers with slack so that payloads start at random (unaligned) offsets.
  Bytes pt(max_len + 64), ct_mb(max_len + 64), ct_os(max_len + 64), back(max_len + 64);
  for (int c = 0; c < cases; ++c) {
    const AeadAlgo algo = rng.below(2) ? AeadAlgo::kAes256Gcm : AeadAlgo::kAes128Gcm;
    Bytes km(keymat_len(algo));
    rng.fill(km.data(), km.size());
    uint8_t iv[kIvLen];
    rng.fill(iv, sizeof iv);
    const uint32_t aad_len =
        any_aad_len ? static_cast<uint32_t>(rng.below(65)) : (rng.below(2) ? 12u : 8u);
    Bytes aad(aad_len + 1);
    rng.fill(aad.data(), aad.size());
    const uint32_t len = static_cast<uint32_t>(rng.below(max_len + 1));
    const size_t off = rng.below(64);
    rng.fill(pt.data() + off, len);

    SCOPED_TRACE("case " + std::to_string(c) + " " + std::string(to_string(algo)) + " len " +
                 std::to_string(len) + " aad " + std::to_string(aad_len) + " offset " +
                 std::to_string(off));
    AeadContext mb(algo, km, Backend::kIpsecMb);
    AeadContext os(algo, km, Backend::kOpenssl);

    uint8_t tag_mb[kIcvLen], tag_os[kIcvLen];
    AeadOp e{&mb, iv, aad.data(), aad_len, pt.data() + off, ct_mb.data() + off, len, tag_mb};
    mb.encrypt(e);
    e.ctx = &os;
    e.dst = ct_os.data() + off;
    e.icv = tag_os;
    os.encrypt(e);
    ASSERT_EQ(0, std::memcmp(ct_mb.data() + off, ct_os.data() + off, len)) << "ciphertext differs";
    ASSERT_EQ(to_hex(tag_mb, kIcvLen), to_hex(tag_os, kIcvLen)) << "tag differs";
    // A keystream byte is zero with probability 1/256: only runs of 8 bytes or
    // more (2^-64) can be required to differ without the test being flaky.
    if (len >= 8) {
      ASSERT_NE(0, std::memcmp(ct_mb.data() + off, pt.data() + off, std::min<uint32_t>(len, 16)))
          << "ciphertext equals plaintext";
    }

    // Each backend decrypts the other's output (out of place).
    AeadOp d{&os, iv, aad.data(), aad_len, ct_mb.data() + off, back.data() + off, len, tag_mb};
    ASSERT_TRUE(os.decrypt(d));
    ASSERT_EQ(0, std::memcmp(back.data() + off, pt.data() + off, len));
    std::memset(back.data() + off, 0, len);
    d = AeadOp{&mb, iv, aad.data(), aad_len, ct_os.data() + off, back.data() + off, len, tag_os};
    ASSERT_TRUE(mb.decrypt(d));
    ASSERT_EQ(0, std::memcmp(back.data() + off, pt.data() + off, len));

    // Flip one random bit in the ciphertext, the tag or the AAD: both reject.
    uint64_t where = rng.below(3);
    if (where == 0 && len == 0) where = 1;
    if (where == 2 && aad_len == 0) where = 1;
    uint8_t tag_t[kIcvLen];
    std::memcpy(tag_t, tag_mb, kIcvLen);
    uint8_t* flip_at = nullptr;
    uint8_t mask = static_cast<uint8_t>(1u << rng.below(8));
    if (where == 0) flip_at = ct_mb.data() + off + rng.below(len);
    if (where == 1) flip_at = tag_t + rng.below(kIcvLen);
    if (where == 2) flip_at = aad.data() + rng.below(aad_len);
    *flip_at ^= mask;
    SCOPED_TRACE(std::string("flipped bit in ") +
                 (where == 0 ? "ciphertext" : where == 1 ? "tag" : "aad"));
    for (const AeadContext* ctx : {&mb, &os}) {
      AeadOp t{ctx, iv, aad.data(), aad_len, ct_mb.data() + off, back.data() + off, len, tag_t};
      ASSERT_FALSE(ctx->decrypt(t)) << to_string(ctx->backend()) << " accepted a forgery";
    }
  }
}

TEST(AeadDifferential, TenThousandRandomCasesIpsecMbVsOpenssl) {
  run_differential(test_seed(), 10000, 9000, false);
}

TEST(AeadDifferential, ArbitraryAadLengths) {
  run_differential(test_seed(), 2000, 300, true);
}

// ---------------------------------------------------------------------------
TEST(AeadOps, InPlaceEqualsOutOfPlace) {
  Rng rng(42);
  for (Backend b : all_backends()) {
    for (AeadAlgo algo : {AeadAlgo::kAes128Gcm, AeadAlgo::kAes256Gcm}) {
      SCOPED_TRACE(std::string(to_string(b)) + " " + std::string(to_string(algo)));
      Bytes km(keymat_len(algo));
      rng.fill(km.data(), km.size());
      AeadContext ctx(algo, km, b);
      for (uint32_t len : {0u, 1u, 15u, 16u, 17u, 64u, 255u, 1400u, 9000u}) {
        Bytes pt(len), oop(len), inplace;
        rng.fill(pt.data(), len);
        inplace = pt;
        uint8_t iv[8], aad[12], t1[16], t2[16];
        rng.fill(iv, 8);
        rng.fill(aad, 12);
        ctx.encrypt({&ctx, iv, aad, 12, pt.data(), oop.data(), len, t1});
        ctx.encrypt({&ctx, iv, aad, 12, inplace.data(), inplace.data(), len, t2});
        EXPECT_EQ(oop, inplace) << len;
        EXPECT_EQ(to_hex(t1, 16), to_hex(t2, 16)) << len;
        EXPECT_TRUE(ctx.decrypt({&ctx, iv, aad, 12, inplace.data(), inplace.data(), len, t2}));
        EXPECT_EQ(inplace, pt) << len;
      }
      // Zero-length payload with null buffers.
      uint8_t iv[8] = {1, 2, 3, 4, 5, 6, 7, 8}, aad[8] = {9}, t[16];
      ctx.encrypt({&ctx, iv, aad, 8, nullptr, nullptr, 0, t});
      EXPECT_TRUE(ctx.decrypt({&ctx, iv, aad, 8, nullptr, nullptr, 0, t}));
      aad[0] ^= 1;
      EXPECT_FALSE(ctx.decrypt({&ctx, iv, aad, 8, nullptr, nullptr, 0, t}));
    }
  }
}

TEST(AeadOps, SaltAndIvBothMatter) {
  Bytes km(20, 0x5a);
  for (Backend b : all_backends()) {
    AeadContext a(AeadAlgo::kAes128Gcm, km, b);
    Bytes km2 = km;
    km2[19] ^= 1;  // salt differs
    AeadContext c(AeadAlgo::kAes128Gcm, km2, b);
    uint8_t iv[8] = {}, iv2[8] = {1}, aad[8] = {}, pt[32] = {}, o1[32], o2[32], o3[32], t1[16],
            t2[16], t3[16];
    a.encrypt({&a, iv, aad, 8, pt, o1, 32, t1});
    c.encrypt({&c, iv, aad, 8, pt, o2, 32, t2});
    a.encrypt({&a, iv2, aad, 8, pt, o3, 32, t3});
    EXPECT_NE(0, std::memcmp(o1, o2, 32));
    EXPECT_NE(0, std::memcmp(o1, o3, 32));
    EXPECT_FALSE(c.decrypt({&c, iv, aad, 8, o1, o2, 32, t1}));
  }
}

// ---------------------------------------------------------------------------
TEST(AeadBurst, MixedContextsAndPerOpFlags) {
  Rng rng(7);
  std::vector<std::unique_ptr<AeadContext>> ctxs;
  std::vector<Bytes> kms;
  for (AeadAlgo algo : {AeadAlgo::kAes128Gcm, AeadAlgo::kAes256Gcm}) {
    for (Backend b : all_backends()) {
      for (int k = 0; k < 2; ++k) {
        Bytes km(keymat_len(algo));
        rng.fill(km.data(), km.size());
        ctxs.push_back(std::make_unique<AeadContext>(algo, km, b));
        kms.push_back(km);
      }
    }
  }
  ASSERT_GE(ctxs.size(), 4u);
  constexpr uint32_t n = kMaxBurst;
  struct Pkt {
    Bytes pt, buf;
    uint8_t iv[8], aad[12], icv[16];
    uint32_t aad_len;
  };
  std::vector<Pkt> pk(n);
  std::vector<AeadOp> ops(n);
  for (uint32_t i = 0; i < n; ++i) {
    Pkt& p = pk[i];
    uint32_t len = static_cast<uint32_t>(rng.below(1500));
    p.pt.resize(len);
    rng.fill(p.pt.data(), len);
    p.buf = p.pt;
    rng.fill(p.iv, 8);
    rng.fill(p.aad, 12);
    p.aad_len = (i % 3 == 0) ? 12 : 8;
    ops[i] = {ctxs[i % ctxs.size()].get(), p.iv, p.aad, p.aad_len, p.buf.data(), p.buf.data(),
              len, p.icv};
  }
  encrypt_burst(ops.data(), n);

  // Each op of the burst equals a single encrypt through an independent
  // context with the same key (and the other backend where there is one).
  for (uint32_t i = 0; i < n; ++i) {
    const AeadContext* c = ops[i].ctx;
    const size_t ci = i % ctxs.size();
    Backend other = c->backend() == Backend::kOpenssl && backend_available(Backend::kIpsecMb)
                        ? Backend::kIpsecMb
                        : Backend::kOpenssl;
    AeadContext ref(c->algo(), kms[ci], other);
    Bytes out(pk[i].pt.size());
    uint8_t tag[16];
    ref.encrypt({&ref, pk[i].iv, pk[i].aad, pk[i].aad_len, pk[i].pt.data(), out.data(),
                 static_cast<uint32_t>(out.size()), tag});
    EXPECT_EQ(out, pk[i].buf) << "op " << i;
    EXPECT_EQ(to_hex(tag, 16), to_hex(pk[i].icv, 16)) << "op " << i;
  }

  // Corrupt a pattern of ops in different ways.
  std::vector<uint8_t> expect(n, 1);
  for (uint32_t i = 0; i < n; ++i) {
    switch (i % 5) {
      case 1: pk[i].icv[rng.below(16)] ^= 0x80; expect[i] = 0; break;
      case 3:
        if (!pk[i].buf.empty()) {
          pk[i].buf[rng.below(pk[i].buf.size())] ^= 0x01;
        } else {
          pk[i].aad[0] ^= 1;
        }
        expect[i] = 0;
        break;
      case 4: if (i % 2 == 0) { pk[i].aad[pk[i].aad_len - 1] ^= 0x10; expect[i] = 0; } break;
      default: break;
    }
  }
  std::vector<uint8_t> ok(n, 0xcc);
  const uint32_t good = decrypt_burst(ops.data(), n, ok.data());
  uint32_t want_good = 0;
  for (uint32_t i = 0; i < n; ++i) {
    EXPECT_EQ(ok[i], expect[i]) << "op " << i << " ctx " << to_string(ops[i].ctx->backend());
    want_good += expect[i];
    if (expect[i]) {
      EXPECT_EQ(pk[i].buf, pk[i].pt) << "op " << i << " not restored";
    }
  }
  EXPECT_EQ(good, want_good);
  EXPECT_GT(want_good, 0u);
  EXPECT_LT(want_good, n);

  // Empty burst.
  EXPECT_EQ(decrypt_burst(ops.data(), 0, ok.data()), 0u);
  encrypt_burst(ops.data(), 0);
}

// One context used by several threads at once (const calls are thread-safe),
// for each backend; results must equal the single-threaded reference.
TEST(AeadConcurrency, SharedContextManyThreads) {
  for (Backend b : all_backends()) {
    SCOPED_TRACE(to_string(b));
    Bytes km(36);
    Rng rng(99);
    rng.fill(km.data(), km.size());
    AeadContext shared(AeadAlgo::kAes256Gcm, km, b);
    AeadContext other(AeadAlgo::kAes128Gcm, Bytes(20, 3), b);  // interleaved per thread
    constexpr int kThreads = 8, kIters = 1500;  // > slots per context
    std::atomic<int> failures{0};
    std::vector<std::thread> th;
    for (int t = 0; t < kThreads; ++t) {
      th.emplace_back([&, t] {
        Rng r(1000 + t);
        Bytes pt(600), ct(600), back(600);
        for (int i = 0; i < kIters; ++i) {
          uint32_t len = static_cast<uint32_t>(r.below(600));
          r.fill(pt.data(), len);
          uint8_t iv[8], aad[8], tag[16], tag2[16];
          r.fill(iv, 8);
          r.fill(aad, 8);
          const AeadContext& c = (i & 1) ? other : shared;
          c.encrypt({&c, iv, aad, 8, pt.data(), ct.data(), len, tag});
          if (!c.decrypt({&c, iv, aad, 8, ct.data(), back.data(), len, tag}) ||
              std::memcmp(back.data(), pt.data(), len) != 0)
            failures.fetch_add(1);
          // Re-encrypting must be deterministic under concurrency.
          c.encrypt({&c, iv, aad, 8, pt.data(), back.data(), len, tag2});
          if (std::memcmp(back.data(), ct.data(), len) != 0 || std::memcmp(tag, tag2, 16) != 0)
            failures.fetch_add(1);
        }
      });
    }
    for (auto& x : th) x.join();
    EXPECT_EQ(failures.load(), 0);
  }
}


// ---------------------------------------------------------------- StateArena

// Every block is cache-line aligned and usable, in any build (the sanitizer
// builds take the malloc path).
TEST(StateArena, BlocksAreCacheLineAlignedAndDistinct) {
  std::vector<std::pair<void*, size_t>> blocks;
  for (size_t n : {1u, 63u, 64u, 65u, 192u, 1024u, 1152u, 4000u, 70000u}) {
    for (int i = 0; i < 3; i++) {
      void* p = StateArena::allocate(n);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % StateArena::kAlign, 0u) << n;
      std::memset(p, 0xa5 ^ i, n);
      blocks.emplace_back(p, n);
    }
  }
  for (size_t i = 0; i < blocks.size(); i++)
    for (size_t j = i + 1; j < blocks.size(); j++) {
      auto a = reinterpret_cast<uintptr_t>(blocks[i].first), b = reinterpret_cast<uintptr_t>(blocks[j].first);
      EXPECT_TRUE(a + blocks[i].second <= b || b + blocks[j].second <= a) << "blocks " << i << " and " << j << " overlap";
    }
  for (auto [p, n] : blocks) StateArena::deallocate(p, n);
  // Contexts (over-aligned) and OpenSSL state come from it too.
  for (Backend b : all_backends()) {
    auto c = std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, Bytes(20, 1), b);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(c.get()) % 64, 0u);
  }
}

// SA churn (install, rekey, delete) reuses freed blocks of the same size: the
// arena does not grow, and what is freed is no longer counted in use.
TEST(StateArena, ChurnReusesBlocks) {
  if (!StateArena::enabled()) GTEST_SKIP() << "sanitizer build: the arena is plain malloc";
  const Bytes km(keymat_len(AeadAlgo::kAes128Gcm), 0x5a);
  std::vector<std::unique_ptr<AeadContext>> live;
  for (int i = 0; i < 200; i++) live.push_back(std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, km));
  const StateArena::Stats before = StateArena::stats();
  EXPECT_GE(before.in_use, 200 * sizeof(AeadContext));
  for (int i = 0; i < 20000; i++) {
    live.push_back(std::make_unique<AeadContext>(AeadAlgo::kAes128Gcm, km));
    void* other = StateArena::allocate(192);  // another size in between
    StateArena::deallocate(other, 192);
    live.erase(live.begin());
  }
  const StateArena::Stats after = StateArena::stats();
  EXPECT_EQ(after.in_use, before.in_use);
  EXPECT_LE(after.carved, before.carved + sizeof(AeadContext) + 192) << "churn carved new blocks";
  EXPECT_EQ(after.reserved, before.reserved);
  live.clear();
  EXPECT_EQ(StateArena::stats().in_use, before.in_use - 200 * sizeof(AeadContext));
}

// Blocks over kMaxObject come from malloc, not the arena.
TEST(StateArena, LargeObjectsBypassTheArena) {
  if (!StateArena::enabled()) GTEST_SKIP() << "sanitizer build: the arena is plain malloc";
  const StateArena::Stats before = StateArena::stats();
  void* p = StateArena::allocate(StateArena::kMaxObject + 1);
  EXPECT_EQ(StateArena::stats().in_use, before.in_use);
  StateArena::deallocate(p, StateArena::kMaxObject + 1);
}

// Two threads allocating and freeing at once never get the same block.
TEST(StateArena, ConcurrentUseNeverSharesABlock) {
  std::atomic<int> bad{0};
  auto run = [&](uint8_t tag) {
    std::vector<uint8_t*> mine;
    for (int i = 0; i < 20000; i++) {
      auto* p = static_cast<uint8_t*>(StateArena::allocate(256));
      std::memset(p, tag, 256);
      mine.push_back(p);
      if (i % 3 == 2) {
        for (int k = 0; k < 2; k++) {
          uint8_t* q = mine.back();
          mine.pop_back();
          if (q[0] != tag || q[255] != tag) bad.fetch_add(1);
          StateArena::deallocate(q, 256);
        }
      }
    }
    for (uint8_t* q : mine) {
      if (q[0] != tag || q[255] != tag) bad.fetch_add(1);
      StateArena::deallocate(q, 256);
    }
  };
  std::thread a(run, 0x11), b(run, 0x22);
  a.join();
  b.join();
  EXPECT_EQ(bad.load(), 0);
}

// The arena asks the kernel for transparent huge pages (MADV_HUGEPAGE: "hg"
// in the mapping's VmFlags). Whether the kernel grants them depends on its
// THP setting and free memory; the advice is what espgw controls.
TEST(StateArena, ArenaIsAdvisedHugePages) {
  if (!StateArena::enabled()) GTEST_SKIP() << "sanitizer build: the arena is plain malloc";
  void* p = StateArena::allocate(1024);
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_vma = false, found = false, advised = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') != std::string::npos &&
        line.find("VmFlags") == std::string::npos) {
      in_vma = lo <= a && a < hi;
      found = found || in_vma;
      continue;
    }
    if (in_vma && line.rfind("VmFlags:", 0) == 0) advised = line.find(" hg") != std::string::npos;
  }
  StateArena::deallocate(p, 1024);
  ASSERT_TRUE(found) << "no mapping holds the arena block";
  EXPECT_TRUE(advised) << "the arena's mapping lacks MADV_HUGEPAGE";
}

}  // namespace
}  // namespace espgw::crypto
