// AES-GCM AEAD for ESP (RFC 4106): per-SA key contexts and burst calls.
//
// Keying: key material = AES key || 4-byte salt (20 or 36 bytes). The
// 12-byte GCM nonce is salt || 8-byte explicit IV; the ICV is 16 bytes; the
// AAD is SPI || seq (8 bytes) or SPI || seq-high || seq-low (12 bytes, ESN).
// Both backends accept any AAD length (0 included; the GCM spec test cases use
// 20 bytes) and any payload length (0 included).
//
// The key schedule runs once, when the context is built (control side). The
// burst calls are the hot path: no allocation, no exceptions, no locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "crypto/state_arena.h"

namespace espgw::crypto {

enum class AeadAlgo : uint8_t { kAes128Gcm, kAes256Gcm };

// kIpsecMb: Intel IPsec-MB direct GCM functions (AVX-512/VAES where present).
// kOpenssl: OpenSSL 3 EVP; fallback on CPUs without AES-NI, and test oracle.
enum class Backend : uint8_t { kIpsecMb, kOpenssl };

inline constexpr size_t kSaltLen = 4;
inline constexpr size_t kIvLen = 8;
inline constexpr size_t kIcvLen = 16;
inline constexpr size_t kMaxBurst = 32;

constexpr size_t key_len(AeadAlgo a) { return a == AeadAlgo::kAes128Gcm ? 16 : 32; }
constexpr size_t keymat_len(AeadAlgo a) { return key_len(a) + kSaltLen; }

std::string_view to_string(AeadAlgo a);
std::string_view to_string(Backend b);

// The best backend this CPU supports (IPsec-MB when it has AES-NI + PCLMUL).
Backend best_backend();

// Whether `b` can be used on this CPU (OpenSSL: always).
bool backend_available(Backend b);

// The code path IPsec-MB selected at run time ("avx512", "avx2", "avx",
// "sse", "no-aesni", or "unavailable"), with "+vaes-avx2" when espgw sends
// the longer ops to IPsec-MB 2.x's VAES AVX2 GCM code (aead.cpp); for logs
// and benchmark reports.
std::string_view ipsecmb_arch();
// Ops of at least this many bytes run IPsec-MB 2.x's VAES AVX2 GCM code
// (called by espgw, see aead.cpp); UINT32_MAX when every op runs the
// library's own pick. bench/crypto/gcm_floor measures the same choice.
uint32_t ipsecmb_vaes_avx2_min_len();
// The bytes of IPsec-MB's gcm_key_data that hold the hash-key powers on the
// code path it picked on this CPU, [begin, end): where prefetch_ahead looks.
struct ByteRange {
  uint32_t begin, end;
};
ByteRange ipsecmb_hash_key_bytes();
// Where IPsec-MB's key data for the library's pick starts in an
// AeadContext: AeadContext::kImbKeyOffset (16), or kImbKeyOffsetAligned (64)
// when the pick is IPsec-MB 2.x's AVX-512 code.
size_t ipsecmb_key_offset();

class AeadContext;

// One AEAD operation over contiguous regions of one packet. In place when
// src == dst (the usual case for ESP on an mbuf).
struct AeadOp {
  const AeadContext* ctx;
  const uint8_t* iv;   // 8-byte explicit IV
  const uint8_t* aad;  // aad_len bytes
  uint32_t aad_len;    // 8, or 12 with ESN (any length is accepted; aad may be null when 0)
  const uint8_t* src;
  uint8_t* dst;
  uint32_t len;        // bytes of plaintext/ciphertext, may be 0 (src/dst may then be null)
  uint8_t* icv;        // 16 bytes: written by encrypt, checked by decrypt
};

// Per-SA, per-direction key state. Built and destroyed by the control thread;
// read concurrently by any number of workers (const calls are thread-safe).
// Key material (and the expanded schedule) is wiped on destruction.
// IPsec-MB: the expanded key is read-only; per-op GCM state is on the stack.
// OpenSSL: a few pre-keyed EVP contexts per AeadContext are claimed per op
// with a non-blocking atomic exchange; when all are busy the op uses the
// calling thread's own EVP context, keyed for that op (slower, never blocks;
// allocation only on a thread's first such op).
//
// Built against IPsec-MB 1.3 (Debian 12's), one 1,024-byte block, 64-byte
// aligned: the per-op fields (salt, algorithm, backend: 16 bytes) first, then
// IPsec-MB's expanded keys and hash-key powers (1,008 bytes from byte 16).
// Against 2.x, 1,344 bytes: the key data (1,264 bytes) from byte 16 too,
// except on 2.x's AVX-512 code path, whose 64-byte aligned loads
// (vmovdqa64) of the key data need it at byte 64 (kImbKeyOffsetAligned).
// 16-byte alignment is all the other code needs (its key loads are
// unaligned forms or 16-byte SSE operands), and at 16 the hash-key powers
// (240 bytes into the key data) start on a line, so 1.3's VAES/AVX-512
// code's 64-byte loads of them do not straddle two lines (the AVX2 and SSE
// code load them 16 or 32 bytes at a time). The per-op
// fields share the first round key's line, which every GCM op reads: an op
// on a cold context misses only on key lines: for a 64-byte packet 6 on the
// AVX2 and VAES code paths, 8 on SSE/AVX (which also read the Karatsuba
// halves), one fewer on each than when the fields sat in the last line;
// 2.x's AVX2 code (each power beside its reduction) 7, 2 fewer than with
// its key data at byte 64. The
// worker starts loading them from the context's address alone (no pointer
// to follow first).
class alignas(64) AeadContext : public InStateArena {
 public:
  // Throws std::invalid_argument when keymat.size() != keymat_len(algo) or the
  // backend is not usable on this CPU.
  AeadContext(AeadAlgo algo, std::span<const uint8_t> keymat, Backend backend = best_backend());
  ~AeadContext();
  AeadContext(const AeadContext&) = delete;
  AeadContext& operator=(const AeadContext&) = delete;

