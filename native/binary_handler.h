// Handler binaries under seccomp user notification (binary_handler.cc).
#pragma once
#include <napi.h>

namespace faultline {

// Adds handlerSpawn, notifRecv, notifSend, notifIdValid, vmRead, vmWrite, sameFile,
// makePipe, fileFlags, killGroup, waitStatus and the scratch gate (scratchEnter,
// scratchLeave, scratchClose) to the addon's exports.
void RegisterBinaryHandler(Napi::Env env, Napi::Object exports);

}  // namespace faultline
