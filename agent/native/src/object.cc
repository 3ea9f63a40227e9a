#include "object.h"

#include <bpf/libbpf.h>
#include <cerrno>
#include <fcntl.h>
#include <unistd.h>

#include "errors.h"
#include "shape.h"

namespace podmeter {
namespace {

// The object file named by the path argument, read (nothing reaches the
// kernel) with libbpf's log collected: the caller ends the log. nullptr
// after a JS exception.
bpf_object* OpenFile(const Napi::CallbackInfo& info, const char* usage, const char* what, std::string* path) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowTypeError(env, std::string(usage) + ": path must be a string");
    return nullptr;
  }
  *path = info[0].As<Napi::String>();
  BeginLibbpfLog();
  bpf_object* obj = bpf_object__open_file(path->c_str(), nullptr);
  if (obj == nullptr) {
    int err = errno;
    ThrowSystemError(env, err, "bpf_object__open_file", what, *path, EndLibbpfLog());
  }
  return obj;
}

}  // namespace

Napi::Value OpenObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsUndefined() && !info[1].IsObject()) {
    ThrowTypeError(env, "openObject(path, reuse?): reuse must be an object of map fds by name");
    return env.Undefined();
  }
  std::string path;
  bpf_object* obj = OpenFile(info, "openObject(path, reuse?)", "open BPF object", &path);
  if (obj == nullptr) return env.Undefined();
  // Maps named in `reuse` are not created: the programs use the map of that
  // fd (a pinned map an earlier agent made), which libbpf duplicates.
  if (info[1].IsObject()) {
    Napi::Object reuse = info[1].As<Napi::Object>();
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
      // A copy: libbpf frees its name with the object, and bpf_map__reuse_fd
      // replaces it with the kernel's. Closing the object first and reading
      // the name after made a failed reuse a use after free (SIGSEGV).
      std::string name = bpf_map__name(map);
      Napi::Value fdArg = reuse.Get(name);
      if (fdArg.IsUndefined()) continue;
      // Only a map: libbpf would take a program's fd (its info read as a
      // map's) or a file's (its /proc fdinfo fallback finds no map fields
      // and succeeds) as a map of a made-up shape.
      int fd;
      std::string fn = "openObject(path, reuse?): reuse of map " + name;
      if (!ReadInt32(env, fn.c_str(), "the fd", fdArg, &fd) || !CheckFdKind(env, fn.c_str(), fd, "bpf-map")) {
        EndLibbpfLog();
        bpf_object__close(obj);
        return env.Undefined();
      }
      int rc = bpf_map__reuse_fd(map, fd);
      if (rc < 0) {
        std::string log = EndLibbpfLog();
        bpf_object__close(obj);
        ThrowSystemError(env, -rc, "bpf_map__reuse_fd", "reuse map " + name + " of BPF object", path, log);
        return env.Undefined();
      }
    }
  }
  int rc = bpf_object__load(obj);
  if (rc < 0) {
    std::string log = EndLibbpfLog();
    bpf_object__close(obj);
    ThrowSystemError(env, -rc, "bpf_object__load", "load BPF object", path, log);
    return env.Undefined();
  }
  EndLibbpfLog();

  // The object owns its fds and closes them with it: hand JS duplicates
  // (close-on-exec) so their lifetime is the JS side's alone.
  Napi::Array programs = Napi::Array::New(env);
  Napi::Array maps = Napi::Array::New(env);
  bool ok = true;
  int dupErrno = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = fcntl(bpf_program__fd(prog), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) { ok = false; dupErrno = errno; break; }
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("section", bpf_program__section_name(prog));
    p.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(prog)));
    p.Set("fd", fd);
    programs.Set(programs.Length(), p);
  }
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    if (!ok) break;
    int fd = fcntl(bpf_map__fd(map), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) { ok = false; dupErrno = errno; break; }
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", bpf_map__name(map));
    m.Set("fd", fd);
    maps.Set(maps.Length(), m);
  }
  bpf_object__close(obj);
  if (!ok) {
    // Nothing half-made: close what was duplicated before failing.
    for (Napi::Array list : {programs, maps})
      for (uint32_t i = 0; i < list.Length(); i++)
        close(list.Get(i).As<Napi::Object>().Get("fd").As<Napi::Number>().Int32Value());
    ThrowSystemError(env, dupErrno, "fcntl", "duplicate fds of BPF object", path);
    return env.Undefined();
  }

  Napi::Object result = Napi::Object::New(env);
  result.Set("programs", programs);
  result.Set("maps", maps);
  return result;
}

// Reads the ELF only (bpf_object__open_file, no load): nothing reaches the
// kernel, so an agent can compare pins with the object it would load.
Napi::Value ObjectSpec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  bpf_object* obj = OpenFile(info, "objectSpec(path)", "read BPF object", &path);
  if (obj == nullptr) return env.Undefined();
  EndLibbpfLog();
  auto str = [](const char* s, unsigned n) { return s != nullptr ? std::string(s) : "unknown(" + std::to_string(n) + ")"; };
  Napi::Array maps = Napi::Array::New(env);
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", bpf_map__name(map));
    m.Set("type", static_cast<double>(bpf_map__type(map)));
    m.Set("typeName", str(libbpf_bpf_map_type_str(bpf_map__type(map)), bpf_map__type(map)));
    m.Set("keySize", bpf_map__key_size(map));
    m.Set("valueSize", bpf_map__value_size(map));
    m.Set("maxEntries", bpf_map__max_entries(map));
    m.Set("flags", bpf_map__map_flags(map));
    maps.Set(maps.Length(), m);
  }
  Napi::Array programs = Napi::Array::New(env);
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("type", static_cast<double>(bpf_program__type(prog)));
    p.Set("typeName", str(libbpf_bpf_prog_type_str(bpf_program__type(prog)), bpf_program__type(prog)));
    p.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(prog)));
    p.Set("attachTypeName", str(libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(prog)), bpf_program__expected_attach_type(prog)));
    programs.Set(programs.Length(), p);
  }
  bpf_object__close(obj);
  Napi::Object result = Napi::Object::New(env);
  result.Set("maps", maps);
  result.Set("programs", programs);
  return result;
}

}  // namespace podmeter
