// Anti-replay window for inbound ESP SAs: RFC 4303 §3.4.3 and Appendix A
// (extended sequence numbers: A2 window, A3 inference of the high 32 bits).
//
// Split API, so that a forged packet can never move the window:
//   1. check(seq_low, &full)  -> kOk / kReplay / kTooOld, no state change;
//      `full` is the 64-bit sequence number to put into the AAD (ESN) and to
//      pass to update() later.
//   2. decrypt; only if the ICV verified:
//   3. update(full)           -> marks it seen and slides the window. It
//      re-checks and returns kReplay/kTooOld when `full` was accepted in the
//      meantime (two copies of one packet in one burst both pass check()
//      before either is updated): callers drop the packet on a non-kOk result.
//
// Threading: a window is written by exactly one worker. RSS (or the
// dispatcher) keeps all packets of one inbound SA on one queue, hence one
// lcore; nothing here is atomic. Readers on other threads (telemetry) may see
// a torn `top()`; that is only used for display.
//
// Window sizes 32..4096 (any value, powers of two not required). Window 0
// disables anti-replay: every authenticated sequence number is accepted
// (duplicates included) but the highest one seen is still tracked so that
// ESN high bits can be inferred; with no window, the inference picks the
// 64-bit value closest to the highest seen (within ±2^31), which equals the
// Appendix A3 rule with W = 2^31.
//
// Sequence number 0 is never sent (counters start at 1, RFC 4303 §3.3.3) and
// is always kTooOld. Appendix A3 edge: while the high half is still 0 (the
// first 2^32 packets of an ESN SA), a low value that A3 would put into the
// previous (negative) epoch is read as high = 0, i.e. a jump ahead; this is
// the only consistent interpretation and lets a stream start anywhere.
#pragma once

#include <cstdint>
#include <cstring>

namespace espgw::dataplane {

enum class ReplayVerdict : uint8_t { kOk, kReplay, kTooOld };

inline const char* to_string(ReplayVerdict v) {
  switch (v) {
    case ReplayVerdict::kOk: return "ok";
    case ReplayVerdict::kReplay: return "replay";
    case ReplayVerdict::kTooOld: return "too-old";
  }
  return "?";
}

class ReplayWindow {
 public:
  static constexpr uint32_t kMinWindow = 32;
  static constexpr uint32_t kMaxWindow = 4096;
  static constexpr uint32_t kDefaultWindow = 1024;  // AWS VGW default

  ReplayWindow() { reset(kDefaultWindow, false); }
  ReplayWindow(uint32_t window, bool esn) { reset(window, esn); }

  // Returns false (and leaves the window as it was) when `window` is neither
  // 0 nor in [kMinWindow, kMaxWindow]. `initial_top` is the highest sequence
  // number considered already received (0 for a new SA).
  bool reset(uint32_t window, bool esn, uint64_t initial_top = 0) {
    if (window != 0 && (window < kMinWindow || window > kMaxWindow)) return false;
    window_ = window;
    esn_ = esn;
    top_ = esn ? initial_top : (initial_top & 0xffffffffu);
    // Buckets spanned by [top - W + 1, top] never exceed ceil(W/64) + 1;
    // round up to a power of two so that the bucket index is a mask.
    uint32_t need = (window + 63) / 64 + 1;
    uint32_t n = 2;
    while (n < need) n <<= 1;
    mask_ = n - 1;
    std::memset(bits_, 0, sizeof bits_);
    // Mark everything at or below the initial top as seen.
    if (window_ != 0 && top_ != 0) {
      uint64_t lo = top_ >= window_ ? top_ - window_ + 1 : 1;
      for (uint64_t s = lo; s <= top_; ++s) set_bit(s);
    }
    return true;
  }

  uint32_t window() const { return window_; }
  bool esn() const { return esn_; }
  uint64_t top() const { return top_; }  // highest authenticated sequence number

  // No state change. *full_seq_out is always written (0 when no consistent
  // 64-bit value exists).
  ReplayVerdict check(uint32_t seq_low, uint64_t* full_seq_out) const {
    uint64_t full;
    if (!esn_) {
      full = seq_low;
    } else {
      full = infer(seq_low);
    }
    *full_seq_out = full;
    return verdict(full);
  }

  // Call only after the ICV verified. Returns kOk when the number was newly
  // marked; otherwise nothing changes and the packet must be dropped.
  ReplayVerdict update(uint64_t full) {
    ReplayVerdict v = verdict(full);
    if (v != ReplayVerdict::kOk) return v;
    if (window_ == 0) {
      if (full > top_) top_ = full;
      return v;
    }
    if (full > top_) {
      uint64_t old_b = top_ >> 6, new_b = full >> 6;
      uint64_t diff = new_b - old_b;
      if (diff > mask_ + 1u) diff = mask_ + 1u;
      for (uint64_t i = 1; i <= diff; ++i) bits_[(old_b + i) & mask_] = 0;
      top_ = full;
    }
    set_bit(full);
    return v;
  }

 private:
  ReplayVerdict verdict(uint64_t full) const {
    if (full == 0) return ReplayVerdict::kTooOld;
    if (full > top_) return ReplayVerdict::kOk;
    if (window_ == 0) return ReplayVerdict::kOk;
    if (top_ - full >= window_) return ReplayVerdict::kTooOld;
    if (bits_[(full >> 6) & mask_] & (uint64_t{1} << (full & 63))) return ReplayVerdict::kReplay;
    return ReplayVerdict::kOk;
  }

  // RFC 4303 Appendix A3.
  uint64_t infer(uint32_t seql) const {
    uint32_t th = static_cast<uint32_t>(top_ >> 32);
    uint32_t tl = static_cast<uint32_t>(top_);
    uint64_t w = window_ ? window_ : (uint64_t{1} << 31);
    uint32_t bl = static_cast<uint32_t>(tl - (w - 1));  // bottom of window, mod 2^32
    uint64_t seqh;
    if (tl >= w - 1) {  // Case A: window within one epoch
      seqh = seql >= bl ? th : uint64_t{th} + 1;
    } else {            // Case B: window straddles the epoch below
      if (seql >= bl)
        seqh = th == 0 ? 0 : uint64_t{th} - 1;  // see header comment for th == 0
      else
        seqh = th;
    }
    if (seqh > 0xffffffffu) return 0;  // would wrap the 64-bit counter
    return (seqh << 32) | seql;
  }

  void set_bit(uint64_t s) { bits_[(s >> 6) & mask_] |= uint64_t{1} << (s & 63); }

  uint64_t top_;
  uint32_t window_;
  uint32_t mask_;
  bool esn_;
  uint64_t bits_[128];  // 8192 bits: enough buckets for kMaxWindow
};

}  // namespace espgw::dataplane
