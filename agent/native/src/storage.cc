#include "storage.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstring>
#include <vector>
#include <linux/bpf.h>

#include "errors.h"
#include "podmeter.h"
#include "shape.h"

namespace podmeter {
namespace {

const uint32_t kPerCpuStorage[] = {BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE};
const uint32_t kAnyStorage[] = {BPF_MAP_TYPE_CGROUP_STORAGE, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE};

// The map behind the fd must be a cgroup storage map (per-CPU, when `perCpu`)
// keyed by bpf_cgroup_storage_key, with values of `valueSize` bytes unless
// that is 0: the buffers below are sized from these, and the kernel writes
// the map's own sizes into them. False with a JS exception pending.
bool ReadStorageShape(Napi::Env env, const char* fn, const Napi::Value& fdArg, const Napi::Value& mapIdArg, bool perCpu,
                      uint32_t valueSize, int* fd, MapShape* shape) {
  if (!ReadMapShape(env, fn, fdArg, mapIdArg, fd, shape)) return false;
  if (perCpu ? !CheckMapType(env, fn, *shape, kPerCpuStorage, 1) : !CheckMapType(env, fn, *shape, kAnyStorage, 2)) return false;
  if (!CheckSize(env, fn, *shape, "key", sizeof(bpf_cgroup_storage_key), shape->keySize)) return false;
  return valueSize == 0 || CheckSize(env, fn, *shape, "value", valueSize, shape->valueSize);
}

// Reads one cgroup storage entry (every possible CPU's value) into `out`,
// sized by the caller to the map's value bytes (shape.h: valueSize / 8 words
// per possible CPU). Returns false with a JS exception pending when the
// lookup fails; `found` is false when there is no such entry (not attached,
// or already released).
bool LookupPerCpu(Napi::Env env, int fd, const MapShape& shape, uint64_t cgroupId, bpf_attach_type attachType,
                  std::vector<uint64_t>& out, bool& found) {
  bpf_cgroup_storage_key key;
  memset(&key, 0, sizeof key);  // the padding is part of the key
  key.cgroup_inode_id = cgroupId;
  key.attach_type = attachType;
  // Per-CPU values come back as one value per possible CPU, each rounded up
  // to 8 bytes; podmeter's values are u64s only, so no padding between CPUs.
  static_assert(sizeof(podmeter_slots) % 8 == 0, "counter slots must stay u64s");
  if (out.size() * 8 != shape.valueBytes) {  // the callers' invariant, kept where the kernel writes
    ThrowTypeError(env, "read cgroup counters: a buffer of " + std::to_string(out.size() * 8) + " bytes for " +
                            shape.Describe() + ", whose values are " + std::to_string(shape.valueBytes) + " bytes");
    return false;
  }
  KernelTouches(&key, shape.keySize);
  KernelTouches(out.data(), shape.valueBytes);
  int rc = bpf_map_lookup_elem(fd, &key, out.data());
  found = rc == 0;
  if (rc < 0 && rc != -ENOENT) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "read cgroup counters of " + shape.Describe());
    return false;
  }
  return true;
}

}  // namespace

Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int cpus = NumPossibleCpus();
  if (cpus < 0) {
    ThrowSystemError(info.Env(), -cpus, "read", "count possible CPUs", "/sys/devices/system/cpu/possible");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), cpus);
}

