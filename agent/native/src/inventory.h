#pragma once
#include <napi.h>

namespace podmeter {
// What is loaded in the kernel: maps, programs and links, by fd or host-wide.
Napi::Value ListMaps(const Napi::CallbackInfo& info);           // () -> MapInfo[] (every map on the host)
Napi::Value ListPrograms(const Napi::CallbackInfo& info);       // () -> ProgInfo[]
Napi::Value MapInfo(const Napi::CallbackInfo& info);            // (fd) -> MapInfo
Napi::Value ProgInfo(const Napi::CallbackInfo& info);           // (fd) -> ProgInfo
Napi::Value LinkInfo(const Napi::CallbackInfo& info);           // (fd) -> LinkInfo
// (fds: Int32Array) -> {cgroupIds: BigUint64Array, errnos: Int32Array}: per
// fd, the cgroup id of the cgroup link (0 once detached or its cgroup gone)
// and errno 0; or id 0 and what stopped the kernel saying: EBADF (the fd is
// not open, or negative), EINVAL (not a BPF link: a map, a program, a file),
// EOPNOTSUPP (a link, not a cgroup link), or BPF_OBJ_GET_INFO_BY_FD's errno.
// One call for all of a check's links: no object, string or BigInt per link.
Napi::Value LinkCgroupIds(const Napi::CallbackInfo& info);
Napi::Value EnableRunTimeStats(const Napi::CallbackInfo& info); // () -> fd; stats stay on until it is closed
}  // namespace podmeter
