#pragma once
#include <napi.h>

namespace podmeter {
// openObject(path): loads a BPF ELF object into the kernel and returns the
// fds of its programs and maps; the JS side owns (and closes) every fd.
Napi::Value OpenObject(const Napi::CallbackInfo& info);
}  // namespace podmeter
