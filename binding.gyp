{
  "targets": [
    {
      "target_name": "faultline_host",
      "sources": ["native/addon.cc", "native/agent.cc", "native/bench.cc", "native/guard.cc", "native/threads.cc", "native/binary_handler.cc"],
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
    },
    {
      "target_name": "faultline_fc_connector",
      "type": "executable",
      "sources": ["native/fc_connector.c"],
      "cflags": ["-O2", "-Wall"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "fc_handler",
      "type": "executable",
      "sources": ["test/handlers/fc_handler.c"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-lpthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "fc_handler_static",
      "type": "executable",
      "sources": ["test/handlers/fc_handler.c"],
      "cflags": ["-O2", "-Wall"],
      "ldflags": ["-static"],
      "libraries": ["-lpthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "fc_handler_eagain_fatal",
      "type": "executable",
      "sources": ["test/handlers/fc_handler.c"],
      "defines": ["BUG_EAGAIN_FATAL"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-lpthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    },
    {
      "target_name": "fc_handler_unbounded_poll",
      "type": "executable",
      "sources": ["test/handlers/fc_handler.c"],
      "defines": ["BUG_UNBOUNDED_POLL"],
      "cflags": ["-O2", "-Wall"],
      "libraries": ["-lpthread"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
