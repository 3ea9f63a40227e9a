// RLIMIT_MEMLOCK: unlimited when the process may (CAP_SYS_RESOURCE), else as
// high as its hard limit allows (no capability needed for that).
#include "limits.h"

#include <sys/resource.h>

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

}  // namespace podmeter
