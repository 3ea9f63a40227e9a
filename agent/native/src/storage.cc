#include "storage.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <linux/bpf.h>

#include "errors.h"
#include "podmeter.h"

namespace podmeter {
namespace {

int CachedPossibleCpus() {
  static int cpus = libbpf_num_possible_cpus();
  return cpus;
}

}  // namespace

Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int cpus = CachedPossibleCpus();
  if (cpus < 0) {
    ThrowSystemError(info.Env(), -cpus, "read", "count possible CPUs", "/sys/devices/system/cpu/possible");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), cpus);
}

Napi::Value StorageLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBigInt() || !info[2].IsNumber() || !info[3].IsNumber()) {
    ThrowTypeError(env, "storageLookup(mapFd: number, cgroupId: bigint, attachType: number, valueSize: number)");
    return env.Undefined();
  }
  int cpus = CachedPossibleCpus();
  bool lossless;
  bpf_cgroup_storage_key key;
  memset(&key, 0, sizeof key);  // the padding is part of the key
  key.cgroup_inode_id = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  key.attach_type = info[2].As<Napi::Number>().Uint32Value();
  // Per-CPU values come back as one value per possible CPU, each rounded up
  // to 8 bytes; podmeter's values are u64s only, so no padding between CPUs.
  uint32_t valueSize = info[3].As<Napi::Number>().Uint32Value();
  if (valueSize == 0 || valueSize % 8 != 0 || valueSize > 4096) {
    ThrowTypeError(env, "storageLookup: valueSize must be a multiple of 8 bytes, at most 4096");
    return env.Undefined();
  }
  static_assert(sizeof(podmeter_slots) % 8 == 0, "counter slots must stay u64s");
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, static_cast<size_t>(valueSize) * cpus);
  int rc = bpf_map_lookup_elem(info[0].As<Napi::Number>().Int32Value(), &key, buffer.Data());
  if (rc < 0) {
    if (rc == -ENOENT) return env.Undefined();  // not attached, or already released
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "read cgroup counters");
    return env.Undefined();
  }
  return Napi::TypedArrayOf<uint64_t>::New(env, (valueSize / 8) * cpus, buffer, 0, napi_biguint64_array);
}

Napi::Value StorageKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, "storageKeys(mapFd: number)");
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Array keys = Napi::Array::New(env);
  bpf_cgroup_storage_key key, next;
  memset(&key, 0, sizeof key);
  memset(&next, 0, sizeof next);
  const void* prev = nullptr;  // NULL asks for the first key
  for (;;) {
    int rc = bpf_map_get_next_key(fd, prev, &next);
    if (rc == -ENOENT) break;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_GET_NEXT_KEY)", "list cgroup storage keys");
      return env.Undefined();
    }
    Napi::Object k = Napi::Object::New(env);
    k.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(next.cgroup_inode_id)));
    k.Set("attachType", Napi::Number::New(env, next.attach_type));
    keys.Set(keys.Length(), k);
    key = next;
    prev = &key;
  }
  return keys;
}

}  // namespace podmeter
