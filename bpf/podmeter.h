/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Shared between the BPF programs and user space (agent/native). */
#ifndef PODMETER_H
#define PODMETER_H

#include <linux/types.h>

/* One per (cgroup, attach type) and per CPU in the per-CPU cgroup storage. */
struct podmeter_counters {
	__u64 bytes;   /* sum of skb->len: L3 length, whole GSO super-packet */
	__u64 packets; /* skbs seen (a GSO super-packet counts once) */
};

#endif
