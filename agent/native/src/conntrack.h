// The node's conntrack table, asked over netlink (ctnetlink: NETLINK_NETFILTER,
// IPCTNL_MSG_CT_GET; written from the kernel's uapi headers, no
// libnetfilter_conntrack): for a flow as a pod's socket sees it (to a
// Service's ClusterIP), the address and port that answer it after the node's
// DNAT. agent/kernel/conntrack.ts is the facade.
#pragma once
#include <napi.h>

#include <cstddef>

namespace podmeter {

// One tuple of conntrackReplies' input (the original direction, as the
// pod's socket sends):
//   [0, 16)  source address    16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d)
//   [16, 32) destination address
//   [32, 34) source port       big-endian
//   [34, 36) destination port  big-endian
//   [36]     IP protocol (6 TCP, 17 UDP, ...)
//   [37, 40) zero
// IPv4 when both addresses are IPv4-mapped, else IPv6.
constexpr size_t kConntrackTupleBytes = 40;

// One answer of its output, at the same index:
//   [0, 16)  address that answers the tuple (IPv4-mapped for IPv4)
//   [16, 18) its port, big-endian
//   [18]     1: conntrack has an entry; 0: none (the other bytes zero)
//   [19]     zero
//   [20, 24) the entry's id (CTA_ID), big-endian
// The answering side is the entry's reply tuple's source when the tuple is
// the entry's original direction (after DNAT: the backend), and the
// original's source when the tuple is the entry's reply direction.
constexpr size_t kConntrackAnswerBytes = 24;

// (netnsPath?: string) -> fd: a NETLINK_NETFILTER socket, created inside the
// network namespace at netnsPath (/proc/PID/ns/net, /run/netns/NAME) when
// given. A lookup is made before it is returned, so a missing CAP_NET_ADMIN
// fails here (BpfError EPERM saying so).
Napi::Value ConntrackOpen(const Napi::CallbackInfo& info);

// (fd, tuples: Uint8Array of n x kConntrackTupleBytes) -> Uint8Array of n x kConntrackAnswerBytes.
// The fd must be a NETLINK_NETFILTER socket (conntrackOpen's; else TypeError, or BpfError EBADF when closed).
Napi::Value ConntrackReplies(const Napi::CallbackInfo& info);

}  // namespace podmeter