Napi::Value StorageLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsBigInt() || !info[2].IsNumber() || !info[3].IsNumber()) {
    ThrowTypeError(env, "storageLookup(mapFd: number, cgroupId: bigint, attachType: number, valueSize: number, mapId: number)");
    return env.Undefined();
  }
  bool lossless;
  uint64_t cgroupId = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  double valueSize = info[3].As<Napi::Number>().DoubleValue();
  if (!(valueSize >= 8 && valueSize <= 4096 && valueSize == static_cast<double>(static_cast<uint32_t>(valueSize) / 8 * 8))) {
    ThrowTypeError(env, "storageLookup: valueSize must be a multiple of 8 bytes, at most 4096");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadStorageShape(env, "storageLookup", info[0], info[4], true, static_cast<uint32_t>(valueSize), &fd, &shape)) return env.Undefined();
  std::vector<uint64_t> values(shape.valueBytes / 8);
  bool found;
  auto attachType = static_cast<bpf_attach_type>(info[2].As<Napi::Number>().Uint32Value());
  if (!LookupPerCpu(env, fd, shape, cgroupId, attachType, values, found) || !found) return env.Undefined();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, values.size() * 8);
  memcpy(buffer.Data(), values.data(), values.size() * 8);
  return Napi::TypedArrayOf<uint64_t>::New(env, values.size(), buffer, 0, napi_biguint64_array);
}

namespace {

// The arguments storageSums and storageSumsMany share: valueSize (arg 2),
// words (arg 3) and the map (fd arg 0, id arg 5). False with a JS exception pending.
bool ReadSumsArgs(const Napi::CallbackInfo& info, const char* fn, int* fd, MapShape* shape, size_t* words) {
  Napi::Env env = info.Env();
  double valueSize = info[2].As<Napi::Number>().DoubleValue();
  double wordsArg = info[3].As<Napi::Number>().DoubleValue();
  if (!(valueSize >= 8 && valueSize <= 4096 && valueSize == static_cast<double>(static_cast<uint32_t>(valueSize) / 8 * 8)) ||
      !(wordsArg >= 0 && wordsArg <= valueSize / 8 && wordsArg == static_cast<double>(static_cast<uint32_t>(wordsArg)))) {
    ThrowTypeError(env, std::string(fn) + ": valueSize must be a multiple of 8 bytes, at most 4096, and words a whole number at most valueSize / 8");
    return false;
  }
  if (!ReadStorageShape(env, fn, info[0], info[5], true, static_cast<uint32_t>(valueSize), fd, shape)) return false;
  *words = static_cast<size_t>(wordsArg);
  return true;
}

// One cgroup's entries of both directions, the first `words` u64s of each
// summed over CPUs (wrapping at 2^64 like the kernel's counters), in enum
// podmeter_direction's order: ingress words, then egress words. A missing
// direction reads as zeros; undefined when neither exists. When the sums
// equal `previous` (an idle cgroup), `previous` itself comes back: the
// caller skips all per-slot work. An
// empty Value with a JS exception pending when a lookup fails. `values` is
// scratch space of the map's value bytes.
Napi::Value SumsOf(Napi::Env env, int fd, const MapShape& shape, uint64_t cgroupId, size_t words,
                   const Napi::Value& previous, std::vector<uint64_t>& values) {
  size_t perCpu = shape.valueSize / 8;
  std::vector<uint64_t> sums(2 * words, 0);
  bool any = false;
  // Each direction's words at its place in enum podmeter_direction (bpf/podmeter.h), the order the
  // TypeScript reads them in (contract.generated.ts: PODMETER_DIRECTIONS).
  bpf_attach_type directions[2];
  directions[PODMETER_INGRESS] = BPF_CGROUP_INET_INGRESS;
  directions[PODMETER_EGRESS] = BPF_CGROUP_INET_EGRESS;
  for (size_t d = 0; d < 2; d++) {
    bool found;
    if (!LookupPerCpu(env, fd, shape, cgroupId, directions[d], values, found)) return Napi::Value();
    if (!found) continue;
    any = true;
    uint64_t* out = sums.data() + d * words;
    for (size_t cpu = 0; cpu + perCpu <= values.size(); cpu += perCpu) {
      for (size_t i = 0; i < words; i++) out[i] += values[cpu + i];
    }
  }
  if (!any) return env.Undefined();
  if (previous.IsTypedArray()) {
    Napi::TypedArray last = previous.As<Napi::TypedArray>();
    if (last.TypedArrayType() == napi_biguint64_array && last.ElementLength() == sums.size() &&
        memcmp(static_cast<uint8_t*>(last.ArrayBuffer().Data()) + last.ByteOffset(), sums.data(), sums.size() * 8) == 0) {
      return previous;
    }
  }
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, sums.size() * 8);
  memcpy(buffer.Data(), sums.data(), sums.size() * 8);
  return Napi::TypedArrayOf<uint64_t>::New(env, sums.size(), buffer, 0, napi_biguint64_array);
}

}  // namespace

