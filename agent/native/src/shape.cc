#include "shape.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <linux/bpf.h>
#include <unistd.h>
#include <unordered_map>

#include "errors.h"

namespace podmeter {
namespace {

std::string MapTypeName(uint32_t type) {
  const char* name = libbpf_bpf_map_type_str(static_cast<bpf_map_type>(type));
  return name != nullptr ? std::string(name) : "type " + std::to_string(type);
}

// What the kernel calls the file behind fd (readlink of /proc/self/fd/N:
// "anon_inode:bpf-map", "anon_inode:bpf-prog", "anon_inode:bpf_link",
// "/some/file", "socket:[123]"), into `target`; 0 or readlink's errno
// (EBADF for an fd that is not open: there is no /proc/self/fd/N).
int ReadFdTarget(int fd, char (&target)[256]) {
  target[0] = '\0';
  if (fd < 0) return EBADF;
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n < 0) return errno == ENOENT ? EBADF : errno;
  target[n] = '\0';
  return 0;
}

// Whether `target` is "anon_inode:" and one of `kinds` ('|'-separated).
bool TargetIsKind(const char* target, const char* kinds) {
  static const char prefix[] = "anon_inode:";
  if (strncmp(target, prefix, sizeof prefix - 1) != 0) return false;
  const char* name = target + sizeof prefix - 1;
  size_t len = strlen(name);
  for (const char* kind = kinds;; kind++) {
    const char* end = strchrnul(kind, '|');
    if (static_cast<size_t>(end - kind) == len && strncmp(kind, name, len) == 0) return true;
    if (*end == '\0') return false;
    kind = end;
  }
}

bool ReadFd(Napi::Env env, const char* fn, const Napi::Value& v, int* fd) {
  return ReadInt32(env, fn, "the fd", v, fd);
}

std::string IdText(double n) {
  char text[32];
  snprintf(text, sizeof text, "%.17g", n);
  return text;
}

}  // namespace

bool ReadInt32(Napi::Env env, const char* fn, const char* name, const Napi::Value& v, int* out) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && d == std::trunc(d) && d >= -2147483648.0 && d <= 2147483647.0) {
      *out = static_cast<int>(d);
      return true;
    }
  }
  ThrowTypeError(env, std::string(fn) + ": " + name + " must be an integer");
  return false;
}

std::string MapShape::Describe() const { return "map '" + name + "' (id " + std::to_string(id) + ")"; }

int NumPossibleCpus() {
  static int cpus = libbpf_num_possible_cpus();
  return cpus;
}

bool IsPerCpu(uint32_t mapType) {
  switch (mapType) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

size_t ValueBytes(uint32_t mapType, uint32_t valueSize) {
  if (!IsPerCpu(mapType)) return valueSize;
  int cpus = NumPossibleCpus();
  if (cpus <= 0) return 0;
  return ((static_cast<size_t>(valueSize) + 7) / 8 * 8) * static_cast<size_t>(cpus);
}

int FdKindError(int fd, const char* kind) {
  char target[256];
  int err = ReadFdTarget(fd, target);
  if (err != 0) return err;
  return TargetIsKind(target, kind) ? 0 : EINVAL;
}

bool CheckFdKind(Napi::Env env, const char* fn, int fd, const char* kind) {
  char target[256];
  int err = ReadFdTarget(fd, target);
  if (err != 0) {
    ThrowSystemError(env, err, "readlink", std::string(fn) + ": tell what fd " + std::to_string(fd) + " is",
                     "/proc/self/fd/" + std::to_string(fd));
    return false;
  }
  // `kind` may list names by '|': kernels renamed "bpf_link" to "bpf-link".
  if (TargetIsKind(target, kind)) return true;
  std::string kinds = kind;
  ThrowTypeError(env, std::string(fn) + ": fd " + std::to_string(fd) + " is " + target + ", not a " + kinds.substr(0, kinds.find('|')));
  return false;
}

bool ReadMapShape(Napi::Env env, const char* fn, const Napi::Value& fdArg, const Napi::Value& mapIdArg,
                  int* fd, MapShape* shape) {
  if (!ReadFd(env, fn, fdArg, fd)) return false;
  if (!mapIdArg.IsNumber()) {
    ThrowTypeError(env, std::string(fn) + ": the id of the map the fd should refer to must be a number");
    return false;
  }
  double wantId = mapIdArg.As<Napi::Number>().DoubleValue();
  bpf_map_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int rc = bpf_obj_get_info_by_fd(*fd, &info, &len);
  // What the fd is, before its info is believed: the kernel would describe a
  // program's or a link's fd into the same struct. The readlink this takes
  // costs more than the lookups it guards, so an fd is checked once per map
  // id it holds (a counter read per pod stays one syscall cheaper than that);
  // an fd closed and reused for another map has another id and is checked anew.
  static std::unordered_map<int, uint32_t> mapFds;
  auto known = mapFds.find(*fd);
  if (rc < 0 || known == mapFds.end() || known->second != info.id) {
    if (!CheckFdKind(env, fn, *fd, "bpf-map")) {
      mapFds.erase(*fd);
      return false;
    }
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_OBJ_GET_INFO_BY_FD)", std::string(fn) + ": describe the map of fd " + std::to_string(*fd));
      return false;
    }
    mapFds[*fd] = info.id;
  }
  shape->id = info.id;
  shape->type = info.type;
  shape->keySize = info.key_size;
  shape->valueSize = info.value_size;
  shape->name.assign(info.name, strnlen(info.name, sizeof info.name));
  shape->valueBytes = ValueBytes(info.type, info.value_size);
  if (shape->valueBytes == 0 && info.value_size != 0) {
    ThrowSystemError(env, -NumPossibleCpus(), "read", "count possible CPUs", "/sys/devices/system/cpu/possible");
    return false;
  }
  if (static_cast<double>(info.id) != wantId) {
    ThrowTypeError(env, std::string(fn) + ": fd " + std::to_string(*fd) + " is " + shape->Describe() +
                            ", not the map the caller holds (id " + IdText(wantId) + ")");
    return false;
  }
  return true;
}

bool CheckSize(Napi::Env env, const char* fn, const MapShape& shape, const char* what, double got, size_t want) {
  if (got == static_cast<double>(want)) return true;
  std::string message = std::string(fn) + ": " + what + " of " + IdText(got) + " bytes for " + shape.Describe() +
                        ", whose " + what + "s are " + std::to_string(want) + " bytes";
  if (std::string(what) == "value" && IsPerCpu(shape.type)) {
    message += " (per-CPU: " + std::to_string(shape.valueSize) + " rounded up to 8, times " +
               std::to_string(NumPossibleCpus()) + " possible CPUs)";
  }
  ThrowTypeError(env, message);
  return false;
}

bool CheckMapType(Napi::Env env, const char* fn, const MapShape& shape, const uint32_t* types, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (shape.type == types[i]) return true;
  std::string wanted;
  for (size_t i = 0; i < n; i++) wanted += (i == 0 ? "" : " or ") + MapTypeName(types[i]);
  ThrowTypeError(env, std::string(fn) + ": " + shape.Describe() + " is of type " + MapTypeName(shape.type) + ", not " + wanted);
  return false;
}

}  // namespace podmeter
