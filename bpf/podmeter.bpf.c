// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Per-cgroup network accounting by peer class: one cgroup_skb program per
 * direction adds skb->len and 1 to one slot of the per-CPU cgroup storage of
 * the cgroup it is attached to. Storage is keyed by {cgroup inode id, attach
 * type}, so ingress and egress are separate entries, and sockets of
 * descendant cgroups count into the attachment's cgroup.
 *
 * The slot: loopback when the packet is on a loopback device (ifindex 1 is
 * `lo` in every netns; also a pod's packets to its own non-lo address), else
 * the class of the peer address (ingress: source, egress: destination) in the
 * peer trie, else external. The last peer's class is cached per cgroup,
 * direction and CPU (struct podmeter_peer_cache), so a flow pays for one trie
 * lookup, not one per packet.
 *
 * A packet whose peer is in a Service CIDR is counted per flow instead
 * (podmeter.h: Service flows), so that the agent can count its bytes in the
 * class of the backend that kube-proxy's DNAT picked.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "podmeter.h"

#define LOOPBACK_IFINDEX 1
/*
 * "Not in the trie" (and anything unparsable): external. Kept apart from
 * PODMETER_EXTERNAL so that a slot index used in pointer arithmetic always
 * comes from a map value, never a constant on some paths: without
 * CAP_PERFMON the verifier's Spectre v1 sanitising rejects an add whose
 * offset is a constant on one path and a range on another.
 */
#define NO_CLASS 0xffffffffu
#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct podmeter_slots);
} podmeter_stats SEC(".maps");

/* Peer prefix -> class slot (__u32), kept current by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct podmeter_peer_key);
	__type(value, __u32);
	__uint(max_entries, PODMETER_MAX_PEERS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} podmeter_peers SEC(".maps");

/*
 * PODMETER_TEST_EARLIER builds a stand-in for an earlier version of this
 * file (test/kernel/pin-upgrade.test.ts upgrades from it): other code, the
 * same counts, one map fewer. Without podmeter_gen the peer cache is off.
 */
#ifndef PODMETER_TEST_EARLIER
/*
 * The peer trie's generation: the agent increments it after changing the
 * trie, which invalidates every cached class. 0: the cache is off.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
} podmeter_gen SEC(".maps");
#endif

/*
 * Which configured class owns each named slot (not read by the programs):
 * pinned with them, so the assignment lives exactly as long as the counts.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct podmeter_slot_name);
	__uint(max_entries, PODMETER_SLOTS);
} podmeter_names SEC(".maps");

/*
 * Service flows (podmeter.h). Two tables, one active: the agent reads and
 * empties the other. It makes the other active by writing it into
 * podmeter_flows, and the kernel returns from that write only after every
 * program run that could still use the old one has ended (map-in-map
 * updates wait for an RCU grace period), so the agent reads a table
 * nothing writes to any more: no byte is lost or read twice.
 */
