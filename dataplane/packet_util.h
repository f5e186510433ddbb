// Small per-packet helpers of the worker pipelines: L2/L3 checks, ARP
// replies, TCP MSS clamping, ICMP "fragmentation needed".
#pragma once

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>

#include <array>
#include <cstdint>
#include <cstring>

#include "dataplane/dataplane.h"
#include "dataplane/esp.h"  // detail::ip_sum_ok

namespace espgw::dataplane {

inline bool port_owns(const Port& p, uint32_t addr) {
  if (!((p.addr_filter >> port_addr_bit(addr)) & 1)) return false;
  for (uint8_t i = 0; i < p.nb_addrs; i++)
    if (p.addrs[i] == addr) return true;
  return false;
}

// A question about an address (is it one of a port's, or of the gateway's
// addresses?) answered once per run of packets to one address: the
// question is a loop over addresses (~35 instructions with every port's),
// and a burst's packets mostly share a destination. Asks for 0 at first,
// so that the cached pair is always a true answer.
template <class Ask>
class PerRunAnswer {
 public:
  explicit PerRunAnswer(Ask ask) : ask_(ask), answer_(ask_(0)) {}
  bool operator()(uint32_t addr) {
    if (addr != addr_) {
      addr_ = addr;
      answer_ = ask_(addr);
    }
    return answer_;
  }

 private:
  Ask ask_;
  uint32_t addr_ = 0;
  bool answer_;
};

// RFC 1812 §4.3.2.7 / §5.3.7: whether an address can name a single host;
// not 0/8 ("this network"), 127/8 (loopback), 224/4 (multicast), 240/4
// (class E) nor 255.255.255.255 (limited broadcast). Host order.
inline constexpr bool ipv4_names_one_host(uint32_t a) {
  uint32_t top = a >> 24;
  return top != 0 && top != 127 && top < 224;
}

// The same verdict for a packet's two addresses, as one lookup per address
// in a table of first bytes: the pipelines ask it of every packet (~10
// instructions as two calls of the above, ~6 this way).
inline constexpr auto kTopNamesOneHost = [] {
  std::array<uint8_t, 256> t{};
  for (uint32_t top = 0; top < 256; top++) t[top] = ipv4_names_one_host(top << 24);
  return t;
}();
inline bool ipv4_both_name_one_host(uint32_t a, uint32_t b) {
  return (kTopNamesOneHost[a >> 24] & kTopNamesOneHost[b >> 24]) != 0;
}

// ICMP types that are errors (RFC 792, RFC 1812 §4.3.2.7): an error is
// never answered with another error.
inline bool icmp_type_is_error(uint8_t type) {
  return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

// Whether RFC 1812 §4.3.2.7 lets a router answer this packet (as received:
// its Ethernet and validated IPv4 headers) with an ICMP error: not an ICMP
// error itself, not a non-first fragment, not sent to a link-layer or IP
// broadcast/multicast, and from a source that names a single host.
inline bool icmp_error_permitted(const rte_ether_hdr* eth, const rte_ipv4_hdr* ip) {
  if (rte_is_multicast_ether_addr(&eth->dst_addr)) return false;  // broadcast included
  if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK)) return false;
  if (!ipv4_names_one_host(rte_be_to_cpu_32(ip->src_addr))) return false;
  if ((rte_be_to_cpu_32(ip->dst_addr) >> 24) >= 224) return false;  // multicast, class E, broadcast
  if (ip->next_proto_id == IPPROTO_ICMP) {
    uint32_t ihl = (ip->version_ihl & 0xF) * 4u;
    if (rte_be_to_cpu_16(ip->total_length) <= ihl) return false;  // no type to tell
    if (icmp_type_is_error(reinterpret_cast<const uint8_t*>(ip)[ihl])) return false;
  }
  return true;
}

