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
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
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
	}
	asm volatile("" : "+r"(c)); /* each path makes its own pointer (see NO_CLASS) */
	/*
	 * Atomic adds: the slot is per CPU, but a program run can be preempted
	 * (migration is only disabled) or interrupted by a softirq run on the
	 * same CPU and cgroup (TCP ACKs, timers); a plain read-modify-write
	 * could then lose an update.
	 */
	__sync_fetch_and_add(&c->bytes, skb->len);
	__sync_fetch_and_add(&c->packets, 1);
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
