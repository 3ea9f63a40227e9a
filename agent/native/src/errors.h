// Errors crossing into JavaScript: one class (BpfError, agent/kernel/errors.ts)
// shaped like Node's SystemError: .code (errno name or libbpf code), .errno
// (negative, as Node does), .syscall, .path, and a message saying what failed.
#pragma once

#include <napi.h>
#include <string>

namespace podmeter {

// Stores the JS error constructor handed over by the TypeScript facade.
void SetErrorClass(const Napi::CallbackInfo& info);

// Throws BpfError for a positive errno value `err`; `what` says what failed
// ("attach podmeter_egress"), `path` the file it concerned (may be empty).
void ThrowSystemError(Napi::Env env, int err, const char* syscall, const std::string& what,
                      const std::string& path = "", const std::string& detail = "");

// The same BpfError as a value, not thrown (an async call's rejection); empty
// with a JS exception pending when it could not be made.
Napi::Value SystemError(Napi::Env env, int err, const char* syscall, const std::string& what,
                        const std::string& path = "", const std::string& detail = "");

// Throws a TypeError for a bad argument (the facade should have caught it).
void ThrowTypeError(Napi::Env env, const std::string& message);

// Collects libbpf's log lines while an object is opened and loaded, so a
// verifier rejection reaches the error message instead of stderr.
void BeginLibbpfLog();
std::string EndLibbpfLog();

}  // namespace podmeter