// Validates the IPv4 header at `ip` against the `avail` bytes that follow it
// and trims Ethernet padding. Returns the drop reason, or kCount when good.
inline DropReason check_ipv4(rte_mbuf* m, const rte_ipv4_hdr* ip, uint32_t avail) {
  if (avail < sizeof(rte_ipv4_hdr)) return DropReason::kTruncated;
  const uint8_t vi = ip->version_ihl;
  if (__builtin_expect(!detail::ipv4_version_ihl_ok(vi), 0))
    return (vi >> 4) != 4 ? DropReason::kUnsupported : DropReason::kBadHeader;
  uint32_t ihl = (vi & 0xF) * 4u;
  uint32_t total = uint16_t(ip->total_length << 8 | ip->total_length >> 8);  // (rte_bswap16 is asm volatile)
  if (RTE_BYTE_ORDER == RTE_BIG_ENDIAN) total = ip->total_length;
  if (total < ihl) return DropReason::kBadHeader;
  if (total > avail) return DropReason::kTruncated;
  // A router verifies the header checksum of every packet it receives
  // (RFC 1812 §5.2.2), whichever way it goes: nothing with a corrupt header
  // is encrypted, decrypted, reassembled or handed to the host. The NIC's
  // verdict is taken when it gives one.
  if (!(m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_GOOD) &&
      ((m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
       !detail::ip_sum_ok(reinterpret_cast<const uint8_t*>(ip), ihl)))
    return DropReason::kBadHeader;
  if (total < avail) rte_pktmbuf_trim(m, uint16_t(avail - total));  // L2 padding
  return DropReason::kCount;
}

// Turns an ARP request for one of `port`'s addresses into the reply, in
// place. Returns false when the packet is not such a request.
inline bool arp_make_reply(rte_mbuf* m, const Port& port, bool proxy_any = false) {
  if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return false;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  // Address lengths too (RFC 826: Ethernet 6, IPv4 4; Linux's arp_process
  // checks them): a reply keeps the request's header, and one with other
  // lengths would be malformed.
  if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
      arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || arp->arp_hlen != RTE_ETHER_ADDR_LEN ||
      arp->arp_plen != 4 || arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST))
    return false;
  uint32_t target = rte_be_to_cpu_32(arp->arp_data.arp_tip);
  uint32_t sender = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  // No reply to a sender that cannot be a host (RFC 1812 §5.3.7 martians,
  // an RFC 5227 probe from 0.0.0.0, a group MAC), nor to a gratuitous
  // request (sender = target) for an address that is not ours: replying
  // would tell its owner someone else holds it.
  if (!ipv4_names_one_host(sender) || rte_is_multicast_ether_addr(&arp->arp_data.arp_sha)) return false;
  if (sender == target && !port_owns(port, target)) return false;
  if (!proxy_any && !port_owns(port, target)) return false;
  arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
  arp->arp_data.arp_tha = arp->arp_data.arp_sha;
  arp->arp_data.arp_tip = arp->arp_data.arp_sip;
  arp->arp_data.arp_sha = port.mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(target);
  eth->dst_addr = eth->src_addr;
  eth->src_addr = port.mac;
  rte_pktmbuf_trim(m, uint16_t(rte_pktmbuf_pkt_len(m) - sizeof(rte_ether_hdr) - sizeof(rte_arp_hdr)));
  return true;
}

// Sender of an ARP packet (request or reply): how next hops are learned.
inline bool arp_sender(const rte_mbuf* m, uint32_t* ip, rte_ether_addr* mac) {
  if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return false;
  auto* arp = rte_pktmbuf_mtod_offset(m, const rte_arp_hdr*, sizeof(rte_ether_hdr));
  if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
      arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || arp->arp_hlen != RTE_ETHER_ADDR_LEN ||
      arp->arp_plen != 4)
    return false;
  *ip = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  *mac = arp->arp_data.arp_sha;
  return ipv4_names_one_host(*ip) && rte_is_unicast_ether_addr(mac);
}

// A broadcast "who has `target`" from `src` (0: the port's first address).
inline bool build_arp_request(rte_mbuf* m, const Port& port, uint32_t target, uint32_t src = 0) {
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)));
  if (!eth || port.nb_addrs == 0) return false;
  memset(&eth->dst_addr, 0xFF, sizeof(eth->dst_addr));
  eth->src_addr = port.mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REQUEST);
  arp->arp_data.arp_sha = port.mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(src ? src : port.addrs[0]);
  memset(&arp->arp_data.arp_tha, 0, sizeof(arp->arp_data.arp_tha));
  arp->arp_data.arp_tip = rte_cpu_to_be_32(target);
  return true;
}

// RFC 1624 incremental checksum update for a 16-bit field change.
inline uint16_t csum_update16(uint16_t csum_be, uint16_t old_be, uint16_t new_be) {
  uint32_t s = uint16_t(~rte_be_to_cpu_16(csum_be)) + uint32_t(uint16_t(~rte_be_to_cpu_16(old_be))) +
               rte_be_to_cpu_16(new_be);
  s = (s & 0xFFFF) + (s >> 16);
  s = (s & 0xFFFF) + (s >> 16);
  return rte_cpu_to_be_16(uint16_t(~s));
}

// Lowers the MSS option of a TCP SYN to `clamp`. Returns true if changed.
inline bool clamp_tcp_mss(rte_ipv4_hdr* ip, uint32_t l3_len_avail, uint16_t clamp) {
  if (ip->next_proto_id != IPPROTO_TCP) return false;
  if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK)) return false;
  uint32_t ihl = (ip->version_ihl & 0xF) * 4u;
  if (l3_len_avail < ihl + sizeof(rte_tcp_hdr)) return false;
  auto* tcp = reinterpret_cast<rte_tcp_hdr*>(reinterpret_cast<uint8_t*>(ip) + ihl);
  if (!(tcp->tcp_flags & RTE_TCP_SYN_FLAG)) return false;
  uint32_t doff = (tcp->data_off >> 4) * 4u;
  if (doff < sizeof(rte_tcp_hdr) || ihl + doff > l3_len_avail) return false;
  uint8_t* opt = reinterpret_cast<uint8_t*>(tcp + 1);
  uint8_t* end = reinterpret_cast<uint8_t*>(tcp) + doff;
  while (opt < end) {
    uint8_t kind = opt[0];
    if (kind == 0) break;            // end of options
    if (kind == 1) { opt++; continue; }  // NOP
    if (opt + 1 >= end || opt[1] < 2 || opt + opt[1] > end) break;
    if (kind == 2 && opt[1] == 4) {
      uint16_t old_be;
      memcpy(&old_be, opt + 2, 2);
      if (rte_be_to_cpu_16(old_be) <= clamp) return false;
      uint16_t new_be = rte_cpu_to_be_16(clamp);
      memcpy(opt + 2, &new_be, 2);
      // The checksum sums 16-bit words aligned to the TCP header: a field at
      // an odd offset (after NOP, NOP, SACK-permitted, window scale, say)
      // straddles two words, so its bytes count swapped (RFC 1071 §2(B):
      // the sum is byte-order independent, swap in, swap out).
      if ((opt + 2 - reinterpret_cast<uint8_t*>(tcp)) & 1) {
        old_be = uint16_t(old_be << 8 | old_be >> 8);
        new_be = uint16_t(new_be << 8 | new_be >> 8);
      }
      tcp->cksum = csum_update16(tcp->cksum, old_be, new_be);
      return true;
    }
    opt += opt[1];
  }
  return false;
}

