#include "inventory.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#include "errors.h"
#include "shape.h"

namespace podmeter {
namespace {

std::string TypeName(const char* known, unsigned type) {
  return known != nullptr ? std::string(known) : "unknown(" + std::to_string(type) + ")";
}

// memlock as the kernel reports it in /proc/self/fdinfo/<fd> (bytes); -1 if absent.
double ReadMemlock(int fd) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  FILE* f = fopen(path, "re");
  if (f == nullptr) return -1;
  char line[256];
  double memlock = -1;
  while (fgets(line, sizeof line, f) != nullptr) {
    unsigned long long value;
    if (sscanf(line, "memlock: %llu", &value) == 1) {
      memlock = static_cast<double>(value);
      break;
    }
  }
  fclose(f);
  return memlock;
}

// Fills `out` from a map fd; returns 0 or a positive errno.
int DescribeMap(Napi::Env env, int fd, Napi::Object out) {
  bpf_map_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (rc < 0) return -rc;
  out.Set("id", info.id);
  out.Set("name", info.name);
  out.Set("type", info.type);
  out.Set("typeName", TypeName(libbpf_bpf_map_type_str(static_cast<bpf_map_type>(info.type)), info.type));
  out.Set("keySize", info.key_size);
  out.Set("valueSize", info.value_size);
  out.Set("valueBytes", static_cast<double>(ValueBytes(info.type, info.value_size)));
  out.Set("maxEntries", info.max_entries);
  out.Set("flags", info.map_flags);
  out.Set("memlock", ReadMemlock(fd));
  out.Set("btfId", info.btf_id);
  (void)env;
  return 0;
}

int DescribeProgram(Napi::Env env, int fd, Napi::Object out) {
  bpf_prog_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (rc < 0) return -rc;
  // Second call for the ids of the maps the program uses.
  std::vector<__u32> mapIds(info.nr_map_ids);
  if (!mapIds.empty()) {
    __u32 count = info.nr_map_ids;
    memset(&info, 0, sizeof info);
    info.nr_map_ids = count;
    info.map_ids = reinterpret_cast<__u64>(mapIds.data());
    len = sizeof info;
    rc = bpf_obj_get_info_by_fd(fd, &info, &len);
    if (rc < 0) return -rc;
    mapIds.resize(std::min(count, info.nr_map_ids));
  }
  out.Set("id", info.id);
  out.Set("name", info.name);
  out.Set("type", info.type);
  out.Set("typeName", TypeName(libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(info.type)), info.type));
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", info.tag[i]);
  out.Set("tag", tag);
  out.Set("runTimeNs", Napi::BigInt::New(env, static_cast<uint64_t>(info.run_time_ns)));
  out.Set("runCnt", Napi::BigInt::New(env, static_cast<uint64_t>(info.run_cnt)));
  Napi::Array ids = Napi::Array::New(env, mapIds.size());
  for (size_t i = 0; i < mapIds.size(); i++) ids.Set(i, mapIds[i]);
  out.Set("mapIds", ids);
  return 0;
}

using Describe = int (*)(Napi::Env, int, Napi::Object);
using NextId = int (*)(__u32, __u32*);
using FdById = int (*)(__u32);

// Walks the objects of one kind by id: those after `afterId` (default 0:
// from the start), at most `limit` of them (default 0: all), so a caller can
// take thousands in slices between which its event loop runs. Objects that
// vanish between the id walk and the fd open (ENOENT) are skipped: that race
// is normal.
Napi::Value ListAll(const Napi::CallbackInfo& info, NextId next, FdById open, Describe describe,
                    const char* what) {
  Napi::Env env = info.Env();
  if (!(info[0].IsUndefined() || info[0].IsNumber()) || !(info[1].IsUndefined() || info[1].IsNumber())) {
    ThrowTypeError(env, std::string(what) + ": (afterId?: number, limit?: number)");
    return env.Undefined();
  }
  __u32 id = info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : 0;
  uint32_t limit = info[1].IsNumber() ? info[1].As<Napi::Number>().Uint32Value() : 0;
  Napi::Array result = Napi::Array::New(env);
  while (limit == 0 || result.Length() < limit) {
    int rc = next(id, &id);
    if (rc == -ENOENT) break;
    if (rc < 0) {
      ThrowSystemError(env, -rc, "bpf(BPF_*_GET_NEXT_ID)", what);
      return env.Undefined();
    }
    int fd = open(id);
    if (fd == -ENOENT) continue;
    if (fd < 0) {
      ThrowSystemError(env, -fd, "bpf(BPF_*_GET_FD_BY_ID)", what);
      return env.Undefined();
    }
    Napi::Object entry = Napi::Object::New(env);
    int err = describe(env, fd, entry);
    close(fd);
    if (err == ENOENT) continue;
    if (err != 0) {
      ThrowSystemError(env, err, "bpf(BPF_OBJ_GET_INFO_BY_FD)", what);
      return env.Undefined();
    }
    result.Set(result.Length(), entry);
  }
  return result;
}

