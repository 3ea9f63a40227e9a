// RLIMIT_MEMLOCK: unlimited when the process may (CAP_SYS_RESOURCE), else as
// high as its hard limit allows (no capability needed for that). The fd
// table: sized once, ahead of the fds the agent will hold.
#include "limits.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

namespace podmeter {

Napi::Value RaiseMemlockLimit(const Napi::CallbackInfo& info) {
  struct rlimit unlimited = {RLIM_INFINITY, RLIM_INFINITY};
  struct rlimit now = {};
  if (setrlimit(RLIMIT_MEMLOCK, &unlimited) != 0 && getrlimit(RLIMIT_MEMLOCK, &now) == 0 && now.rlim_cur != now.rlim_max) {
    now.rlim_cur = now.rlim_max;
    setrlimit(RLIMIT_MEMLOCK, &now);
  }
  getrlimit(RLIMIT_MEMLOCK, &now);
  return Napi::Number::New(info.Env(), now.rlim_cur == RLIM_INFINITY ? -1 : static_cast<double>(now.rlim_cur));
}

Napi::Value ReserveFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "reserveFds(count)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double wanted = info[0].As<Napi::Number>().DoubleValue();
  struct rlimit nofile = {};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY && wanted > static_cast<double>(nofile.rlim_cur)) {
    wanted = static_cast<double>(nofile.rlim_cur);
  }
  if (wanted > 1 << 20) wanted = 1 << 20;  // the kernel's default fs.nr_open
  int count = static_cast<int>(wanted);
  if (count < 1) return Napi::Number::New(env, 0);
  // An fd at count - 1 makes the kernel grow the table to (at least) count
  // slots in one step; closing it leaves the table that size for good.
  int reserved = 0;
  int fd = open("/", O_PATH | O_CLOEXEC);
  if (fd >= 0) {
    int high = fcntl(fd, F_DUPFD_CLOEXEC, count - 1);
    if (high >= 0) {
      reserved = count;
      close(high);
    }
    close(fd);
  }
  return Napi::Number::New(env, reserved);
}

}  // namespace podmeter