// Largest inner IPv4 packet that fits an outer MTU once ESP-GCM wraps it:
// outer IPv4 20 [+ UDP 8] + ESP 8 + IV 8 + (inner + 2 padded to 4) + ICV 16.
constexpr uint16_t esp_max_inner(uint16_t outer_mtu, bool udp) {
  int room = int(outer_mtu) - 20 - (udp ? 8 : 0) - 8 - 8 - 16;
  if (room < 4) return 0;
  return uint16_t((room & ~3) - 2);
}

// Builds an ICMP error (type, code; `mtu` in the low 16 bits of the unused
// word, RFC 1191) quoting the original packet `orig` (starting at its IPv4
// header: header + 64 bits of data, RFC 792) into a fresh mbuf, from the
// port's first address, with an Ethernet header back to `orig_eth`'s sender.
inline rte_mbuf* build_icmp_error(rte_mempool* pool, const rte_ether_hdr* orig_eth, const rte_ipv4_hdr* orig,
                                  const Port& port, uint8_t type, uint8_t code, uint16_t mtu) {
  if (port.nb_addrs == 0) return nullptr;
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (!m) return nullptr;
  uint32_t ihl = (orig->version_ihl & 0xF) * 4u;
  uint32_t quote = ihl + 8;  // original header + 64 bits of data (RFC 792)
  uint32_t orig_total = rte_be_to_cpu_16(orig->total_length);
  if (quote > orig_total) quote = orig_total;
  uint32_t len = sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + 8 + quote;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, uint16_t(len)));
  if (!eth) { rte_pktmbuf_free(m); return nullptr; }
  eth->dst_addr = orig_eth->src_addr;
  eth->src_addr = port.mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  memset(ip, 0, sizeof(*ip));
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(uint16_t(len - sizeof(rte_ether_hdr)));
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_ICMP;
  ip->src_addr = rte_cpu_to_be_32(port.addrs[0]);
  ip->dst_addr = orig->src_addr;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  auto* icmp = reinterpret_cast<uint8_t*>(ip + 1);
  icmp[0] = type;
  icmp[1] = code;
  icmp[2] = icmp[3] = 0;
  icmp[4] = icmp[5] = 0;
  uint16_t mtu_be = rte_cpu_to_be_16(mtu);
  memcpy(icmp + 6, &mtu_be, 2);
  memcpy(icmp + 8, orig, quote);
  uint16_t ck = uint16_t(~rte_raw_cksum(icmp, 8 + quote));
  memcpy(icmp + 2, &ck, 2);  // raw_cksum works in memory order: store as is
  return m;
}

// ICMP "fragmentation needed" (type 3 code 4, RFC 1191).
inline rte_mbuf* build_icmp_frag_needed(rte_mempool* pool, const rte_ether_hdr* orig_eth,
                                        const rte_ipv4_hdr* orig, const Port& port, uint16_t next_hop_mtu) {
  return build_icmp_error(pool, orig_eth, orig, port, 3, 4, next_hop_mtu);
}

// ICMP "time exceeded in transit" (type 11 code 0, RFC 792 / RFC 1812 §5.3.1).
inline rte_mbuf* build_icmp_time_exceeded(rte_mempool* pool, const rte_ether_hdr* orig_eth,
                                          const rte_ipv4_hdr* orig, const Port& port) {
  return build_icmp_error(pool, orig_eth, orig, port, 11, 0, 0);
}

// Forwarding TTL decrement with the incremental checksum update of RFC 1624
// (the TTL is the high byte of its 16-bit word: the checksum grows by 0x0100,
// end-around carry). The caller checked time_to_live > 1.
inline void ipv4_decrement_ttl(rte_ipv4_hdr* ip) {
  uint32_t c = ip->hdr_checksum;  // memory order, like the addend below
  c += rte_cpu_to_be_16(0x0100);
  ip->hdr_checksum = uint16_t(c + (c >= 0xFFFF));
  ip->time_to_live--;
}

}  // namespace espgw::dataplane
