// Registers the addon's exports; each capability lives in its own file.
#include <napi.h>

#include "attach.h"
#include "conntrack.h"
#include "elements.h"
#include "errors.h"
#include "inventory.h"
#include "limits.h"
#include "object.h"
#include "storage.h"

namespace podmeter {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto add = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, fn, name));
  };
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  add("openObject", OpenObject);
  add("objectSpec", ObjectSpec);
  add("openCgroup", OpenCgroupDir);
  add("attachCgroupLink", AttachCgroupLink);
  add("attachCgroupMulti", AttachCgroupMulti);
  add("detachCgroupMulti", DetachCgroupMulti);
  add("queryCgroup", QueryCgroup);
  add("linkDetach", LinkDetach);
  add("linkUpdate", LinkUpdate);
  add("progFdById", ProgFdById);
  add("objPin", ObjPin);
  add("objGet", ObjGet);
  add("storageLookup", StorageLookup);
  add("storageSums", StorageSums);
  add("storageSumsMany", StorageSumsMany);
  add("storageKeys", StorageKeys);
  add("possibleCpus", PossibleCpus);
  add("mapUpdate", MapUpdate);
  add("mapDelete", MapDelete);
  add("mapLookup", MapLookup);
  add("mapKeys", MapKeys);
  add("mapEntries", MapEntries);
  add("mapDeleteKeys", MapDeleteKeys);
  add("mapUpdateAsync", MapUpdateAsync);
  add("listMaps", ListMaps);
  add("listPrograms", ListPrograms);
  add("mapInfo", MapInfo);
  add("progInfo", ProgInfo);
  add("linkInfo", LinkInfo);
  add("linkCgroupIds", LinkCgroupIds);
  add("enableRunTimeStats", EnableRunTimeStats);
  add("raiseMemlockLimit", RaiseMemlockLimit);
  add("reserveFds", ReserveFds);
  add("conntrackOpen", ConntrackOpen);
  add("conntrackReplies", ConntrackReplies);
  return exports;
}

NODE_API_MODULE(podmeter_native, Init)

}  // namespace podmeter
