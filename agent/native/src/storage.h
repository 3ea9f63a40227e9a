#pragma once
#include <napi.h>

namespace podmeter {
// The per-CPU cgroup storage map of podmeter.bpf.c (value: podmeter_slots; one podmeter_counters, 16 bytes, for older agents).
// `mapId` is the id of the map the caller means; the fd must refer to it, and
// valueSize must be its value size (shape.h), or the call throws before any lookup.
Napi::Value StorageLookup(const Napi::CallbackInfo& info);  // (mapFd, cgroupId: bigint, attachType, valueSize, mapId) -> BigUint64Array (per CPU) | undefined
Napi::Value StorageSums(const Napi::CallbackInfo& info);    // (mapFd, cgroupId: bigint, valueSize, words, previous | undefined, mapId) -> BigUint64Array (ingress then egress, summed over CPUs) | previous | undefined
Napi::Value StorageSumsMany(const Napi::CallbackInfo& info);  // (mapFd, cgroupIds: bigint[], valueSize, words, previous: (BigUint64Array | undefined)[], mapId) -> what storageSums gives, per cgroup (the map checked once)
Napi::Value StorageKeys(const Napi::CallbackInfo& info);    // (mapFd, mapId) -> {cgroupId: bigint, attachType: number}[]
Napi::Value PossibleCpus(const Napi::CallbackInfo& info);   // () -> number
}  // namespace podmeter
