#pragma once
#include <napi.h>

namespace podmeter {
// What is loaded in the kernel: maps, programs and links, by fd or host-wide.
Napi::Value ListMaps(const Napi::CallbackInfo& info);           // () -> MapInfo[] (every map on the host)
Napi::Value ListPrograms(const Napi::CallbackInfo& info);       // () -> ProgInfo[]
Napi::Value MapInfo(const Napi::CallbackInfo& info);            // (fd) -> MapInfo
Napi::Value ProgInfo(const Napi::CallbackInfo& info);           // (fd) -> ProgInfo
Napi::Value LinkInfo(const Napi::CallbackInfo& info);           // (fd) -> LinkInfo
Napi::Value EnableRunTimeStats(const Napi::CallbackInfo& info); // () -> fd; stats stay on until it is closed
}  // namespace podmeter
