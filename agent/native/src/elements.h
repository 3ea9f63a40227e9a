#pragma once
#include <napi.h>

namespace podmeter {
// Element operations on ordinary maps (the peer trie, the slot names), with
// keys and values as raw bytes laid out by the caller (agent/kernel/bpf.ts).
// `mapId` is the id of the map the caller means: an fd now referring to
// another map (closed and reused) is refused, as is any buffer whose length
// differs from the map's key or value size (shape.h).
Napi::Value MapUpdate(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array, value: Uint8Array, mapId) -> void
Napi::Value MapDelete(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array, mapId) -> boolean (false: no such key)
Napi::Value MapLookup(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array, valueSize, mapId) -> Uint8Array | undefined
Napi::Value MapKeys(const Napi::CallbackInfo& info);    // (fd, keySize, mapId) -> Uint8Array[]
// (fd, keySize, valueSize, mapId) -> {count, keys, values}: every entry in one call (BPF_MAP_LOOKUP_BATCH, or a
// walk where the map has no batch operations), keys and values each laid end to end in one buffer.
Napi::Value MapEntries(const Napi::CallbackInfo& info);
// (fd, keys: Uint8Array of n keys end to end, mapId) -> number deleted (BPF_MAP_DELETE_BATCH, or one by one);
// keys not in the map are skipped.
Napi::Value MapDeleteKeys(const Napi::CallbackInfo& info);
// (fd, key, value, mapId) -> Promise<void>: mapUpdate on libuv's thread pool (a map-in-map write waits out an
// RCU grace period); every check throws here, before the promise.
Napi::Value MapUpdateAsync(const Napi::CallbackInfo& info);
}  // namespace podmeter
