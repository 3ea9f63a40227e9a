{
  "targets": [
    {
      "target_name": "podmeter_native",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/object.cc",
        "src/attach.cc",
        "src/storage.cc",
        "src/elements.cc",
        "src/inventory.cc",
        "src/limits.cc",
        "src/shape.cc",
        "src/conntrack.cc",
        "src/ctnetlink.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../../bpf"
      ],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++20", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf"]
    },
    {
      "target_name": "podmeter_memory",
      "sources": ["src/memory.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++20", "-fvisibility=hidden", "-Wall", "-Wextra"]
    }
  ]
}
