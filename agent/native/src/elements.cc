#include "elements.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "errors.h"
#include "shape.h"

namespace podmeter {
namespace {

bool Bytes(const Napi::Value& v, const uint8_t** data, size_t* size) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) return false;
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  *data = a.Data();
  *size = a.ByteLength();
  return true;
}

// The kernel's answer when a map type has no batch operations (ENOTSUPP,
// kernel-internal 524), or a kernel has no batch commands at all (< 5.6: EINVAL).
bool NoBatch(int rc) { return rc == -524 || rc == -EOPNOTSUPP || rc == -EINVAL; }

// Entries per BPF_MAP_LOOKUP_BATCH call: a hash map hands over whole buckets,
// so a call fails ENOSPC only if one bucket holds more (then it is doubled).
constexpr uint32_t kBatchEntries = 4096;

// Keys and values of every entry, walked one key at a time (maps without batch
// operations). False with a JS exception pending.
bool WalkEntries(Napi::Env env, int fd, const MapShape& shape, std::vector<uint8_t>& keys,
                 std::vector<uint8_t>& values) {
  std::vector<uint8_t> key(shape.keySize), next(shape.keySize), value(shape.valueBytes);
  const void* prev = nullptr;  // NULL asks for the first key
  for (;;) {
    if (prev != nullptr) KernelTouches(prev, shape.keySize);
    KernelTouches(next.data(), shape.keySize);
    int rc = bpf_map_get_next_key(fd, prev, next.data());
    if (rc == -ENOENT) return true;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_GET_NEXT_KEY)", "list keys of " + shape.Describe());
      return false;
    }
    KernelTouches(next.data(), shape.keySize);
    KernelTouches(value.data(), shape.valueBytes);
    rc = bpf_map_lookup_elem(fd, next.data(), value.data());
    if (rc == 0) {
      keys.insert(keys.end(), next.begin(), next.end());
      values.insert(values.end(), value.begin(), value.end());
    } else if (rc != -ENOENT) {  // ENOENT: deleted since it was listed
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "look up element of " + shape.Describe());
      return false;
    }
    key.swap(next);
    prev = key.data();
  }
}

// Keys and values of every entry in BPF_MAP_LOOKUP_BATCH calls, or walked when
// the map has none. False with a JS exception pending.
bool ReadEntries(Napi::Env env, int fd, const MapShape& shape, std::vector<uint8_t>& keys,
                 std::vector<uint8_t>& values) {
  // The batch position the kernel hands back (a bucket index for a hash map; key-sized for others).
  std::vector<uint8_t> in(std::max<size_t>(shape.keySize, 8)), out(in.size());
  uint32_t chunk = kBatchEntries;
  bool first = true;
  for (;;) {
    size_t k = keys.size(), v = values.size();
    keys.resize(k + size_t(chunk) * shape.keySize);
    values.resize(v + size_t(chunk) * shape.valueBytes);
    uint32_t count = chunk;
    if (!first) KernelTouches(in.data(), in.size());
    KernelTouches(out.data(), out.size());
    KernelTouches(keys.data() + k, size_t(chunk) * shape.keySize);
    KernelTouches(values.data() + v, size_t(chunk) * shape.valueBytes);
    int rc = bpf_map_lookup_batch(fd, first ? nullptr : in.data(), out.data(), keys.data() + k, values.data() + v,
                                  &count, nullptr);
    if (rc < 0 && rc != -ENOENT) count = 0;
    keys.resize(k + size_t(count) * shape.keySize);
    values.resize(v + size_t(count) * shape.valueBytes);
    if (rc == -ENOENT) return true;  // the last batch (count may be > 0)
    if (first && NoBatch(rc)) return WalkEntries(env, fd, shape, keys, values);
    if (rc == -ENOSPC && chunk < (1u << 24)) {  // a bucket larger than a batch: again, with room for it
      chunk *= 2;
      continue;
    }
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_BATCH)", "read entries of " + shape.Describe());
      return false;
    }
    in.swap(out);
    first = false;
  }
}

Napi::Uint8Array Copy(Napi::Env env, const std::vector<uint8_t>& bytes) {
  Napi::Uint8Array a = Napi::Uint8Array::New(env, bytes.size());
  if (!bytes.empty()) memcpy(a.Data(), bytes.data(), bytes.size());
  return a;
}