// The kernel describes any BPF fd into any info struct: an fd of another
// kind (a map's fd given to progInfo) must be refused, not misread.
Napi::Value DescribeFd(const Napi::CallbackInfo& info, Describe describe, const char* what, const char* kind) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, std::string(what) + ": fd must be a number");
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  if (!CheckFdKind(env, what, fd, kind)) return env.Undefined();
  Napi::Object out = Napi::Object::New(env);
  int err = describe(env, fd, out);
  if (err != 0) {
    ThrowSystemError(env, err, "bpf(BPF_OBJ_GET_INFO_BY_FD)", what);
    return env.Undefined();
  }
  return out;
}

// What the kernel names a link's file: "bpf_link", "bpf-link" on newer kernels.
constexpr const char* kLinkKinds = "bpf-link|bpf_link";

int DescribeLink(Napi::Env env, int fd, Napi::Object out) {
  bpf_link_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  if (rc < 0) return -rc;
  out.Set("id", info.id);
  out.Set("type", info.type);
  out.Set("typeName", TypeName(libbpf_bpf_link_type_str(static_cast<bpf_link_type>(info.type)), info.type));
  out.Set("progId", info.prog_id);
  if (info.type == BPF_LINK_TYPE_CGROUP) {
    // cgroupId is 0 once the cgroup is gone: the link is then defunct.
    out.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(info.cgroup.cgroup_id)));
    out.Set("attachType", info.cgroup.attach_type);
  }
  return 0;
}

// Link fds whose kind was read (FdKindError: a readlink of /proc/self/fd/N,
// ~5 µs, several times the rest of the check), with their link's id and
// program id when read. Each fd is read once per link it holds, as
// ReadMapShape does for map fds: an fd closed and reused for another link
// shows another id (link ids are not reused), and a map or a program there
// would have to show, read as a link, this id and this program id too.
struct KnownLink {
  uint32_t id;
  uint32_t progId;
};
thread_local std::unordered_map<int, KnownLink> knownLinks;

// The cgroup a link fd is attached to, into *cgroupId (0 once detached or
// its cgroup gone); 0, or a positive errno when the kernel cannot say (see
// LinkCgroupIds). The fd's kind is known first: the kernel describes a
// map's or a program's fd into a bpf_link_info as well (a prog array's
// type, 3, is BPF_LINK_TYPE_CGROUP's; its max_entries would read as a cgroup id).
int CgroupOfLink(int fd, uint64_t* cgroupId) {
  *cgroupId = 0;
  if (fd < 0) return EBADF;
  bpf_link_info info;
  memset(&info, 0, sizeof info);
  __u32 len = sizeof info;
  int rc = bpf_obj_get_info_by_fd(fd, &info, &len);
  auto known = knownLinks.find(fd);
  if (rc < 0 || known == knownLinks.end() || known->second.id != info.id || known->second.progId != info.prog_id) {
    knownLinks.erase(fd);
    int err = FdKindError(fd, kLinkKinds);
    if (err != 0) return err;
    if (rc < 0) return -rc;
    knownLinks[fd] = {info.id, info.prog_id};
  }
  if (info.type != BPF_LINK_TYPE_CGROUP) return EOPNOTSUPP;
  *cgroupId = info.cgroup.cgroup_id;
  return 0;
}

}  // namespace

Napi::Value ListMaps(const Napi::CallbackInfo& info) {
  return ListAll(info, bpf_map_get_next_id, bpf_map_get_fd_by_id, DescribeMap, "list BPF maps");
}

Napi::Value ListPrograms(const Napi::CallbackInfo& info) {
  return ListAll(info, bpf_prog_get_next_id, bpf_prog_get_fd_by_id, DescribeProgram, "list BPF programs");
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) { return DescribeFd(info, DescribeMap, "describe map", "bpf-map"); }
Napi::Value ProgInfo(const Napi::CallbackInfo& info) { return DescribeFd(info, DescribeProgram, "describe program", "bpf-prog"); }
Napi::Value LinkInfo(const Napi::CallbackInfo& info) { return DescribeFd(info, DescribeLink, "describe link", kLinkKinds); }

Napi::Value LinkCgroupIds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowTypeError(env, "linkCgroupIds: fds must be an Int32Array");
    return env.Undefined();
  }
  Napi::Int32Array fds = info[0].As<Napi::Int32Array>();
  size_t n = fds.ElementLength();
  Napi::BigUint64Array cgroupIds = Napi::BigUint64Array::New(env, n);
  Napi::Int32Array errnos = Napi::Int32Array::New(env, n);
  for (size_t i = 0; i < n; i++) {
    uint64_t id;
    errnos[i] = CgroupOfLink(fds[i], &id);
    cgroupIds[i] = id;
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("cgroupIds", cgroupIds);
  out.Set("errnos", errnos);
  return out;
}

Napi::Value EnableRunTimeStats(const Napi::CallbackInfo& info) {
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) {
    ThrowSystemError(info.Env(), -fd, "bpf(BPF_ENABLE_STATS)", "enable BPF run-time statistics");
    return info.Env().Undefined();
  }
  return Napi::Number::New(info.Env(), fd);
}

}  // namespace podmeter
