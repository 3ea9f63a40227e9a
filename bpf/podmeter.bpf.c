// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Per-cgroup network accounting: one cgroup_skb program per direction adds
 * skb->len and 1 to the per-CPU cgroup storage of the cgroup it is attached
 * to. Storage is keyed by {cgroup inode id, attach type}, so ingress and
 * egress are separate entries, and sockets of descendant cgroups count into
 * the attachment's cgroup.
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
	return count(skb);
}

SEC("cgroup_skb/egress")
int podmeter_egress(struct __sk_buff *skb)
{
	return count(skb);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
