#include "elements.h"

#include <bpf/bpf.h>
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

}  // namespace podmeter
