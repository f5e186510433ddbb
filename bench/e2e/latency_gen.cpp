// The latency harness's traffic source and sink (scripts/bench_latency.py,
// bench/README.md, "Latency under load"): a separate DPDK process that sends
// frames at a paced rate to the gateway under test and stamps each one with
// the TSC, then takes the gateway's output back and records how long each
// packet spent in flight.
//
// It talks to the gateway over two memif interfaces on one socket, as the
// client: id 0 feeds the gateway's source port, id 1 drains its sink port.
// The same tool and the same interfaces serve espgw, ipsec-secgw and
// testpmd's io forwarding, so the three are compared on equal terms; memif's
// copies and this tool's own loop are in every figure (testpmd shows how
// much).
//
// A packet's send stamp is found again from what comes out, which is either
// encrypted (outbound) or a new packet (inbound):
//   --tag esp-seq   the output is ESP: the k-th packet the gateway accepted
//                   leaves with sequence number k (a fresh SA, one worker,
//                   nothing dropped before the encryption), so the stamp is
//                   that of the k-th packet sent;
//   --tag ip-id     the output is the clear inner packet: frame i of the
//                   pcap carries IPv4 identification i, and frames are sent
//                   round robin, so the stamp is that of the latest send of
//                   frame i.
// Stamps sit in a ring of 4,096 slots, more than the packets that can be in
// flight (two memif rings of 1,024 and the gateway's bursts); a slot is
// cleared when its packet comes back, so a wrong match shows up as an
// unmatched packet rather than a wrong latency.
//
//   latency_gen --socket PATH --pcap FRAMES.pcap --tag esp-seq|ip-id
//               [--rate PPS (0: as fast as the gateway takes them)]
//               [--warmup S] [--duration S] [--burst N] [--queues N] [--hold]
// Output: one JSON object on stdout.
#include <pcap/pcap.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_cycles.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr uint32_t kSlots = 4096;  // stamp ring; a power of two
constexpr uint16_t kMaxBurst = 64;

enum class Tag { kEspSeq, kIpId };

std::vector<std::vector<uint8_t>> read_pcap(const std::string& path) {
  char err[PCAP_ERRBUF_SIZE];
  pcap_t* p = pcap_open_offline(path.c_str(), err);
  if (!p) throw std::runtime_error("cannot read " + path + ": " + err);
  std::vector<std::vector<uint8_t>> frames;
  pcap_pkthdr* h;
  const u_char* data;
  while (pcap_next_ex(p, &h, &data) == 1) frames.emplace_back(data, data + h->caplen);
  pcap_close(p);
  if (frames.empty()) throw std::runtime_error(path + " holds no frames");
  return frames;
}

// Latencies in TSC cycles: 1-cycle buckets would be too many, so buckets of
// `fine` cycles up to `fine * kFine`, then of `coarse` cycles, then one
// overflow bucket (whose members still count in max and mean).
class Histogram {
 public:
  explicit Histogram(uint64_t hz)
      : fine_(std::max<uint64_t>(1, hz / 100'000'000)),     // ~10 ns
        coarse_(std::max<uint64_t>(1, hz / 1'000'000)) {}   // ~1 us
  void add(uint64_t cycles) {
    ++n_;
    sum_ += cycles;
    max_ = std::max(max_, cycles);
    uint64_t b = cycles / fine_;
    if (b < kFine) {
      ++fine_b_[b];
    } else {
      b = (cycles - fine_ * kFine) / coarse_;
      if (b < kCoarse) ++coarse_b_[b]; else ++over_;
    }
  }
  uint64_t count() const { return n_; }
  uint64_t max() const { return max_; }
  double mean() const { return n_ ? double(sum_) / double(n_) : 0; }
  // The upper edge of the bucket holding the q-quantile, in cycles.
  uint64_t quantile(double q) const {
    if (!n_) return 0;
    const uint64_t want = uint64_t(std::ceil(q * double(n_)));
    uint64_t seen = 0;
    for (uint32_t i = 0; i < kFine; ++i)
      if ((seen += fine_b_[i]) >= want) return (i + 1) * fine_;
    for (uint32_t i = 0; i < kCoarse; ++i)
      if ((seen += coarse_b_[i]) >= want) return fine_ * kFine + (i + 1) * coarse_;
    return max_;
  }

