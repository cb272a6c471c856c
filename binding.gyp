{
  "targets": [
    {
      "target_name": "faultline_host",
      "sources": ["native/addon.cc", "native/agent.cc", "native/bench.cc", "native/guard.cc", "native/threads.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "faultline_agent",
      "type": "executable",
      "sources": ["native/agent_main.cc", "native/agent.cc", "native/guard.cc", "native/threads.cc"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
