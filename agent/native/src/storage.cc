#include "storage.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <vector>
#include <linux/bpf.h>

#include "errors.h"
#include "podmeter.h"

namespace podmeter {
namespace {

int CachedPossibleCpus() {
  static int cpus = libbpf_num_possible_cpus();
  return cpus;
}

// Words of one per-CPU value read (valueSize / 8 per possible CPU); 0 with a JS exception pending when the CPUs cannot be counted.
size_t PerCpuWords(Napi::Env env, uint32_t valueSize) {
  int cpus = CachedPossibleCpus();
  if (cpus < 0) {
    ThrowSystemError(env, -cpus, "read", "count possible CPUs", "/sys/devices/system/cpu/possible");
    return 0;
  }
  return static_cast<size_t>(valueSize / 8) * cpus;
}

// Reads one cgroup storage entry (every possible CPU's value) into `out`,
// sized by the caller to valueSize / 8 words per possible CPU. Returns false
// with a JS exception pending when the lookup fails; `found` is false when
// there is no such entry (not attached, or already released).
bool LookupPerCpu(Napi::Env env, int fd, uint64_t cgroupId, bpf_attach_type attachType, std::vector<uint64_t>& out, bool& found) {
  bpf_cgroup_storage_key key;
  memset(&key, 0, sizeof key);  // the padding is part of the key
  key.cgroup_inode_id = cgroupId;
  key.attach_type = attachType;
  // Per-CPU values come back as one value per possible CPU, each rounded up
  // to 8 bytes; podmeter's values are u64s only, so no padding between CPUs.
  static_assert(sizeof(podmeter_slots) % 8 == 0, "counter slots must stay u64s");
  int rc = bpf_map_lookup_elem(fd, &key, out.data());
  found = rc == 0;
  if (rc < 0 && rc != -ENOENT) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "read cgroup counters");
    return false;
  }
  return true;
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
  bool lossless;
  uint64_t cgroupId = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  uint32_t valueSize = info[3].As<Napi::Number>().Uint32Value();
  if (valueSize == 0 || valueSize % 8 != 0 || valueSize > 4096) {
    ThrowTypeError(env, "storageLookup: valueSize must be a multiple of 8 bytes, at most 4096");
    return env.Undefined();
  }
  size_t n = PerCpuWords(env, valueSize);
  if (n == 0) return env.Undefined();
  std::vector<uint64_t> values(n);
  bool found;
  auto attachType = static_cast<bpf_attach_type>(info[2].As<Napi::Number>().Uint32Value());
  if (!LookupPerCpu(env, info[0].As<Napi::Number>().Int32Value(), cgroupId, attachType, values, found) || !found) return env.Undefined();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, values.size() * 8);
  memcpy(buffer.Data(), values.data(), values.size() * 8);
  return Napi::TypedArrayOf<uint64_t>::New(env, values.size(), buffer, 0, napi_biguint64_array);
}

// One cgroup's entries of both directions, the first `words` u64s of each
// summed over CPUs (wrapping at 2^64 like the kernel's counters): ingress
// words, then egress words. A missing direction reads as zeros; undefined
// when neither exists. When the sums equal `previous` (an idle cgroup),
// `previous` itself comes back: the caller skips all per-slot work.
Napi::Value StorageSums(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsBigInt() || !info[2].IsNumber() || !info[3].IsNumber() || !(info[4].IsUndefined() || info[4].IsTypedArray())) {
    ThrowTypeError(env, "storageSums(mapFd: number, cgroupId: bigint, valueSize: number, words: number, previous?: BigUint64Array)");
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  bool lossless;
  uint64_t cgroupId = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  uint32_t valueSize = info[2].As<Napi::Number>().Uint32Value();
  size_t words = info[3].As<Napi::Number>().Uint32Value();
  if (valueSize == 0 || valueSize % 8 != 0 || valueSize > 4096 || words > valueSize / 8) {
    ThrowTypeError(env, "storageSums: valueSize must be a multiple of 8 bytes, at most 4096, and words at most valueSize / 8");
    return env.Undefined();
  }
  size_t perCpu = valueSize / 8;
  size_t n = PerCpuWords(env, valueSize);
  if (n == 0) return env.Undefined();
  std::vector<uint64_t> values(n);
  std::vector<uint64_t> sums(2 * words, 0);
  bool any = false;
  const bpf_attach_type directions[] = {BPF_CGROUP_INET_INGRESS, BPF_CGROUP_INET_EGRESS};
  for (size_t d = 0; d < 2; d++) {
    bool found;
    if (!LookupPerCpu(env, fd, cgroupId, directions[d], values, found)) return env.Undefined();
    if (!found) continue;
    any = true;
    uint64_t* out = sums.data() + d * words;
    for (size_t cpu = 0; cpu < values.size(); cpu += perCpu) {
      for (size_t i = 0; i < words; i++) out[i] += values[cpu + i];
    }
  }
  if (!any) return env.Undefined();
  if (info[4].IsTypedArray()) {
    Napi::TypedArray previous = info[4].As<Napi::TypedArray>();
    if (previous.TypedArrayType() == napi_biguint64_array && previous.ElementLength() == sums.size() &&
        memcmp(static_cast<uint8_t*>(previous.ArrayBuffer().Data()) + previous.ByteOffset(), sums.data(), sums.size() * 8) == 0) {
      return previous;
    }
  }
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, sums.size() * 8);
  memcpy(buffer.Data(), sums.data(), sums.size() * 8);
  return Napi::TypedArrayOf<uint64_t>::New(env, sums.size(), buffer, 0, napi_biguint64_array);
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
