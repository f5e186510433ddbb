// AES-GCM AEAD for ESP (RFC 4106): per-SA key contexts and burst calls.
//
// Keying: key material = AES key || 4-byte salt (20 or 36 bytes). The
// 12-byte GCM nonce is salt || 8-byte explicit IV; the ICV is 16 bytes; the
// AAD is SPI || seq (8 bytes) or SPI || seq-high || seq-low (12 bytes, ESN).
//
// The key schedule runs once, when the context is built (control side). The
// burst calls are the hot path: no allocation, no exceptions, no locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

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

class AeadContext;

// One AEAD operation over contiguous regions of one packet. In place when
// src == dst (the usual case for ESP on an mbuf).
struct AeadOp {
  const AeadContext* ctx;
  const uint8_t* iv;   // 8-byte explicit IV
  const uint8_t* aad;  // aad_len bytes
  uint32_t aad_len;    // 8, or 12 with ESN (any length <= 16 is accepted)
  const uint8_t* src;
  uint8_t* dst;
  uint32_t len;        // bytes of plaintext/ciphertext, may be 0
  uint8_t* icv;        // 16 bytes: written by encrypt, checked by decrypt
};

// Per-SA, per-direction key state. Built and destroyed by the control thread;
// read concurrently by any number of workers (const calls are thread-safe).
// Key material (and the expanded schedule) is wiped on destruction.
class AeadContext {
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

  // Opaque backend state, aligned for IPsec-MB's expanded keys.
  struct State;

 private:
  AeadAlgo algo_;
  Backend backend_;
  uint8_t salt_[kSaltLen];
  State* state_;  // owned
};

// Bursts of up to kMaxBurst ops; each op carries its own context, so one
// burst may mix SAs and backends. decrypt_burst writes ok[i] = 1 when the ICV
// of op i verified, 0 otherwise, and returns the number that verified.
void encrypt_burst(const AeadOp* ops, uint32_t n);
uint32_t decrypt_burst(const AeadOp* ops, uint32_t n, uint8_t* ok);

}  // namespace espgw::crypto
