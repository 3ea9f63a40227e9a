// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * The counting programs of podmeter agents before peer classes: one 16-byte
 * counter per (cgroup, direction), loopback included. Not used by the agent;
 * tests build the pins such an agent left (test/agent/upgrade.test.ts) to
 * check that a newer agent takes them over without losing a count.
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
