#pragma once
#include <napi.h>

namespace podmeter {
// The per-CPU cgroup storage map of podmeter.bpf.c (value: podmeter_slots; one podmeter_counters, 16 bytes, for older agents).
Napi::Value StorageLookup(const Napi::CallbackInfo& info);  // (mapFd, cgroupId: bigint, attachType, valueSize) -> BigUint64Array (per CPU) | undefined
Napi::Value StorageSums(const Napi::CallbackInfo& info);    // (mapFd, cgroupId: bigint, valueSize, words, previous?) -> BigUint64Array (ingress then egress, summed over CPUs) | previous | undefined
Napi::Value StorageKeys(const Napi::CallbackInfo& info);    // (mapFd) -> {cgroupId: bigint, attachType: number}[]
Napi::Value PossibleCpus(const Napi::CallbackInfo& info);   // () -> number
}  // namespace podmeter
