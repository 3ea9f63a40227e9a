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
}  // namespace podmeter