// BPF_MAP_UPDATE_ELEM off the JS thread, on a dup of the checked fd (so the
// caller closing its fd meanwhile cannot redirect the write) with copies of
// the key and value.
class UpdateWorker : public Napi::AsyncWorker {
 public:
  UpdateWorker(Napi::Env env, int fd, MapShape shape, const uint8_t* key, const uint8_t* value)
      : Napi::AsyncWorker(env, "podmeter.mapUpdateAsync"),
        deferred_(Napi::Promise::Deferred::New(env)),
        fd_(fd),
        shape_(std::move(shape)),
        key_(key, key + shape_.keySize),
        value_(value, value + shape_.valueBytes) {}
  ~UpdateWorker() override { close(fd_); }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    KernelTouches(key_.data(), shape_.keySize);
    KernelTouches(value_.data(), shape_.valueBytes);
    rc_ = bpf_map_update_elem(fd_, key_.data(), value_.data(), BPF_ANY);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (rc_ == 0) return deferred_.Resolve(env.Undefined());
    Napi::Value error = SystemError(env, -rc_, "bpf(BPF_MAP_UPDATE_ELEM)", "update element of " + shape_.Describe());
    if (env.IsExceptionPending()) error = env.GetAndClearPendingException().Value();
    deferred_.Reject(error);
  }

 private:
  Napi::Promise::Deferred deferred_;
  int fd_;
  MapShape shape_;
  std::vector<uint8_t> key_, value_;
  int rc_ = 0;
};

}  // namespace

// Every function here first checks its buffers against the map's own key and
// value sizes (shape.h): the kernel trusts the pointers it is given.

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t *key, *value;
  size_t keySize, valueSize;
  if (!Bytes(info[1], &key, &keySize) || !Bytes(info[2], &value, &valueSize)) {
    ThrowTypeError(env, "mapUpdate(fd: number, key: Uint8Array, value: Uint8Array, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapUpdate", info[0], info[3], &fd, &shape) ||
      !CheckSize(env, "mapUpdate", shape, "key", keySize, shape.keySize) ||
      !CheckSize(env, "mapUpdate", shape, "value", valueSize, shape.valueBytes)) {
    return env.Undefined();
  }
  KernelTouches(key, shape.keySize);
  KernelTouches(value, shape.valueBytes);
  int rc = bpf_map_update_elem(fd, key, value, BPF_ANY);
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_MAP_UPDATE_ELEM)", "update element of " + shape.Describe());
  return env.Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* key;
  size_t keySize;
  if (!Bytes(info[1], &key, &keySize)) {
    ThrowTypeError(env, "mapDelete(fd: number, key: Uint8Array, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapDelete", info[0], info[2], &fd, &shape) ||
      !CheckSize(env, "mapDelete", shape, "key", keySize, shape.keySize)) {
    return env.Undefined();
  }
  KernelTouches(key, shape.keySize);
  int rc = bpf_map_delete_elem(fd, key);
  if (rc == -ENOENT) return Napi::Boolean::New(env, false);
  if (rc < 0) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_DELETE_ELEM)", "delete element of " + shape.Describe());
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* key;
  size_t keySize;
  if (!Bytes(info[1], &key, &keySize) || !info[2].IsNumber()) {
    ThrowTypeError(env, "mapLookup(fd: number, key: Uint8Array, valueSize: number, mapId: number)");
    return env.Undefined();
  }
  double valueSize = info[2].As<Napi::Number>().DoubleValue();
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapLookup", info[0], info[3], &fd, &shape) ||
      !CheckSize(env, "mapLookup", shape, "key", keySize, shape.keySize)) {
    return env.Undefined();
  }
  if (!CheckSize(env, "mapLookup", shape, "value", valueSize, shape.valueBytes)) return env.Undefined();
  Napi::Uint8Array value = Napi::Uint8Array::New(env, shape.valueBytes);
  KernelTouches(key, shape.keySize);
  KernelTouches(value.Data(), shape.valueBytes);
  int rc = bpf_map_lookup_elem(fd, key, value.Data());
  if (rc == -ENOENT) return env.Undefined();
  if (rc < 0) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "look up element of " + shape.Describe());
    return env.Undefined();
  }
  return value;
}

