// The agent: a process other than Node (a forked child, or the
// faultline_agent executable) that makes system calls on request from the
// host backend over a socket. It runs only this native code.
//
// Frames: u32 length, then the payload. A request is u32 op, i64 args[8],
// u32 data length, data; a reply is i64 result, i64 extra[8], u32 data
// length, data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace faultline {

enum AgentOp : uint32_t {
  AGENT_MMAP = 1,
  AGENT_MUNMAP,
  AGENT_MPROTECT,
  AGENT_MADVISE,
  AGENT_MREMAP,
  AGENT_MEMFD_CREATE,
  AGENT_OPEN,
  AGENT_FTRUNCATE,
  AGENT_FALLOCATE,
  AGENT_PREAD,
  AGENT_PWRITE,
  AGENT_WRITE,
  AGENT_LSEEK,
  AGENT_CLOSE,
  AGENT_USERFAULTFD,
  AGENT_IOCTL,
  AGENT_READ,
  AGENT_POLL,
  AGENT_READ_MEMORY,
  AGENT_WRITE_MEMORY,
  AGENT_PAGEMAP,
  AGENT_SPAWN,
  AGENT_THREAD_STATE,
  AGENT_THREAD_RESULT,
  AGENT_THREAD_SIGNAL,
  AGENT_EXIT,
  AGENT_TAKE_CHILD,
};

// The result of a memory syscall that went to sleep waiting for a
// userfaultfd event to be read; it completes in the background.
constexpr int64_t AGENT_WOULD_SLEEP = -1000;
// The agent is gone (its socket closed).
constexpr int64_t AGENT_GONE = -1001;
// The agent did not answer in time and was killed.
constexpr int64_t AGENT_HUNG = -1002;

struct AgentReply {
  int64_t result = 0;
  int64_t extra[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<uint8_t> data;
  // A descriptor the agent passed with its reply (SCM_RIGHTS), or -1.
  int fd = -1;
};

enum AgentCallStatus : int { AGENT_CALL_OK = 0, AGENT_CALL_BROKEN = 1, AGENT_CALL_TIMEOUT = 2 };

// Parent side: one request, one reply; AGENT_CALL_TIMEOUT if the agent did
// not answer within `timeout_ms` (then the caller should kill it).
AgentCallStatus AgentCall(int socket, uint32_t op, const int64_t args[8], const uint8_t* data, size_t length,
               AgentReply* reply, int timeout_ms);

// Child side: serves requests until the socket closes or AGENT_EXIT.
void AgentServe(int socket);

// Installs AgentServe as what forked children run.
void InstallAgent();

}  // namespace faultline