struct flow_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct podmeter_flow_key);
	__type(value, struct podmeter_flow);
	__uint(max_entries, PODMETER_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct flow_table podmeter_flows_a SEC(".maps");
struct flow_table podmeter_flows_b SEC(".maps");

/* The active flow table (slot 0), set by the agent; none yet: Service packets count in the slot. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 1);
	__array(values, struct flow_table);
} podmeter_flows SEC(".maps");

/*
 * The drain number at which each table (0: a, 1: b) was last made active
 * (not read by the programs): after a restart the agent compares them with
 * the last drain its state file records, so a table is never read twice.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} podmeter_flow_epochs SEC(".maps");

/* Service traffic counted in the PODMETER_SERVICE slot, by enum podmeter_flow_miss. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct podmeter_counters);
	__uint(max_entries, PODMETER_MISSES);
} podmeter_flow_misses SEC(".maps");

/* The counted cgroups (cgroup id -> 0), kept by the agent: a flow's unit is the one its socket's cgroup is in. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u32);
	__uint(max_entries, PODMETER_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} podmeter_units SEC(".maps");

/* cgroup_skb data starts at the network header, in both directions. */
static __always_inline int peer_ipv4(struct __sk_buff *skb, int ingress, __u32 *addr)
{
	struct iphdr *ip = (void *)(long)skb->data;

	if ((void *)(ip + 1) <= (void *)(long)skb->data_end) {
		*addr = ingress ? ip->saddr : ip->daddr;
		return 0;
	}
	return bpf_skb_load_bytes(skb, ingress ? 12 : 16, addr, 4);
}

static __always_inline int peer_ipv6(struct __sk_buff *skb, int ingress, __u64 addr[2])
{
	struct ipv6hdr *ip6 = (void *)(long)skb->data;

	if ((void *)(ip6 + 1) <= (void *)(long)skb->data_end) {
		__builtin_memcpy(addr, ingress ? &ip6->saddr : &ip6->daddr, 16);
		return 0;
	}
	return bpf_skb_load_bytes(skb, ingress ? 8 : 24, addr, 16);
}

static __always_inline __u32 trie_class(__u64 a0, __u64 a1)
{
	struct podmeter_peer_key key = { .prefixlen = 128 };
	__u32 *slot;

	__builtin_memcpy(&key.addr[0], &a0, 8);
	__builtin_memcpy(&key.addr[8], &a1, 8);
	slot = bpf_map_lookup_elem(&podmeter_peers, &key);
	return slot ? *slot : NO_CLASS;
}

static __always_inline __u32 generation(void)
{
#ifdef PODMETER_TEST_EARLIER
	return 0;
#else
	__u32 zero = 0, *g = bpf_map_lookup_elem(&podmeter_gen, &zero);

	return g ? READ_ONCE(*g) & PODMETER_GENERATION_MASK : 0;
#endif
}

static __always_inline __u32 peer_class(struct podmeter_slots *s, struct __sk_buff *skb, int ingress)
{
	struct podmeter_peer_cache *c = &s->cache;
	__u32 gen, class, seq;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u32 a;
		__u64 entry, a1;

		if (peer_ipv4(skb, ingress, &a) < 0)
			return NO_CLASS;
		gen = generation();
		entry = READ_ONCE(c->v4);
		/* The class's low 4 bits: 0xf (>= PODMETER_SLOTS) stands for NO_CLASS. */
		if (gen != 0 && (__u32)(entry >> 32) == a && (((__u32)entry >> 4) & PODMETER_GENERATION_MASK) == gen)
			return (__u32)entry & 0xf;
		/* ::ffff:a.b.c.d: bytes 8-9 zero, 10-11 0xff, 12-15 the address. */
		a1 = 0;
		__builtin_memset((__u8 *)&a1 + 2, 0xff, 2);
		__builtin_memcpy((__u8 *)&a1 + 4, &a, 4);
		class = trie_class(0, a1);
		if (gen != 0)
			WRITE_ONCE(c->v4, (__u64)a << 32 | gen << 4 | (class & 0xf));
		return class;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u64 addr[2];

		if (peer_ipv6(skb, ingress, addr) < 0)
			return NO_CLASS;
		gen = generation();
		seq = READ_ONCE(c->seq);
		barrier();
		if (gen != 0 && !(seq & 1) && c->generation == gen && c->addr[0] == addr[0] && c->addr[1] == addr[1]) {
			class = c->slot;
			barrier();
			if (READ_ONCE(c->seq) == seq)
				return class;
		}
		class = trie_class(addr[0], addr[1]);
		seq = READ_ONCE(c->seq);
		if (gen != 0 && !(seq & 1)) {
			WRITE_ONCE(c->seq, seq + 1);
			barrier();
			c->generation = gen;
			c->slot = class;
			c->addr[0] = addr[0];
			c->addr[1] = addr[1];
			barrier();
			WRITE_ONCE(c->seq, seq + 2);
		}
		return class;
	}
	return NO_CLASS;
}

static __always_inline void add(struct podmeter_counters *c, struct __sk_buff *skb)
{
	/*
	 * Atomic adds: the slot is per CPU, but a program run can be preempted
	 * (migration is only disabled) or interrupted by a softirq run on the
	 * same CPU and cgroup (TCP ACKs, timers); a plain read-modify-write
	 * could then lose an update. Flow entries are shared by all CPUs.
	 */
	__sync_fetch_and_add(&c->bytes, skb->len);
	__sync_fetch_and_add(&c->packets, 1);
}

