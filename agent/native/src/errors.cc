#include "errors.h"

#include <bpf/libbpf.h>
#include <cstdarg>
#include <cstring>

namespace podmeter {
namespace {

Napi::FunctionReference* errorClass = nullptr;
std::string libbpfLog;
bool capturing = false;

int PrintToBuffer(enum libbpf_print_level level, const char* format, va_list args) {
  if (!capturing || level == LIBBPF_DEBUG) return 0;
  char line[1024];
  int n = vsnprintf(line, sizeof line, format, args);
  // Keep the tail: the verifier's reason comes last.
  libbpfLog.append(line);
  if (libbpfLog.size() > 8192) libbpfLog.erase(0, libbpfLog.size() - 8192);
  return n;
}

// libbpf's own error numbers (LIBBPF_ERRNO__*), above the errno range.
const char* LibbpfCodeName(int err) {
  switch (err) {
    case LIBBPF_ERRNO__LIBELF: return "LIBBPF_ERRNO__LIBELF";
    case LIBBPF_ERRNO__FORMAT: return "LIBBPF_ERRNO__FORMAT";
    case LIBBPF_ERRNO__KVERSION: return "LIBBPF_ERRNO__KVERSION";
    case LIBBPF_ERRNO__ENDIAN: return "LIBBPF_ERRNO__ENDIAN";
    case LIBBPF_ERRNO__INTERNAL: return "LIBBPF_ERRNO__INTERNAL";
    case LIBBPF_ERRNO__RELOC: return "LIBBPF_ERRNO__RELOC";
    case LIBBPF_ERRNO__LOAD: return "LIBBPF_ERRNO__LOAD";
    case LIBBPF_ERRNO__VERIFY: return "LIBBPF_ERRNO__VERIFY";
    case LIBBPF_ERRNO__PROG2BIG: return "LIBBPF_ERRNO__PROG2BIG";
    case LIBBPF_ERRNO__KVER: return "LIBBPF_ERRNO__KVER";
    case LIBBPF_ERRNO__PROGTYPE: return "LIBBPF_ERRNO__PROGTYPE";
    case LIBBPF_ERRNO__WRNGPID: return "LIBBPF_ERRNO__WRNGPID";
    case LIBBPF_ERRNO__INVSEQ: return "LIBBPF_ERRNO__INVSEQ";
    case LIBBPF_ERRNO__NLPARSE: return "LIBBPF_ERRNO__NLPARSE";
    default: return nullptr;
  }
}

}  // namespace

void SetErrorClass(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) return ThrowTypeError(info.Env(), "setErrorClass expects a constructor");
  delete errorClass;
  errorClass = new Napi::FunctionReference(Napi::Persistent(info[0].As<Napi::Function>()));
  libbpf_set_print(PrintToBuffer);
}

Napi::Value SystemError(Napi::Env env, int err, const char* syscall, const std::string& what,
                        const std::string& path, const std::string& detail) {
  const char* code = LibbpfCodeName(err);
  if (code == nullptr) code = strerrorname_np(err);
  if (code == nullptr) code = "EUNKNOWN";
  char reason[256];
  libbpf_strerror(err, reason, sizeof reason);

  std::string message = what;
  if (!path.empty()) message += " '" + path + "'";
  message += ": " + std::string(reason) + " (" + code + ")";
  if (!detail.empty()) message += "\n" + detail;

  if (errorClass == nullptr) return Napi::Error::New(env, message).Value();
  Napi::Object props = Napi::Object::New(env);
  props.Set("message", message);
  props.Set("code", code);
  props.Set("errno", -err);
  props.Set("syscall", syscall);
  if (!path.empty()) props.Set("path", path);
  return errorClass->New({props});
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall, const std::string& what,
                      const std::string& path, const std::string& detail) {
  Napi::Value error = SystemError(env, err, syscall, what, path, detail);
  if (env.IsExceptionPending()) return;
  Napi::Error(env, error).ThrowAsJavaScriptException();
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
}

void BeginLibbpfLog() {
  libbpfLog.clear();
  capturing = true;
}

std::string EndLibbpfLog() {
  capturing = false;
  std::string log;
  log.swap(libbpfLog);
  while (!log.empty() && log.back() == '\n') log.pop_back();
  return log;
}

}  // namespace podmeter
