#include "attach.h"

#include <bpf/bpf.h>
#include <cerrno>
#include <fcntl.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"
#include "shape.h"

namespace podmeter {
namespace {

bool ReadArgs(const Napi::CallbackInfo& info, int* progFd, std::string* path, int* type) {
  if (!info[0].IsNumber() || !info[1].IsString() || !info[2].IsNumber()) {
    ThrowTypeError(info.Env(), "expected (progFd: number, cgroupPath: string, attachType: number)");
    return false;
  }
  *progFd = info[0].As<Napi::Number>().Int32Value();
  *path = info[1].As<Napi::String>();
  *type = info[2].As<Napi::Number>().Int32Value();
  return true;
}

// Opens a cgroup directory; throws and returns -1 on failure.
int OpenCgroup(Napi::Env env, const std::string& path, const char* what) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowSystemError(env, errno, "open", what, path);
  return fd;
}

}  // namespace

Napi::Value OpenCgroupDir(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, "openCgroup: cgroupPath must be a string");
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  int fd = OpenCgroup(env, path, "open cgroup");
  if (fd < 0) return env.Undefined();
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int err = errno;
    close(fd);
    ThrowSystemError(env, err, "fstat", "stat cgroup", path);
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("fd", Napi::Number::New(env, fd));
  result.Set("id", Napi::BigInt::New(env, static_cast<uint64_t>(st.st_ino)));
  return result;
}

Napi::Value AttachCgroupLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd, cgFd, type;
  if (!ReadInt32(env, "attachCgroupLink", "progFd", info[0], &progFd) ||
      !ReadInt32(env, "attachCgroupLink", "cgroupFd", info[1], &cgFd) ||
      !ReadInt32(env, "attachCgroupLink", "attachType", info[2], &type))
    return env.Undefined();
  if (!info[3].IsString()) {
    ThrowTypeError(env, "attachCgroupLink: cgroupPath (named in errors) must be a string");
    return env.Undefined();
  }
  // A closed fd, or one that is not a cgroup2 directory, is the kernel's EBADF.
  int linkFd = bpf_link_create(progFd, cgFd, static_cast<bpf_attach_type>(type), nullptr);
  if (linkFd < 0) {
    int err = errno;
    std::string path = info[3].As<Napi::String>();  // read only for the message
    ThrowSystemError(env, -linkFd > 0 ? -linkFd : err, "bpf(BPF_LINK_CREATE)", "attach to cgroup", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, linkFd);
}

Napi::Value AttachCgroupMulti(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd, type;
  std::string path;
  if (!ReadArgs(info, &progFd, &path, &type)) return env.Undefined();
  int cgFd = OpenCgroup(env, path, "attach to cgroup");
  if (cgFd < 0) return env.Undefined();
  int rc = bpf_prog_attach(progFd, cgFd, static_cast<bpf_attach_type>(type), BPF_F_ALLOW_MULTI);
  close(cgFd);
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_PROG_ATTACH)", "attach (BPF_F_ALLOW_MULTI) to cgroup", path);
  return env.Undefined();
}

Napi::Value DetachCgroupMulti(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int progFd, type;
  std::string path;
  if (!ReadArgs(info, &progFd, &path, &type)) return env.Undefined();
  int cgFd = OpenCgroup(env, path, "detach from cgroup");
  if (cgFd < 0) return env.Undefined();
  int rc = bpf_prog_detach2(progFd, cgFd, static_cast<bpf_attach_type>(type));
  close(cgFd);
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_PROG_DETACH)", "detach from cgroup", path);
  return env.Undefined();
}

Napi::Value QueryCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsNumber()) {
    ThrowTypeError(env, "queryCgroup(cgroupPath: string, attachType: number)");
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  int type = info[1].As<Napi::Number>().Int32Value();
  int cgFd = OpenCgroup(env, path, "query cgroup");
  if (cgFd < 0) return env.Undefined();
  __u32 ids[256];
  __u32 count = 256;
  __u32 flags = 0;
  int rc = bpf_prog_query(cgFd, static_cast<bpf_attach_type>(type), 0, &flags, ids, &count);
  close(cgFd);
  if (rc < 0) {
    ThrowSystemError(env, -rc, "bpf(BPF_PROG_QUERY)", "query programs attached to cgroup", path);
    return env.Undefined();
  }
  Napi::Array result = Napi::Array::New(env, count);
  for (__u32 i = 0; i < count; i++) result.Set(i, Napi::Number::New(env, ids[i]));
  return result;
}

Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, "linkDetach(linkFd: number)");
    return env.Undefined();
  }
  int rc = bpf_link_detach(info[0].As<Napi::Number>().Int32Value());
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_LINK_DETACH)", "detach link");
  return env.Undefined();
}

Napi::Value LinkUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber() || !info[2].IsNumber()) {
    ThrowTypeError(env, "linkUpdate(linkFd: number, newProgFd: number, oldProgFd: number)");
    return env.Undefined();
  }
  // BPF_F_REPLACE: only if the link still runs the old program, so that a
  // change made meanwhile by someone else fails (EPERM) instead of being undone.
  bpf_link_update_opts opts = {};
  opts.sz = sizeof opts;
  opts.flags = BPF_F_REPLACE;
  opts.old_prog_fd = info[2].As<Napi::Number>().Uint32Value();
  int rc = bpf_link_update(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value(), &opts);
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_LINK_UPDATE)", "move link to another program");
  return env.Undefined();
}

Napi::Value ProgFdById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) {
    ThrowTypeError(env, "progFdById(id: number)");
    return env.Undefined();
  }
  int fd = bpf_prog_get_fd_by_id(info[0].As<Napi::Number>().Uint32Value());
  if (fd < 0) {
    ThrowSystemError(env, -fd, "bpf(BPF_PROG_GET_FD_BY_ID)", "open program " + std::to_string(info[0].As<Napi::Number>().Uint32Value()));
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsString()) {
    ThrowTypeError(env, "objPin(fd: number, path: string)");
    return env.Undefined();
  }
  std::string path = info[1].As<Napi::String>();
  int rc = bpf_obj_pin(info[0].As<Napi::Number>().Int32Value(), path.c_str());
  if (rc < 0) ThrowSystemError(env, -rc, "bpf(BPF_OBJ_PIN)", "pin", path);
  return env.Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, "objGet(path: string)");
    return env.Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    ThrowSystemError(env, -fd, "bpf(BPF_OBJ_GET)", "open pinned object", path);
    return env.Undefined();
  }
  return Napi::Number::New(env, fd);
}

}  // namespace podmeter
