#include "elements.h"

#include <bpf/bpf.h>
#include <cerrno>
#include <cstring>
#include <vector>

#include "errors.h"

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

Napi::Value MapUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t *key, *value;
  size_t keySize, valueSize;
  if (!info[0].IsNumber() || !Bytes(info[1], &key, &keySize) || !Bytes(info[2], &value, &valueSize)) {
    ThrowTypeError(env, "mapUpdate(fd: number, key: Uint8Array, value: Uint8Array)");
    return env.Undefined();
  }
  int rc = bpf_map_update_elem(info[0].As<Napi::Number>().Int32Value(), key, value, BPF_ANY);
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_MAP_UPDATE_ELEM)", "update map element");
  return env.Undefined();
}

Napi::Value MapDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* key;
  size_t keySize;
  if (!info[0].IsNumber() || !Bytes(info[1], &key, &keySize)) {
    ThrowTypeError(env, "mapDelete(fd: number, key: Uint8Array)");
    return env.Undefined();
  }
  int rc = bpf_map_delete_elem(info[0].As<Napi::Number>().Int32Value(), key);
  if (rc == -ENOENT) return Napi::Boolean::New(env, false);
  if (rc < 0) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_DELETE_ELEM)", "delete map element");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const uint8_t* key;
  size_t keySize;
  if (!info[0].IsNumber() || !Bytes(info[1], &key, &keySize) || !info[2].IsNumber()) {
    ThrowTypeError(env, "mapLookup(fd: number, key: Uint8Array, valueSize: number)");
    return env.Undefined();
  }
  Napi::Uint8Array value = Napi::Uint8Array::New(env, info[2].As<Napi::Number>().Uint32Value());
  int rc = bpf_map_lookup_elem(info[0].As<Napi::Number>().Int32Value(), key, value.Data());
  if (rc == -ENOENT) return env.Undefined();
  if (rc < 0) {
    ThrowSystemError(env, -rc, "bpf(BPF_MAP_LOOKUP_ELEM)", "look up map element");
    return env.Undefined();
  }
  return value;
}

Napi::Value MapKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) {
    ThrowTypeError(env, "mapKeys(fd: number, keySize: number)");
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  size_t keySize = info[1].As<Napi::Number>().Uint32Value();
  std::vector<uint8_t> key(keySize), next(keySize);
  Napi::Array keys = Napi::Array::New(env);
  const void* prev = nullptr;  // NULL asks for the first key
  for (;;) {
    int rc = bpf_map_get_next_key(fd, prev, next.data());
    if (rc == -ENOENT) break;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_MAP_GET_NEXT_KEY)", "list map keys");
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
