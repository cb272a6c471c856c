// Access threads (native pthreads that run a program of memory accesses and
// may sleep on userfaultfd faults) and the helper that runs the calling
// thread's direct accesses when they might sleep.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "guard.h"

namespace faultline {

enum OpKind : int { OP_READ = 0, OP_WRITE = 1, OP_SYSCALL = 2 };
// CALL_MMAP is internal: the backend's own mmap(MAP_FIXED) when it may sleep on an UNMAP event.
// CALL_IOCTL is internal too: the agent's UFFDIO_COPY, whose source may fault on a userfaultfd.
enum SyscallKind : int { CALL_MADVISE = 0, CALL_MUNMAP = 1, CALL_MREMAP = 2, CALL_FORK = 3, CALL_MMAP = 4, CALL_IOCTL = 5 };

struct Op {
  int kind = OP_READ;
  bool kernel = false;
  uintptr_t address = 0;
  size_t length = 0;
  std::vector<uint8_t> data;
  int call = 0;
  long args[6] = {0, 0, 0, 0, 0, 0};
  // For a fork: the file descriptors the child keeps (the program's own);
  // every other descriptor (Node's) is closed in the child.
  std::vector<int> keep_fds;
};

// A child made by a fork access: its pid and the socket to its agent.
struct ForkedChild {
  int pid;
  int socket;
};

enum ThreadEnd : int { END_DONE = 0, END_SIGBUS = 1, END_SEGV = 2 };

struct AccessThread {
  std::vector<Op> ops;
  std::string name;
  pthread_t handle{};
  std::atomic<int> tid{0};
  std::atomic<bool> finished{false};
  std::atomic<int> current{-1};
  std::atomic<int64_t> access_started_ns{0};
  // Results, written by the thread before `finished` is set.
  int end = END_DONE;
  std::vector<std::vector<uint8_t>> reads;
  int signal = 0;
  uintptr_t signal_address = 0;
  int signal_code = 0;
  int error = 0;
  long faults = 0;
  // Time spent in touches of memory that slept in the kernel (userfaultfd
  // waits): see BlockClock in threads.cc for how it is measured.
  int64_t blocked_ns = 0;
  std::vector<double> returns;
  std::vector<ForkedChild> children;
  Guard guard;
  // Called on the thread once it has finished (may be empty).
  std::function<void()> on_exit;
};

// Set by the agent: what a forked child runs (never returns).
extern void (*ForkedChildMain)(int socket);

// Resets process-wide state a forked child inherits from its parent's other
// threads (the direct-access helper, the pagemap fd, locks).
void ResetAfterFork();

// mmap(2) placing the mapping between PROT_NONE guards when the kernel
// chooses the address (see isolatedMmap in host-backend.ts); result or -errno.
// `reservation`/`reserved` receive the whole guarded range (0 if none).
long IsolatedMmap(uintptr_t address, size_t length, int prot, int flags, int fd, long offset,
                  uintptr_t* reservation, size_t* reserved);

// Starts `thread` (its ops filled in); returns 0 or an errno.
int StartAccessThread(std::shared_ptr<AccessThread> thread);

// 'running' | 'blocked' | 'done' | 'sigbus' | 'segv'
const char* AccessThreadState(AccessThread& thread);

// Waits (blocking the caller) until the thread has ended or sleeps on
// userfaultfd; returns its state then.
const char* WaitAccessThread(AccessThread& thread);

// The calling thread's direct access to [address, address + length).
struct DirectOutcome {
  int kind = COPY_DONE;  // COPY_DONE, COPY_SIGNAL, COPY_ABORTED (would block)
  int signal = 0;
  uintptr_t address = 0;
  int code = 0;
};
DirectOutcome DirectAccess(uintptr_t address, uint8_t* buffer, size_t length, bool write);

// /proc/self/pagemap entries for `pages` pages from `address` (0 on failure).
bool ReadPagemap(uintptr_t address, size_t pages, uint64_t* out);

// read(2) that never sleeps: on a file without O_NONBLOCK the flag is set around the call (a fd a
// FORK event installed has no FMODE_NOWAIT, so RWF_NOWAIT would be EOPNOTSUPP). -1 and errno on failure.
long ReadNeverBlocking(int fd, void* buffer, size_t length);

}  // namespace faultline
