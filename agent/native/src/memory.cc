// podmeter_memory: gives the C allocator's free pages back to the kernel.
// Its own addon (no libbpf), so the operator loads it as the agent does.
//
// glibc's malloc keeps freed memory inside its heap: free() returns pages
// only from the heap's top, so the buffers of many connections that closed
// (OpenSSL's, node's per-socket ones, 16-64 KiB each) stay resident once a
// longer-lived allocation sits above them. malloc_trim(0) releases every
// free page of every arena (MADV_DONTNEED), whatever sits above it; what is
// in use is not touched. Measured in test/http/hostile-input.test.ts (README,
// "Hostile input").
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace podmeter {

// () -> true if memory was given back, false if none could be, undefined when
// the C library has no malloc_trim (musl: its free() unmaps on its own).
Napi::Value TrimMemory(const Napi::CallbackInfo& info) {
#if defined(__GLIBC__)
  return Napi::Boolean::New(info.Env(), malloc_trim(0) != 0);
#else
  return info.Env().Undefined();
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("trimMemory", Napi::Function::New(env, TrimMemory, "trimMemory"));
  return exports;
}

NODE_API_MODULE(podmeter_memory, Init)

}  // namespace podmeter
