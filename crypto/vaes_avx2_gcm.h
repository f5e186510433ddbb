// IPsec-MB 2.x's AES-GCM for AVX2 CPUs with VAES and VPCLMULQDQ: exported
// by the library but not declared in its header, and picked by its own
// dispatch only on CPUs that also have GFNI (crypto/aead.cpp calls it
// itself below that). Same signatures as the header's aes_gcm_pre_t and
// aes_gcm_enc_dec_t. Include after <intel-ipsec-mb.h>; declares nothing
// when built against IPsec-MB 1.x, which has no such code.
#pragma once

#include <intel-ipsec-mb.h>

#if defined(IMB_VERSION_NUM) && IMB_VERSION_NUM >= 0x20000 && defined(__x86_64__)
#define ESPGW_HAVE_VAES_AVX2_GCM 1
extern "C" {
void aes_gcm_pre_128_vaes_avx2(const void* key, gcm_key_data* key_data);
void aes_gcm_pre_256_vaes_avx2(const void* key, gcm_key_data* key_data);
void aes_gcm_enc_128_vaes_avx2(const gcm_key_data*, gcm_context_data*, uint8_t*, const uint8_t*, uint64_t,
                               const uint8_t*, const uint8_t*, uint64_t, uint8_t*, uint64_t);
void aes_gcm_dec_128_vaes_avx2(const gcm_key_data*, gcm_context_data*, uint8_t*, const uint8_t*, uint64_t,
                               const uint8_t*, const uint8_t*, uint64_t, uint8_t*, uint64_t);
void aes_gcm_enc_256_vaes_avx2(const gcm_key_data*, gcm_context_data*, uint8_t*, const uint8_t*, uint64_t,
                               const uint8_t*, const uint8_t*, uint64_t, uint8_t*, uint64_t);
void aes_gcm_dec_256_vaes_avx2(const gcm_key_data*, gcm_context_data*, uint8_t*, const uint8_t*, uint64_t,
                               const uint8_t*, const uint8_t*, uint64_t, uint8_t*, uint64_t);
}
// Whether a CPU with IPsec-MB's feature flags `f` (IMB_MGR::features) can
// run that code (clang 14's __builtin_cpu_supports knows no "vaes").
inline bool vaes_avx2_gcm_runs(uint64_t f) {
  constexpr uint64_t kNeed = IMB_CPUFLAGS_AVX2 | IMB_FEATURE_VAES | IMB_FEATURE_VPCLMULQDQ;
  return (f & kNeed) == kNeed;
}
#endif
