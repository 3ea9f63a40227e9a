#pragma once
#include <napi.h>

namespace podmeter {
// Attachments of programs to cgroups, programs by id, and bpffs pins.
Napi::Value OpenCgroupDir(const Napi::CallbackInfo& info);     // (cgroupPath) -> {fd, id}: one path walk
Napi::Value AttachCgroupLink(const Napi::CallbackInfo& info);   // (progFd, cgroupFd, attachType, cgroupPath) -> linkFd
Napi::Value AttachCgroupMulti(const Napi::CallbackInfo& info);  // (progFd, cgroupPath, attachType)
Napi::Value DetachCgroupMulti(const Napi::CallbackInfo& info);  // (progFd, cgroupPath, attachType)
Napi::Value QueryCgroup(const Napi::CallbackInfo& info);        // (cgroupPath, attachType) -> prog ids
Napi::Value LinkDetach(const Napi::CallbackInfo& info);         // (linkFd)
Napi::Value LinkUpdate(const Napi::CallbackInfo& info);         // (linkFd, newProgFd, oldProgFd): BPF_F_REPLACE
Napi::Value ProgFdById(const Napi::CallbackInfo& info);         // (progId) -> fd (needs CAP_SYS_ADMIN)
Napi::Value ObjPin(const Napi::CallbackInfo& info);             // (fd, path)
Napi::Value ObjGet(const Napi::CallbackInfo& info);             // (path) -> fd
}  // namespace podmeter
