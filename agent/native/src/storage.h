#pragma once
#include <napi.h>

namespace podmeter {
// The per-CPU cgroup storage map of podmeter.bpf.c (value: podmeter_counters).
Napi::Value StorageLookup(const Napi::CallbackInfo& info);  // (mapFd, cgroupId: bigint, attachType) -> BigUint64Array | undefined
Napi::Value StorageKeys(const Napi::CallbackInfo& info);    // (mapFd) -> {cgroupId: bigint, attachType: number}[]
Napi::Value PossibleCpus(const Napi::CallbackInfo& info);   // () -> number
}  // namespace podmeter