 private:
  static constexpr uint32_t kFine = 20'000, kCoarse = 20'000;
  uint64_t fine_, coarse_;
  std::vector<uint64_t> fine_b_ = std::vector<uint64_t>(kFine);
  std::vector<uint64_t> coarse_b_ = std::vector<uint64_t>(kCoarse);
  uint64_t over_ = 0, n_ = 0, sum_ = 0, max_ = 0;
};

// The tag of a frame that came back, or false if it is not one of ours.
inline bool frame_tag(const uint8_t* f, uint32_t len, Tag tag, uint32_t& out) {
  if (len < 14 + 20 || f[12] != 0x08 || f[13] != 0x00) return false;
  const uint8_t* ip = f + 14;
  if (tag == Tag::kIpId) {
    out = uint32_t(ip[4]) << 8 | ip[5];
    return true;
  }
  const uint32_t ihl = (ip[0] & 0x0f) * 4u;
  if (ip[9] != 50 || len < 14 + ihl + 8) return false;  // plain ESP only
  const uint8_t* esp = ip + ihl;
  const uint32_t seq = uint32_t(esp[4]) << 24 | uint32_t(esp[5]) << 16 | uint32_t(esp[6]) << 8 | esp[7];
  if (seq == 0) return false;
  out = seq - 1;
  return true;
}

uint16_t port_of(const char* name) {
  uint16_t id;
  if (rte_eth_dev_get_port_by_name(name, &id) != 0) throw std::runtime_error(std::string("no port ") + name);
  return id;
}

// --queues receive queues, one transmit queue: memif pairs rings by index,
// so a gateway that transmits on a queue per lcore (ipsec-secgw: queue 1
// from lcore 1) needs a ring of that index to reach us, and a gateway with
// fewer queues than our rings refuses the connection. We drain them all.
uint16_t kQueues = 1;

void start_port(uint16_t port, rte_mempool* pool) {
  rte_eth_conf conf{};
  bool ok = rte_eth_dev_configure(port, kQueues, 1, &conf) == 0 &&
            rte_eth_tx_queue_setup(port, 0, 1024, rte_socket_id(), nullptr) == 0;
  for (uint16_t q = 0; ok && q < kQueues; ++q)
    ok = rte_eth_rx_queue_setup(port, q, 1024, rte_socket_id(), nullptr, pool) == 0;
  if (!ok || rte_eth_dev_start(port) < 0) throw std::runtime_error("cannot start port " + std::to_string(port));
}