  AeadAlgo algo() const { return algo_; }
  Backend backend() const { return backend_; }

  // Single operation.
  void encrypt(const AeadOp& op) const;
  bool decrypt(const AeadOp& op) const;  // false: ICV mismatch (dst content undefined)

  // IPsec-MB's gcm_key_data (meson reads its size off the header the build
  // uses, aead.cpp checks it), and where the key area starts in the context
  // (after the per-op fields, sharing their line). IPsec-MB 1.3 (Debian 12):
  // 1,008 bytes from byte 16. 2.x (Debian 13, built with
  // scripts/ipsec-mb.sh): 1,264 bytes, from byte 16 as well, or from byte 64
  // (kImbKeyOffsetAligned) on its AVX-512 code path; on CPUs with VAES but
  // not AVX-512 the area holds two key blocks, one per GCM code path
  // (aead.cpp, "Two code paths").
#ifndef ESPGW_IMB_KEY_BYTES
#define ESPGW_IMB_KEY_BYTES 1008
#endif
  static constexpr size_t kImbKeyBytes = ESPGW_IMB_KEY_BYTES;
  static constexpr size_t kImbKeyOffset = 16;
  static constexpr size_t kImbKeyOffsetAligned = kImbKeyBytes == 1008 ? 16 : 64;
  static constexpr size_t kImbAreaBytes = kImbKeyBytes + (kImbKeyOffsetAligned - kImbKeyOffset);
  // 2.x on AVX2 CPUs with VAES: where the VAES AVX2 code's own key block
  // starts in the context (aead.cpp, "Two code paths"), on a line of its own.
  static constexpr size_t kVaesAvx2KeyAt = 576;

 private:
  // OpenSSL backend state (the raw key and pre-keyed EVP contexts).
  struct OsslState;
  bool ossl_aead(const uint8_t nonce[12], const AeadOp& op, int enc) const;
  bool ossl_aead_unslotted(const uint8_t nonce[12], const AeadOp& op, int enc) const;
  friend struct AeadTestPeer;  // tests only: reaches the OpenSSL fallback path
  void wipe() noexcept;
  // The IPsec-MB calls, inline in the burst loops and in encrypt()/decrypt().
  void imb_encrypt(const AeadOp& op) const;
  bool imb_decrypt(const AeadOp& op) const;
  // Starts loading the key lines of the ops ahead in a burst, once per change
  // of context (see aead.cpp): the check is inline, the line computation (for
  // a new context only) out of line.
  static void prefetch_ahead(const AeadOp* ops, uint32_t n, uint32_t i) {
    if (i < n && (i == 0 || ops[i].ctx != ops[i - 1].ctx)) prefetch_key(ops[i]);
  }
  static void prefetch_key(const AeadOp& op);
  friend void encrypt_burst(const AeadOp* ops, uint32_t n);
  friend uint32_t decrypt_burst(const AeadOp* ops, uint32_t n, uint8_t* ok);

  uint8_t salt_[kSaltLen];
  AeadAlgo algo_;
  Backend backend_;
  OsslState* ossl_ = nullptr;  // owned; OpenSSL backend only
  alignas(kImbKeyOffset) uint8_t imb_key_[kImbAreaBytes];  // IPsec-MB expanded keys + hash-key powers
};
static_assert(sizeof(AeadContext) == (AeadContext::kImbKeyOffset + AeadContext::kImbAreaBytes + 63) / 64 * 64,
              "AeadContext: the per-op fields and the keys, nothing else (1.3: 16 cache lines, 2.x: 21)");

// Bursts of ops (sized for kMaxBurst; any n works, n == 0 included); each op
// carries its own context, so one burst may mix SAs and backends. Ops run in
// order, prefetching the next op's data. decrypt_burst writes ok[i] = 1 when
// the ICV of op i verified, 0 otherwise, and returns the number that verified.
// A failed op's dst holds unauthenticated output: in-place decryption
// destroys the ciphertext either way, so drop the packet.
void encrypt_burst(const AeadOp* ops, uint32_t n);
uint32_t decrypt_burst(const AeadOp* ops, uint32_t n, uint8_t* ok);

}  // namespace espgw::crypto
