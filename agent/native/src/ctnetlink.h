// ctnetlink messages (NETLINK_NETFILTER, the conntrack subsystem), written
// from the kernel's uapi headers: the IPCTNL_MSG_CT_GET request for one
// tuple, and the IPCTNL_MSG_CT_NEW entry that answers it (its tuples and
// id). conntrack.cc sends the requests and matches the answers.
#pragma once

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace podmeter::ctnetlink {

// The first 12 bytes of an IPv4-mapped IPv6 address (::ffff:a.b.c.d).
inline constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

inline constexpr uint16_t kCtGet = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
inline constexpr uint16_t kCtNew = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;

struct Tuple {
  uint8_t src[16];   // IPv4 as IPv4-mapped
  uint8_t dst[16];
  uint16_t srcPort;  // network order
  uint16_t dstPort;
  uint8_t proto;

  bool V4() const { return memcmp(src, kMapped, 12) == 0 && memcmp(dst, kMapped, 12) == 0; }
  bool operator==(const Tuple& o) const {
    return memcmp(src, o.src, 16) == 0 && memcmp(dst, o.dst, 16) == 0 && srcPort == o.srcPort &&
           dstPort == o.dstPort && proto == o.proto;
  }
};

// What an answer holds of a conntrack entry.
struct Entry {
  Tuple orig;
  Tuple reply;
  uint8_t id[4];  // CTA_ID, big-endian as the kernel sends it
};

// Appends one IPCTNL_MSG_CT_GET of the entry whose original (or reply) tuple
// is `t` to `buf`, with sequence number `seq`.
void AppendGet(std::vector<uint8_t>& buf, const Tuple& t, uint32_t seq);

// An IPCTNL_MSG_CT_NEW message's payload (after the netlink header); false when a tuple is missing.
bool ParseEntry(const uint8_t* p, size_t len, Entry* e);

}  // namespace podmeter::ctnetlink
