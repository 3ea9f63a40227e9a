// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Programs that do nothing but let the packet pass. Used by tests (another
 * tool's program sharing a cgroup with podmeter) and by the benchmark (the
 * hook's own cost: the floor podmeter's programs are measured against).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup_skb/ingress")
int passthrough_ingress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/egress")
int passthrough_egress(struct __sk_buff *skb)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
