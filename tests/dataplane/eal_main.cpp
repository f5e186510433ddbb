// gtest main for the tests that need mbufs: EAL without hugepages or PCI.
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include <gtest/gtest.h>

#include <cstdio>

#include "tests/dataplane/esp_test_util.h"

namespace esptest {
namespace {
rte_mempool* g_pool = nullptr;
}
rte_mempool* pool() { return g_pool; }
}  // namespace esptest

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  char a0[] = "espgw-test", a1[] = "--no-huge", a2[] = "-m", a3[] = "512", a4[] = "--no-pci",
       a5[] = "--no-shconf", a6[] = "--log-level=error", a7[] = "-l", a8[] = "0";
  char* eal_argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, nullptr};
  if (rte_eal_init(9, eal_argv) < 0) {
    std::fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  // 10 KB data room (+ headroom) so that 9000-byte cases fit in one segment.
  esptest::g_pool = rte_pktmbuf_pool_create("test_pool", 8191, 0, 0,
                                            10240 + RTE_PKTMBUF_HEADROOM, SOCKET_ID_ANY);
  if (!esptest::g_pool) {
    std::fprintf(stderr, "mempool: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  rte_mempool_free(esptest::g_pool);
  rte_eal_cleanup();
  return rc;
}
