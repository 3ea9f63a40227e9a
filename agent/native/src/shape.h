// What the map behind an fd is, asked of the kernel on every call that hands
// it a buffer: the kernel copies key_size bytes from every key pointer and
// writes value_size bytes (per-CPU maps: that, rounded up to 8, for every
// possible CPU) to every value pointer, whatever length the JavaScript side
// meant. A closed fd, an fd that is not a map, an fd of another map or a
// buffer of another length is a JS exception here, before any map syscall.
#pragma once

#include <napi.h>
#include <cstddef>
#include <cstdint>
#include <string>

namespace podmeter {

struct MapShape {
  uint32_t id = 0;
  uint32_t type = 0;
  uint32_t keySize = 0;
  uint32_t valueSize = 0;   // as the map declares it
  size_t valueBytes = 0;    // what a lookup writes and an update reads (see PerCpuValueBytes)
  std::string name;

  // "map 'podmeter_peers' (id 42)"
  std::string Describe() const;
};

// Possible CPUs (libbpf, read once); negative errno when they cannot be counted.
int NumPossibleCpus();

// Whether the kernel reads and writes one value per possible CPU for this map type.
bool IsPerCpu(uint32_t mapType);

// Bytes of a value as lookup/update move it: valueSize, or for a per-CPU map
// round_up(valueSize, 8) x possible CPUs. 0 when the CPUs cannot be counted.
size_t ValueBytes(uint32_t mapType, uint32_t valueSize);

// An int32 argument (an fd, an attach type): a JS number that is a whole
// int32 (a double such as 3.5 or 2^40 would otherwise be truncated to some
// other fd); otherwise a TypeError naming the call and the argument
// ("attachCgroupLink: cgroupFd must be an integer").
bool ReadInt32(Napi::Env env, const char* fn, const char* name, const Napi::Value& v, int* out);

// The map behind `fd` (arguments fdArg, mapIdArg of the JS call `fn`), which
// must be the map with id `mapIdArg` (the caller's record of which map it
// holds). False with a JS exception pending: BpfError when the kernel cannot
// describe the fd (EBADF: closed), TypeError when the fd is not a BPF map
// (a program, a link, a file) or is another map than the id says. The fd's
// kind comes from /proc/self/fd (the kernel describes any BPF fd into any
// info struct).
bool ReadMapShape(Napi::Env env, const char* fn, const Napi::Value& fdArg, const Napi::Value& mapIdArg,
                  int* fd, MapShape* shape);

// True when `got` == `want`; otherwise a TypeError naming the call, the map
// and both sizes ("mapUpdate: key of 3 bytes for map 'x' (id 7), whose keys are 20 bytes").
// `got` is a double so that a JS size such as 2^32 + 4 or 3.5 is never taken for another.
bool CheckSize(Napi::Env env, const char* fn, const MapShape& shape, const char* what, double got, size_t want);

// True when `type` is one of `types` (count `n`); otherwise a TypeError naming the map, its type and the wanted one.
bool CheckMapType(Napi::Env env, const char* fn, const MapShape& shape, const uint32_t* types, size_t n);

// True when `fd` is a BPF object of `kind` as the kernel names its files
// ("bpf-map", "bpf-prog"; alternatives separated by '|': links are
// "bpf_link" or, on newer kernels, "bpf-link"); otherwise a JS exception is pending.
bool CheckFdKind(Napi::Env env, const char* fn, int fd, const char* kind);

// CheckFdKind without a JS exception or an allocation, for a call that asks
// about many fds: 0 when `fd` is of `kind`, EINVAL when it is anything else,
// EBADF when it is not open (or negative), otherwise readlink's errno.
int FdKindError(int fd, const char* kind);

// The bytes a map syscall will copy from or to user memory (the kernel's
// sizes, from MapShape), read here first in AddressSanitizer builds: ASan
// does not see the kernel's copy_from_user/copy_to_user, so a buffer shorter
// than the map's key or value would otherwise overflow unseen. Nothing in
// other builds.
#if defined(__SANITIZE_ADDRESS__)  // GCC
#define PODMETER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)  // clang
#define PODMETER_ASAN 1
#endif
#endif
inline void KernelTouches(const void* p, size_t n) {
#ifdef PODMETER_ASAN
  const volatile uint8_t* b = static_cast<const volatile uint8_t*>(p);
  for (size_t i = 0; i < n; i++) (void)b[i];
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace podmeter
