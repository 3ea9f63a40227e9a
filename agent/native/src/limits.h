#pragma once
#include <napi.h>

namespace podmeter {
// Before 5.11 the kernel charges BPF memory (maps, and the cgroup storage each
// attach allocates) to RLIMIT_MEMLOCK. libbpf raises it only when it creates
// maps or loads programs, not for an agent that adopts pinned ones.
Napi::Value RaiseMemlockLimit(const Napi::CallbackInfo& info);  // () -> the soft limit now, bytes (-1: unlimited)
}  // namespace podmeter