/* The flow key of a Service packet (local: the pod's end); < 0 when it has no TCP, UDP or SCTP header. */
static __always_inline int flow_key(struct __sk_buff *skb, int ingress, struct podmeter_flow_key *key)
{
	__u16 ports[2];
	__u8 protocol;
	int l4;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0 || (ip.frag_off & bpf_htons(0x1fff)) != 0)
			return -1;
		protocol = ip.protocol;
		l4 = ip.ihl * 4;
		key->local[10] = key->local[11] = key->remote[10] = key->remote[11] = 0xff;
		__builtin_memcpy(&key->local[12], ingress ? &ip.daddr : &ip.saddr, 4);
		__builtin_memcpy(&key->remote[12], ingress ? &ip.saddr : &ip.daddr, 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) < 0)
			return -1;
		protocol = ip6.nexthdr;
		l4 = sizeof(ip6);
		/*
		 * Hop-by-hop (a BIG TCP super-packet's jumbo payload option),
		 * routing and destination options headers come before the ports.
		 */
		for (int i = 0; i < 4; i++) {
			__u8 ext[2];

			if (protocol != IPPROTO_HOPOPTS && protocol != IPPROTO_ROUTING && protocol != IPPROTO_DSTOPTS)
				break;
			if (bpf_skb_load_bytes(skb, l4, ext, sizeof(ext)) < 0)
				return -1;
			protocol = ext[0];
			l4 += (ext[1] + 1) * 8;
		}
		__builtin_memcpy(key->local, ingress ? &ip6.daddr : &ip6.saddr, 16);
		__builtin_memcpy(key->remote, ingress ? &ip6.saddr : &ip6.daddr, 16);
	} else {
		return -1;
	}
	if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP && protocol != IPPROTO_SCTP)
		return -1;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) < 0)
		return -1;
	key->protocol = protocol;
	key->local_port = bpf_ntohs(ingress ? ports[1] : ports[0]);
	key->remote_port = bpf_ntohs(ingress ? ports[0] : ports[1]);
	key->cgroup = bpf_skb_cgroup_id(skb);
	return 0;
}

/* The counted cgroup the socket's cgroup is in (itself or an ancestor in podmeter_units); 0 when none. */
static __always_inline __u64 unit_of(struct __sk_buff *skb)
{
	for (int level = 1; level <= PODMETER_MAX_LEVEL; level++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, level);

		if (id == 0)
			break;
		if (bpf_map_lookup_elem(&podmeter_units, &id))
			return id;
	}
	return 0;
}

/* Counts a Service packet in its flow's entry; false when it must count in the slot (its miss counted). */
static __always_inline int count_flow(struct __sk_buff *skb, int ingress)
{
	struct podmeter_flow_key key = {};
	struct podmeter_flow *flow, fresh = {};
	__u32 zero = 0, miss;
	void *table;

	table = bpf_map_lookup_elem(&podmeter_flows, &zero);
	if (!table)
		return 0; /* no table yet: the agent sets one before it attaches */
	if (flow_key(skb, ingress, &key) < 0) {
		miss = PODMETER_MISS_NOT_A_FLOW;
		goto missed;
	}
	flow = bpf_map_lookup_elem(table, &key);
	if (!flow) {
		fresh.unit = unit_of(skb);
		if (fresh.unit == 0) {
			miss = PODMETER_MISS_NO_UNIT;
			goto missed;
		}
		/* Another CPU may have made it meanwhile (-EEXIST): then use that one. */
		bpf_map_update_elem(table, &key, &fresh, BPF_NOEXIST);
		flow = bpf_map_lookup_elem(table, &key);
		if (!flow) {
			miss = PODMETER_MISS_TABLE_FULL;
			goto missed;
		}
	}
	add(&flow->traffic[ingress ? PODMETER_INGRESS : PODMETER_EGRESS], skb);
	return 1;
missed: {
	struct podmeter_counters *m = bpf_map_lookup_elem(&podmeter_flow_misses, &miss);

	if (m)
		add(m, skb);
	return 0;
}
}

static __always_inline int count(struct __sk_buff *skb, int ingress)
{
	struct podmeter_slots *s = bpf_get_local_storage(&podmeter_stats, 0);
	struct podmeter_counters *c;
	__u32 class;

	if (skb->ifindex == LOOPBACK_IFINDEX) {
		c = &s->slot[PODMETER_LOOPBACK];
	} else {
		class = peer_class(s, skb, ingress);
		if (class >= PODMETER_SLOTS)
			c = &s->slot[PODMETER_EXTERNAL];
		else
			c = &s->slot[class];
		/* A Service packet counts in its flow's entry; in the slot when it cannot. */
		if (class == PODMETER_SERVICE && count_flow(skb, ingress))
			return 1;
	}
	asm volatile("" : "+r"(c)); /* each path makes its own pointer (see NO_CLASS) */
	add(c, skb);
	return 1; /* always let the packet pass */
}

SEC("cgroup_skb/ingress")
int podmeter_ingress(struct __sk_buff *skb)
{
	return count(skb, 1);
}

SEC("cgroup_skb/egress")
int podmeter_egress(struct __sk_buff *skb)
{
	return count(skb, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
