// The control thread's wait for an RCU grace period.
#pragma once

#include <rte_rcu_qsbr.h>

namespace espgw::dataplane {

// Returns once every registered worker has reported a quiescent state since
// the call: exactly rte_rcu_qsbr_synchronize(v, RTE_QSBR_THRID_INVALID)
// (start a grace period, wait on it), but through DPDK's inline start/check,
// so the acquire loads that order "workers are done with the old object"
// before "free it" are compiled into espgw. ThreadSanitizer sees them that
// way; inside Debian's uninstrumented librte_rcu it does not, and reported
// every free after a grace period as a race (tests/tsan.supp).
inline void rcu_synchronize(rte_rcu_qsbr* v) {
  const uint64_t token = rte_rcu_qsbr_start(v);
  rte_rcu_qsbr_check(v, token, true);
}

}  // namespace espgw::dataplane
