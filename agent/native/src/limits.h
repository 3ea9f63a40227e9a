#pragma once
#include <napi.h>

namespace podmeter {
// Before 5.11 the kernel charges BPF memory (maps, and the cgroup storage each
// attach allocates) to RLIMIT_MEMLOCK. libbpf raises it only when it creates
// maps or loads programs, not for an agent that adopts pinned ones.
Napi::Value RaiseMemlockLimit(const Napi::CallbackInfo& info);  // () -> the soft limit now, bytes (-1: unlimited)
// Grows this process's fd table to `count` slots now (capped at RLIMIT_NOFILE),
// in one step: the kernel grows it by doubling as fds are allocated, and each
// growth of a multithreaded process's table waits for an RCU grace period
// (expand_fdtable: synchronize_rcu), several milliseconds during which the
// allocating call (here: a link's bpf(BPF_LINK_CREATE)) blocks the event loop.
// The table never shrinks. Best effort: returns the slots reserved (0: none).
Napi::Value ReserveFds(const Napi::CallbackInfo& info);  // (count) -> count reserved, or 0

}  // namespace podmeter