bool link_up(uint16_t port) {
  rte_eth_link l{};
  return rte_eth_link_get_nowait(port, &l) == 0 && l.link_status == RTE_ETH_LINK_UP;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"espgw latency harness: paced, stamped traffic over memif"};
  std::string socket_path, pcap_path, tag_name = "esp-seq";
  double rate = 0, warmup = 1, duration = 3, link_timeout = 20;
  unsigned burst = 32;
  app.add_option("--socket", socket_path, "the memif socket of the gateway under test (its server role)")->required();
  app.add_option("--pcap", pcap_path, "the frames to send, round robin")->required();
  app.add_option("--tag", tag_name, "how a sent frame is found in the output")->check(CLI::IsMember({"esp-seq", "ip-id"}));
  app.add_option("--rate", rate, "offered packets per second; 0: as fast as the gateway takes them");
  app.add_option("--warmup", warmup, "seconds of traffic before recording");
  app.add_option("--duration", duration, "seconds recorded");
  app.add_option("--burst", burst, "the most packets sent in one call")->check(CLI::Range(1u, unsigned(kMaxBurst)));
  app.add_option("--link-timeout", link_timeout, "seconds to wait for the gateway's memif interfaces");
  app.add_option("--queues", kQueues, "receive queues per memif interface: the gateway's transmit queues")
      ->check(CLI::Range(1, 8));
  bool hold = false;
  app.add_flag("--hold", hold, "after the results, keep the interfaces open until stdin closes");
  CLI11_PARSE(app, argc, argv);
  const Tag tag = tag_name == "ip-id" ? Tag::kIpId : Tag::kEspSeq;

  try {
    const auto frames = read_pcap(pcap_path);
    if (frames.size() < kMaxBurst) throw std::runtime_error("the pcap needs at least 64 frames");
    if (tag == Tag::kIpId && frames.size() != kSlots)
      throw std::runtime_error("--tag ip-id needs exactly 4096 frames, IPv4 identification = frame index");
    const std::string prefix = "latgen" + std::to_string(getpid());
    const std::string dev0 = "net_memif0,role=client,id=0,socket-abstract=no,socket=" + socket_path;
    const std::string dev1 = "net_memif1,role=client,id=1,socket-abstract=no,socket=" + socket_path;
    std::vector<std::string> eal = {"latency_gen", "-l", "0", "--no-pci", "--no-huge", "-m", "256",
                                    "--file-prefix", prefix, "--log-level", "lib.eal:error",
                                    "--vdev", dev0, "--vdev", dev1};
    std::vector<char*> eargv;
    for (auto& s : eal) eargv.push_back(s.data());
    if (rte_eal_init(int(eargv.size()), eargv.data()) < 0) throw std::runtime_error("rte_eal_init failed");
    rte_mempool* pool = rte_pktmbuf_pool_create("latgen", 16383, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    if (!pool) throw std::runtime_error("cannot create the mbuf pool");
    const uint16_t tx_port = port_of("net_memif0"), rx_port = port_of("net_memif1");
    start_port(tx_port, pool);
    start_port(rx_port, pool);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(link_timeout);
    while (!link_up(tx_port) || !link_up(rx_port)) {
      if (std::chrono::steady_clock::now() > give_up) throw std::runtime_error("memif links did not come up");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    const uint64_t hz = rte_get_tsc_hz();
    std::vector<uint64_t> stamp(kSlots, 0), sent_index(kSlots, 0);
    // One mbuf per frame, built once and sent again and again: memif's
    // transmit copies the data out and drops one reference.
    std::vector<rte_mbuf*> templ;
    for (const auto& f : frames) {
      rte_mbuf* m = rte_pktmbuf_alloc(pool);
      if (!m) throw std::runtime_error("the mbuf pool is too small for the frames");
      std::memcpy(rte_pktmbuf_append(m, uint16_t(f.size())), f.data(), f.size());
      templ.push_back(m);
    }
    Histogram hist(hz);
    uint64_t scheduled = 0, sent = 0, refused = 0, received = 0, unmatched = 0, foreign = 0, back_on_src = 0;
    uint64_t rec_sent = 0, rec_received = 0;
    rte_mbuf* tx[kMaxBurst];
    rte_mbuf* rx[kMaxBurst];

    // One pass of the receive side: every packet from the sink port is
    // matched to its stamp; what the gateway sends back on the source port
    // (it should send nothing) is counted and freed.
    auto drain = [&](uint64_t rec_from) {
      for (uint16_t q = 0; q < kQueues; ++q) {
        const uint16_t n = rte_eth_rx_burst(rx_port, q, rx, kMaxBurst);
        if (!n) continue;
        const uint64_t now = rte_rdtsc();
        for (uint16_t i = 0; i < n; ++i) {
          uint32_t t;
          if (!frame_tag(rte_pktmbuf_mtod(rx[i], const uint8_t*), rte_pktmbuf_data_len(rx[i]), tag, t)) {
            ++foreign;
            continue;
          }
          ++received;
          uint64_t& s = stamp[t & (kSlots - 1)];
          // esp-seq knows the whole send index: a sequence number that is
          // not the one sent there is a broken assumption, not a latency.
          if (s == 0 || (tag == Tag::kEspSeq && sent_index[t & (kSlots - 1)] != t)) {
            ++unmatched;
          } else {
            if (s >= rec_from) {
              hist.add(now - s);
              ++rec_received;
            }
            s = 0;
          }
        }
        rte_pktmbuf_free_bulk(rx, n);
      }
      for (uint16_t q = 0; q < kQueues; ++q) {
        const uint16_t m = rte_eth_rx_burst(tx_port, q, rx, kMaxBurst);
        back_on_src += m;
        if (m) rte_pktmbuf_free_bulk(rx, m);
      }
    };

    const uint64_t t0 = rte_rdtsc();
    const uint64_t rec_from = t0 + uint64_t(warmup * double(hz));
    const uint64_t t_end = rec_from + uint64_t(duration * double(hz));
    const double per_cycle = rate / double(hz);
    uint64_t now = t0;
    while ((now = rte_rdtsc()) < t_end) {
      // Paced: whatever is due, sent at once, up to `burst` (a packet at a
      // time at low rates; small bursts when this loop falls behind a high
      // rate, as a NIC's ring fills between two polls); unpaced: `burst`
      // every turn, as many as the gateway takes.
      uint64_t due = burst;
      if (rate > 0) {
        const uint64_t target = uint64_t(double(now - t0) * per_cycle);
        due = target > scheduled ? std::min<uint64_t>(target - scheduled, burst) : 0;
      }
      if (due) {
        for (uint64_t i = 0; i < due; ++i) {
          tx[i] = templ[(sent + i) % templ.size()];
          rte_mbuf_refcnt_update(tx[i], 1);  // memif copies it, then frees: the template stays
        }
        const uint64_t ts = rte_rdtsc();
        // The stamps go in before the send: the packet may be back before
        // this loop runs again. (With --tag ip-id there are kSlots frames,
        // so the slot is also the frame's index.)
        for (uint64_t i = 0; i < due; ++i) {
          stamp[(sent + i) & (kSlots - 1)] = ts;
          sent_index[(sent + i) & (kSlots - 1)] = sent + i;
        }
        const uint16_t ok = rte_eth_tx_burst(tx_port, 0, tx, uint16_t(due));
        for (uint64_t i = ok; i < due; ++i) {
          stamp[(sent + i) & (kSlots - 1)] = 0;
          rte_mbuf_refcnt_update(tx[i], -1);
        }
        scheduled += due;
        sent += ok;
        if (ts >= rec_from) rec_sent += ok;
        refused += due - ok;
      }
      drain(rec_from);
    }
    // What is still in flight comes back within a few ms.
    const uint64_t tail_end = rte_rdtsc() + hz / 20;
    while (rte_rdtsc() < tail_end) drain(rec_from);

    const double ns = 1e9 / double(hz);
    nlohmann::json out = {
        {"offered_pps", rate},
        {"tsc_hz", hz},
        {"sent", sent},
        {"refused", refused},
        {"received", received},
        {"unmatched", unmatched},
        {"foreign", foreign},
        {"back_on_source", back_on_src},
        {"recorded_sent", rec_sent},
        {"recorded", rec_received},
        {"lost_in_window", rec_sent > rec_received ? rec_sent - rec_received : 0},
        {"delivered_pps", double(rec_received) / duration},
        {"sent_pps", double(rec_sent) / duration},
        {"p50_ns", double(hist.quantile(0.50)) * ns},
        {"p90_ns", double(hist.quantile(0.90)) * ns},
        {"p99_ns", double(hist.quantile(0.99)) * ns},
        {"p999_ns", double(hist.quantile(0.999)) * ns},
        {"max_ns", double(hist.max()) * ns},
        {"mean_ns", hist.mean() * ns},
    };
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
    // DPDK 22.11's memif server can crash when its client goes away while
    // it polls (seen with testpmd): with --hold the caller stops the
    // gateway first, then closes our stdin.
    if (hold)
      while (std::getchar() != EOF) {
      }
    rte_eth_dev_stop(tx_port);
    rte_eth_dev_stop(rx_port);
    rte_eal_cleanup();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latency_gen: %s\n", e.what());
    return 1;
  }
}