Napi::Value MapKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsNumber() || !(info[3].IsUndefined() || info[3].IsNumber())) {
    ThrowTypeError(env, "mapKeys(fd: number, keySize: number, mapId: number, limit?: number)");
    return env.Undefined();
  }
  double requested = info[1].As<Napi::Number>().DoubleValue();
  // At most `limit` keys (e.g. 1: is the map empty?); all when absent.
  double limit = info[3].IsUndefined() ? -1 : info[3].As<Napi::Number>().DoubleValue();
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapKeys", info[0], info[2], &fd, &shape) ||
      !CheckSize(env, "mapKeys", shape, "key", requested, shape.keySize)) {
    return env.Undefined();
  }
  size_t keySize = shape.keySize;
  std::vector<uint8_t> key(keySize), next(keySize);
  Napi::Array keys = Napi::Array::New(env);
  const void* prev = nullptr;  // NULL asks for the first key
  while (limit < 0 || keys.Length() < limit) {
    if (prev != nullptr) KernelTouches(prev, shape.keySize);
    KernelTouches(next.data(), shape.keySize);
    int rc = bpf_map_get_next_key(fd, prev, next.data());
    if (rc == -ENOENT) break;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_GET_NEXT_KEY)", "list keys of " + shape.Describe());
      return env.Undefined();
    }
    Napi::Uint8Array k = Napi::Uint8Array::New(env, keySize);
    memcpy(k.Data(), next.data(), keySize);
    keys.Set(keys.Length(), k);
    key.swap(next);
    prev = key.data();
  }
  return keys;
}

Napi::Value MapEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsNumber() || !info[2].IsNumber()) {
    ThrowTypeError(env, "mapEntries(fd: number, keySize: number, valueSize: number, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapEntries", info[0], info[3], &fd, &shape) ||
      !CheckSize(env, "mapEntries", shape, "key", info[1].As<Napi::Number>().DoubleValue(), shape.keySize) ||
      !CheckSize(env, "mapEntries", shape, "value", info[2].As<Napi::Number>().DoubleValue(), shape.valueBytes)) {
    return env.Undefined();
  }
  std::vector<uint8_t> keys, values;
  if (!ReadEntries(env, fd, shape, keys, values)) return env.Undefined();
  Napi::Object out = Napi::Object::New(env);
  out.Set("count", Napi::Number::New(env, shape.keySize == 0 ? 0 : double(keys.size() / shape.keySize)));
  out.Set("keys", Copy(env, keys));
  out.Set("values", Copy(env, values));
  return out;
}

Napi::Value MapDeleteKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* keys;
  size_t length;
  if (!Bytes(info[1], &keys, &length)) {
    ThrowTypeError(env, "mapDeleteKeys(fd: number, keys: Uint8Array, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapDeleteKeys", info[0], info[2], &fd, &shape)) return env.Undefined();
  if (shape.keySize == 0 || length % shape.keySize != 0) {
    ThrowTypeError(env, "mapDeleteKeys: keys of " + std::to_string(length) + " bytes for " + shape.Describe() +
                            ", not a whole number of its " + std::to_string(shape.keySize) + "-byte keys");
    return env.Undefined();
  }
  uint32_t total = length / shape.keySize, done = 0, deleted = 0;
  bool batch = true;
  while (done < total) {
    const uint8_t* at = keys + size_t(done) * shape.keySize;
    uint32_t count = total - done;
    KernelTouches(at, size_t(count) * shape.keySize);
    int rc = batch ? bpf_map_delete_batch(fd, at, &count, nullptr) : bpf_map_delete_elem(fd, at);
    if (batch && NoBatch(rc) && count == 0) {
      batch = false;
      continue;
    }
    if (!batch) count = rc == 0 ? 1 : 0;
    done += count;
    deleted += count;
    if (rc == -ENOENT) done++;  // the key after the deleted ones was not there: skip it
    else if (rc < 0) {
      ThrowSystemError(env, -rc, batch ? "bpf(BPF_MAP_DELETE_BATCH)" : "bpf(BPF_MAP_DELETE_ELEM)",
                       "delete elements of " + shape.Describe());
      return env.Undefined();
    }
  }
  return Napi::Number::New(env, deleted);
}

Napi::Value MapUpdateAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t *key, *value;
  size_t keySize, valueSize;
  if (!Bytes(info[1], &key, &keySize) || !Bytes(info[2], &value, &valueSize)) {
    ThrowTypeError(env, "mapUpdateAsync(fd: number, key: Uint8Array, value: Uint8Array, mapId: number)");
    return env.Undefined();
  }
  int fd;
  MapShape shape;
  if (!ReadMapShape(env, "mapUpdateAsync", info[0], info[3], &fd, &shape) ||
      !CheckSize(env, "mapUpdateAsync", shape, "key", keySize, shape.keySize) ||
      !CheckSize(env, "mapUpdateAsync", shape, "value", valueSize, shape.valueBytes)) {
    return env.Undefined();
  }
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    ThrowSystemError(env, errno, "fcntl(F_DUPFD_CLOEXEC)", "update element of " + shape.Describe());
    return env.Undefined();
  }
  auto* worker = new UpdateWorker(env, dup, shape, key, value);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace podmeter
