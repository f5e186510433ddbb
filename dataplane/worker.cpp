// The poll-mode worker: run to completion, bursts of 32.
//
// Every worker polls its own RX queue (index = worker index) of every port
// and owns the TX queue of the same index on every port, so nothing on the
// hot path is shared but the outbound SA sequence counters.
//
//   protected port  --outbound-->  FIB -> tunnel -> ESP encap -> unprotected port
//   unprotected port --inbound-->  SPI -> replay -> ESP decap -> policy -> protected port
//   IKE / ICMP / ARP for the gateway <-> exception port (net_tap to the host)
//
// The stages live in header-only files included here, one translation unit,
// so the hot path stays inline (the way DPDK's lib/ipsec splits esp_inb.c
// from esp_outb.c): worker_context.h, rx_frame.h, arp.h, host_path.h,
// icmp_errors.h, outbound.h, inbound.h.
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include "dataplane/arp.h"
#include "dataplane/dataplane.h"
#include "dataplane/host_path.h"
#include "dataplane/inbound.h"
#include "dataplane/outbound.h"
#include "dataplane/reassembly.h"
#include "dataplane/worker_context.h"

namespace espgw::dataplane {
namespace {

uint32_t worker_poll_once_impl(Worker& w) {
  Dataplane& dp = *w.dp;
  uint32_t total = 0;
  rte_mbuf* pkts[kBurst];
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    const Port& port = dp.ports[p];
    if (w.index >= port.nb_rx_queues) continue;
    uint16_t n = rte_eth_rx_burst(port.port_id, w.index, pkts, kBurst);
    if (n == 0) continue;
    total += n;
    w.burst_tsc = rte_rdtsc();  // one clock read per burst
    begin_counting(w);
    w.rx_port = p;
    // Received, not generated (kGeneratedPort). Hardware PMDs, net_pcap and
    // net_tap set mbuf->port on every mbuf; net_ring leaves it as the sender
    // had it: stamp the burst when its first or last mbuf shows that.
    if (pkts[0]->port != port.port_id || pkts[n - 1]->port != port.port_id)
      for (uint16_t i = 0; i < n; i++) pkts[i]->port = port.port_id;
    w.c->port[p].rx.packets += n;  // rx bytes: counted by the pipelines, which touch each mbuf anyway
    switch (port.kind) {
      case PortKind::kProtected: outbound(w, p, pkts, n); break;
      case PortKind::kUnprotected: inbound(w, p, pkts, n); break;
      case PortKind::kException: from_host(w, p, pkts, n); break;
    }
  }
  if (w.index == 0) resolve_neighbors(w);
  // Timed-out outer fragments go back to the pool even when no traffic
  // arrives (reassembly.h).
  if ((w.c->loops & (kReasmExpireLoops - 1)) == 0)
    for (uint16_t p = 0; p < dp.nb_ports; p++)
      if (dp.reasm[w.index][p]) {
        w.rx_port = p;
        reasm_expire(w, p);
      }
  flush_tx(w);
  end_counting(w);  // every packet of this iteration has its disposition
  w.c->loops++;
  if (total) w.c->busy_loops++;
  return total;
}

void init_worker(Worker& w, Dataplane* dp, uint16_t index) {
  memset(static_cast<void*>(&w), 0, sizeof(w));
  w.dp = dp;
  w.index = index;
  w.c = dp->counters[index];
  w.tsc_hz = rte_get_tsc_hz();
  w.icmp_tokens = dp->icmp_tokens_per_s;
  w.icmp_last_tsc = rte_rdtsc();
}
}  // namespace


uint32_t worker_poll_once(Dataplane& dp, uint16_t index) {
  // Tests drive one iteration at a time; the TX buffers are flushed inside,
  // so a fresh Worker per call loses nothing.
  Worker w;
  init_worker(w, &dp, index);
  return worker_poll_once_impl(w);
}

void worker_release_fragments(Dataplane& dp, uint16_t index) {
  Worker w;
  init_worker(w, &dp, index);
  for (uint16_t p = 0; p < dp.nb_ports; p++) {
    rte_ip_frag_tbl* tbl = dp.reasm[index][p];
    if (tbl == nullptr) continue;
    w.rx_port = p;
    for (;;) {  // each call moves as many entries as its death row holds
      rte_ip_frag_death_row dr;
      dr.cnt = 0;
      rte_ip_frag_table_del_expired_entries(tbl, &dr, UINT64_MAX);
      if (dr.cnt == 0) break;
      reasm_free_death_row(w, dr, p, DropReason::kReasmTimeout);
    }
  }
  end_counting(w);
}

int worker_main(void* arg) {
  auto* a = static_cast<WorkerArgs*>(arg);
  Dataplane& dp = *a->dp;
  static thread_local Worker w;  // large (TX staging): not on the lcore stack
  init_worker(w, &dp, a->index);
  if (dp.qsbr) {
    rte_rcu_qsbr_thread_register(dp.qsbr, a->index);
    rte_rcu_qsbr_thread_online(dp.qsbr, a->index);
  }
  while (!dp.stop.load(std::memory_order_relaxed)) {
    worker_poll_once_impl(w);
    if (dp.qsbr) rte_rcu_qsbr_quiescent(dp.qsbr, a->index);
  }
  if (dp.qsbr) {
    rte_rcu_qsbr_thread_offline(dp.qsbr, a->index);
    rte_rcu_qsbr_thread_unregister(dp.qsbr, a->index);
  }
  return 0;
}

}  // namespace espgw::dataplane
