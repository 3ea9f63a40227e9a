#pragma once
#include <napi.h>

namespace podmeter {
// Element operations on ordinary maps (the peer trie, the slot names), with
// keys and values as raw bytes laid out by the caller (agent/kernel/bpf.ts).
Napi::Value MapUpdate(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array, value: Uint8Array) -> void
Napi::Value MapDelete(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array) -> boolean (false: no such key)
Napi::Value MapLookup(const Napi::CallbackInfo& info);  // (fd, key: Uint8Array, valueSize) -> Uint8Array | undefined
Napi::Value MapKeys(const Napi::CallbackInfo& info);    // (fd, keySize) -> Uint8Array[]
}  // namespace podmeter
