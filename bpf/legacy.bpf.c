// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Counting without peer classes: one 16-byte counter per (cgroup,
 * direction), loopback included, as podmeter counted before peer classes.
 * Not used by the agent: bench/bpf-overhead.bench.ts measures what the peer
 * classes cost against it, and tests use its map as one of another shape
 * (test/kernel/pin-shape.test.ts, native-boundary.test.ts).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "podmeter.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct podmeter_counters);
} podmeter_stats SEC(".maps");

static __always_inline int count(struct __sk_buff *skb)
{
	struct podmeter_counters *c = bpf_get_local_storage(&podmeter_stats, 0);

	__sync_fetch_and_add(&c->bytes, skb->len);
	__sync_fetch_and_add(&c->packets, 1);
	return 1;
}

SEC("cgroup_skb/ingress")
int podmeter_ingress(struct __sk_buff *skb)
{
	return count(skb);
}

SEC("cgroup_skb/egress")
int podmeter_egress(struct __sk_buff *skb)
{
	return count(skb);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
