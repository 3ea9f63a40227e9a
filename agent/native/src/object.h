#pragma once
#include <napi.h>

namespace podmeter {
// openObject(path, reuse?): loads a BPF ELF object into the kernel and
// returns the fds of its programs and maps; the JS side owns (and closes)
// every fd. `reuse` ({ mapName: fd }): maps the programs use instead of
// creating their own (bpf_map__reuse_fd; the caller checked their shapes).
Napi::Value OpenObject(const Napi::CallbackInfo& info);
// objectSpec(path): what the object declares, without loading it: each map's
// type, key and value size, max entries and flags, each program's type and
// expected attach type (the shapes pins adopted at start must have).
Napi::Value ObjectSpec(const Napi::CallbackInfo& info);
}  // namespace podmeter
