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
// Threading: one writer at a time (docs/architecture.md, "replay window").
// RSS hashes outer addresses (and ports), so a spoofed outer source, a NAT
// rebinding or a peer that changes its UDP source port puts packets of one
// inbound SA on two queues, hence two workers. update() is therefore made
// atomic with respect to other updaters by a per-window lock that callers
// hold across one burst's updates of this window (UpdateLock, below); it
// re-checks under the lock, so each sequence number is accepted exactly once
// however the packets were spread. check() takes no lock: it is advisory (a
// packet it lets through is re-checked by update()), and the state it reads
// is relaxed atomics, so it never sees a torn word.
//
// Why a lock held per burst rather than the alternatives:
//  - an owning worker per SA with hand-off rings (VPP's model) moves packets
//    between cores (cache misses, reordering, a new "ring full" drop, owner
//    assignment on the control side) to solve a case that is rare in
//    practice;
//  - a lock-free per-packet check-and-set (DPDK lib/ipsec's SQN_ATOM keeps
//    two window copies under a reader-writer lock; a tagged-bucket CAS
//    would need one locked instruction per packet plus a multi-word slide)
//    costs ~20 cycles per packet, more than the 2% budget;
//  - the lock here is two uncontended atomic operations per SA per burst of
//    up to 32 packets (well under one cycle per packet), and when it is
//    contended the critical section is at most 32 bitmap updates.
// The lock never blocks anything but another worker's update of the same
// window: no I/O, no allocation, no waiting on the control thread.
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

#include <atomic>
#include <cstdint>

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
    const uint64_t top = esn ? initial_top : (initial_top & 0xffffffffu);
    top_.store(top, std::memory_order_relaxed);
    // Buckets spanned by [top - W + 1, top] never exceed ceil(W/64) + 1;
    // round up to a power of two so that the bucket index is a mask.
    uint32_t need = (window + 63) / 64 + 1;
    uint32_t n = 2;
    while (n < need) n <<= 1;
    mask_ = n - 1;
    for (auto& b : bits_) b.store(0, std::memory_order_relaxed);
    // Mark everything at or below the initial top as seen.
    if (window_ != 0 && top != 0) {
      uint64_t lo = top >= window_ ? top - window_ + 1 : 1;
      for (uint64_t s = lo; s <= top; ++s) set_bit(s);
    }
    return true;
  }

  // Copies another window's whole state (control thread, SA rebuild): only
  // while no worker can update either window (after an RCU grace period).
  void copy_state_from(const ReplayWindow& o) {
    window_ = o.window_;
    esn_ = o.esn_;
    mask_ = o.mask_;
    top_.store(o.top_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    for (size_t i = 0; i < sizeof(bits_) / sizeof(bits_[0]); i++)
      bits_[i].store(o.bits_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
  }

  uint32_t window() const { return window_; }
  bool esn() const { return esn_; }
  uint64_t top() const { return top_.load(std::memory_order_relaxed); }  // highest authenticated sequence number

  // The writer lock (see the header comment). Take it around update() calls
  // wherever a second thread may update this window (not with one worker);
  // hold it for a burst's run of packets on this window, not longer.
  void lock() {
    while (lock_.exchange(true, std::memory_order_acquire)) {
      while (lock_.load(std::memory_order_relaxed)) cpu_relax();
    }
  }
  void unlock() { lock_.store(false, std::memory_order_release); }

  // Holds the locks of a sequence of windows one at a time: switch() to the
  // window of each packet in turn (a run of packets on one SA locks once).
  class UpdateLock {
   public:
    UpdateLock() = default;
    // shared == false: this thread is the windows' only writer (one worker),
    // so hold() takes nothing.
    explicit UpdateLock(bool shared) : shared_(shared) {}
    UpdateLock(const UpdateLock&) = delete;
    UpdateLock& operator=(const UpdateLock&) = delete;
    ~UpdateLock() { release(); }
    void hold(ReplayWindow* w) {
      if (!shared_ || w == held_) return;
      release();
      w->lock();
      held_ = w;
    }
    void release() {
      if (held_) held_->unlock();
      held_ = nullptr;
    }

   private:
    ReplayWindow* held_ = nullptr;
    bool shared_ = true;
  };

  // Starts loading the bitmap word check() and update() will read for
  // seq_low (the word of the low 32 bits: right unless ESN moves to another
  // epoch, where a wrong guess only costs the miss it meant to hide).
  void prefetch(uint32_t seq_low) const {
    if (window_ != 0) __builtin_prefetch(&bits_[(seq_low >> 6) & mask_], 1, 3);
  }

  // No state change. *full_seq_out is always written (0 when no consistent
  // 64-bit value exists).
  ReplayVerdict check(uint32_t seq_low, uint64_t* full_seq_out) const {
    const uint64_t top = top_.load(std::memory_order_relaxed);
    const uint64_t full = esn_ ? infer(seq_low, top) : seq_low;
    *full_seq_out = full;
    return verdict(full, top);
  }

  // Call only after the ICV verified, holding lock() when another thread may
  // update this window too. Returns kOk when the number was newly marked;
  // otherwise nothing changes and the packet must be dropped.
  ReplayVerdict update(uint64_t full) {
    const uint64_t top = top_.load(std::memory_order_relaxed);
    ReplayVerdict v = verdict(full, top);
    if (v != ReplayVerdict::kOk) return v;
    if (window_ == 0) {
      if (full > top) top_.store(full, std::memory_order_relaxed);
      return v;
    }
    if (full > top) {
      uint64_t old_b = top >> 6, new_b = full >> 6;
      uint64_t diff = new_b - old_b;
      if (diff > mask_ + 1u) diff = mask_ + 1u;
      for (uint64_t i = 1; i <= diff; ++i) bits_[(old_b + i) & mask_].store(0, std::memory_order_relaxed);
      top_.store(full, std::memory_order_relaxed);
    }
    set_bit(full);
    return v;
  }

 private:
  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  ReplayVerdict verdict(uint64_t full, uint64_t top) const {
    if (full == 0) return ReplayVerdict::kTooOld;
    if (full > top) return ReplayVerdict::kOk;
    if (window_ == 0) return ReplayVerdict::kOk;
    if (top - full >= window_) return ReplayVerdict::kTooOld;
    if (bits_[(full >> 6) & mask_].load(std::memory_order_relaxed) & (uint64_t{1} << (full & 63)))
      return ReplayVerdict::kReplay;
    return ReplayVerdict::kOk;
  }

  // RFC 4303 Appendix A3.
  uint64_t infer(uint32_t seql, uint64_t top) const {
    uint32_t th = static_cast<uint32_t>(top >> 32);
    uint32_t tl = static_cast<uint32_t>(top);
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

  // Writers are serialised by lock_: a relaxed load + store, not an RMW.
  void set_bit(uint64_t s) {
    std::atomic<uint64_t>& b = bits_[(s >> 6) & mask_];
    b.store(b.load(std::memory_order_relaxed) | uint64_t{1} << (s & 63), std::memory_order_relaxed);
  }

  // Relaxed atomics: concurrent check() readers never see a torn value
  // (plain loads and stores on x86-64 and arm64).
  std::atomic<uint64_t> top_;
  uint32_t window_;
  uint32_t mask_;
  bool esn_;
  std::atomic<bool> lock_{false};
  std::atomic<uint64_t> bits_[128];  // 8192 bits: enough buckets for kMaxWindow
};

}  // namespace espgw::dataplane