Napi::Value StorageSums(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsBigInt() || !info[2].IsNumber() || !info[3].IsNumber() || !(info[4].IsUndefined() || info[4].IsTypedArray())) {
    ThrowTypeError(env, "storageSums(mapFd: number, cgroupId: bigint, valueSize: number, words: number, previous: BigUint64Array | undefined, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  size_t words;
  if (!ReadSumsArgs(info, "storageSums", &fd, &shape, &words)) return env.Undefined();
  bool lossless;
  uint64_t cgroupId = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  std::vector<uint64_t> values(shape.valueBytes / 8);
  Napi::Value sums = SumsOf(env, fd, shape, cgroupId, words, info[4], values);
  return env.IsExceptionPending() ? env.Undefined() : sums;
}

// storageSums of many cgroups: the map is checked once for all of them (the
// check is a syscall, a third of what a cgroup's read costs).
Napi::Value StorageSumsMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* usage = "storageSumsMany(mapFd: number, cgroupIds: bigint[], valueSize: number, words: number, previous: (BigUint64Array | undefined)[], mapId: number)";
  if (!info[1].IsArray() || !info[2].IsNumber() || !info[3].IsNumber() || !info[4].IsArray() ||
      info[1].As<Napi::Array>().Length() != info[4].As<Napi::Array>().Length()) {
    ThrowTypeError(env, std::string(usage) + ": cgroupIds and previous of the same length");
    return env.Undefined();
  }
  Napi::Array ids = info[1].As<Napi::Array>();
  Napi::Array previous = info[4].As<Napi::Array>();
  uint32_t n = ids.Length();
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value last = previous.Get(i);
    if (!ids.Get(i).IsBigInt() || !(last.IsUndefined() || last.IsTypedArray())) {
      ThrowTypeError(env, std::string(usage) + ": element " + std::to_string(i) + " is not a bigint and a BigUint64Array or undefined");
      return env.Undefined();
    }
  }
  int fd;
  MapShape shape;
  size_t words;
  if (!ReadSumsArgs(info, "storageSumsMany", &fd, &shape, &words)) return env.Undefined();
  std::vector<uint64_t> values(shape.valueBytes / 8);
  Napi::Array out = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) {
    bool lossless;
    uint64_t cgroupId = ids.Get(i).As<Napi::BigInt>().Uint64Value(&lossless);
    Napi::Value sums = SumsOf(env, fd, shape, cgroupId, words, previous.Get(i), values);
    if (env.IsExceptionPending()) return env.Undefined();
    out.Set(i, sums);
  }
  return out;
}

Napi::Value StorageKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  MapShape shape;
  if (!ReadStorageShape(env, "storageKeys", info[0], info[1], false, 0, &fd, &shape)) return env.Undefined();
  Napi::Array keys = Napi::Array::New(env);
  bpf_cgroup_storage_key key, next;
  memset(&key, 0, sizeof key);
  memset(&next, 0, sizeof next);
  const void* prev = nullptr;  // NULL asks for the first key
  for (;;) {
    if (prev != nullptr) KernelTouches(prev, shape.keySize);
    KernelTouches(&next, shape.keySize);
    int rc = bpf_map_get_next_key(fd, prev, &next);
    if (rc == -ENOENT) break;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_GET_NEXT_KEY)", "list cgroup storage keys of " + shape.Describe());
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
