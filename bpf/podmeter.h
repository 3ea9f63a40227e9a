/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Shared between the BPF programs and user space (agent/native). */
#ifndef PODMETER_H
#define PODMETER_H

#include <linux/types.h>

/*
 * Peer classes: a counter slot each. The built-in ones are fixed; slots from
 * PODMETER_FIRST_NAMED on belong to configured named CIDR classes, assigned
 * by the agent and recorded in the podmeter_names map, so an agent
 * restart finds the same class in the same slot.
 */
enum podmeter_class {
	PODMETER_LOOPBACK = 0,     /* the packet is on a loopback device (no lookup) */
	PODMETER_NODE = 1,         /* this node's addresses and pod CIDRs */
	PODMETER_ZONE = 2,         /* other nodes in the same zone */
	PODMETER_CROSS_ZONE = 3,   /* nodes in another zone of the same region */
	PODMETER_CROSS_REGION = 4, /* nodes in another region */
	PODMETER_SERVICE = 5,      /* the cluster's Service CIDRs (before kube-proxy's DNAT) */
	PODMETER_EXTERNAL = 6,     /* anything the peer trie does not know */
	PODMETER_FIRST_NAMED = 7,
};

/*
 * The two cgroup_skb directions, in the order user space gets them wherever
 * it gets both: agent/native's storageSums returns ingress's words, then
 * egress's.
 */
enum podmeter_direction {
	PODMETER_INGRESS = 0,
	PODMETER_EGRESS = 1,
};

/*
 * Where the agent pins each map and program of podmeter.bpf.c in its bpffs
 * directory (PODMETER_<name without podmeter_>_PIN). These are the names of
 * pins on nodes today: a renamed pin would not be adopted by the next agent.
 */
#define PODMETER_STATS_PIN "map_counters"
#define PODMETER_PEERS_PIN "map_peers"
#define PODMETER_GEN_PIN "map_generation"
#define PODMETER_NAMES_PIN "map_slot_names"
#define PODMETER_FLOWS_PIN "map_flows"
#define PODMETER_FLOWS_A_PIN "map_flows_a"
#define PODMETER_FLOWS_B_PIN "map_flows_b"
#define PODMETER_FLOW_EPOCHS_PIN "map_flow_epochs"
#define PODMETER_FLOW_MISSES_PIN "map_flow_misses"
#define PODMETER_UNITS_PIN "map_units"
#define PODMETER_INGRESS_PIN "prog_ingress"
#define PODMETER_EGRESS_PIN "prog_egress"

#define PODMETER_MAX_NAMED 8
#define PODMETER_SLOTS (PODMETER_FIRST_NAMED + PODMETER_MAX_NAMED)
/* Longest configured class name, with its NUL. */
#define PODMETER_NAME_LEN 64
/* Entries of the peer trie: node addresses and pod CIDRs, Service CIDRs, configured CIDRs. */
#define PODMETER_MAX_PEERS 65536

struct podmeter_counters {
	__u64 bytes;   /* sum of skb->len: L3 length, whole GSO super-packet */
	__u64 packets; /* skbs seen (a GSO super-packet counts once) */
};

/*
 * The class of the last peer looked up, per (cgroup, direction) and CPU: a
 * flow's packets skip the trie lookup. An entry counts only while its
 * generation is the peer trie's current one. A softirq or a preempting task
 * on the same CPU may run the program in the middle of a write, so an entry
 * must never be seen half-written: the IPv4 entry is one 8-byte word
 * (address << 32 | generation << 4 | class), written in one store; the IPv6
 * entry is guarded by `seq`, odd while it is being written (a run that finds
 * it odd neither uses nor writes it).
 */
struct podmeter_peer_cache {
	__u64 v4;
	__u32 seq;
	__u32 generation;
	__u64 addr[2];
	__u32 slot;
	__u32 pad;
};

#define PODMETER_GENERATION_MASK 0x0fffffffu /* what fits beside a class in the IPv4 entry */

/* One per (cgroup, attach type) and per CPU in the per-CPU cgroup storage. */
struct podmeter_slots {
	struct podmeter_counters slot[PODMETER_SLOTS];
	struct podmeter_peer_cache cache; /* the programs' own; readers skip it */
};

/*
 * Peer trie key: an IPv6 address, IPv4 as IPv4-mapped (::ffff:a.b.c.d, a
 * /n IPv4 prefix is /96+n), so one trie and one lookup serve both families.
 */
struct podmeter_peer_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct podmeter_slot_name {
	char name[PODMETER_NAME_LEN];
};

/*
 * Service flows. A packet whose peer is in a Service CIDR (class
 * PODMETER_SERVICE) still carries the Service's address here: kube-proxy's
 * DNAT happens later, in the node's netns. So it is counted per flow in the
 * active flow table, not in a slot; the agent learns each flow's backend
 * from the node's conntrack table and adds the flow's bytes to the class of
 * that backend (agent/services/). What cannot be counted per flow (no
 * TCP/UDP/SCTP header, no counted cgroup found, the table full) counts in
 * the PODMETER_SERVICE slot, and by reason in podmeter_flow_misses.
 */
#define PODMETER_MAX_FLOWS 65536
/* The deepest cgroup level searched for the counted cgroup of a socket's cgroup. */
#define PODMETER_MAX_LEVEL 16

struct podmeter_flow_key {
	__u64 cgroup;      /* the socket's cgroup (bpf_skb_cgroup_id): the counted cgroup or one below it */
	__u8 local[16];    /* the pod's address (IPv4-mapped for IPv4, as in the peer trie) */
	__u8 remote[16];   /* the Service's address */
	__u16 local_port;  /* host order */
	__u16 remote_port; /* host order */
	__u8 protocol;     /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 pad[3];
};

struct podmeter_flow {
	__u64 unit;                           /* the counted cgroup (a key of podmeter_units) */
	struct podmeter_counters traffic[2];  /* by enum podmeter_direction */
};

/* Why a Service packet was counted in the PODMETER_SERVICE slot: the index of podmeter_flow_misses. */
enum podmeter_flow_miss {
	PODMETER_MISS_NOT_A_FLOW = 0, /* no TCP, UDP or SCTP header (ICMP; IPv6 with more than 4 extension headers) */
	PODMETER_MISS_NO_UNIT = 1,    /* the socket's cgroup is under no cgroup in podmeter_units */
	PODMETER_MISS_TABLE_FULL = 2, /* the active flow table had no room */
	PODMETER_MISSES = 3,
};

#endif
