// Guarded memory accesses: a copy to or from mapped memory that survives
// SIGSEGV and SIGBUS (and an abort signal sent to a thread asleep in a fault),
// reporting where it stopped instead of killing the process.
#pragma once

#include <atomic>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <string>

namespace faultline {

// How a guarded copy ended.
enum CopyOutcome : int {
  COPY_DONE = 0,
  COPY_SIGNAL = 1,   // SIGSEGV or SIGBUS: signal, address, code are set
  COPY_ABORTED = 2,  // the abort signal interrupted it (a fault that would have slept)
};

struct Guard {
  sigjmp_buf env;
  volatile sig_atomic_t active = 0;     // a SIGSEGV/SIGBUS jumps back to env
  volatile sig_atomic_t abortable = 0;  // the abort signal jumps back to env
  volatile int signal = 0;
  volatile uintptr_t address = 0;
  volatile int code = 0;
};

// The calling thread's guard (null outside faultline's copies).
Guard*& CurrentGuard();
// True in threads faultline created (access threads, the direct-access helper).
bool& IsFaultlineThread();

// Installs the process-wide SIGSEGV, SIGBUS and abort-signal handlers (once).
// Faults outside a guarded copy are passed on to the handler installed before.
void InstallHandlers();
int AbortSignal();

// Installs a handler for `signal` under which faultline threads ignore it
// (a fault they sleep on is retried); other threads get the previous handler.
// Returns false for signals that cannot be caught.
bool InstallIgnoredSignal(int signal);

// Copies `length` bytes between `address` (mapped memory) and `buffer`, page
// span by page span, touching the first byte of each span first so that a
// fault reports the span's start. `done` counts the bytes finished.
int GuardedCopy(Guard* guard, uintptr_t address, uint8_t* buffer, size_t length, bool write,
                std::atomic<size_t>* done, bool abortable);

// Sets up the calling (new) thread: empty signal mask, an alternate signal
// stack, a guard, the faultline-thread flag.
void PrepareThread(Guard* guard);
// Undoes PrepareThread before the thread returns (frees the signal stack).
void ReleaseThread();
// In a forked child: locks another parent thread may have held are fresh.
void ResetGuardAfterFork();

// /proc/self/task/TID: the scheduler state letter ('R', 'S', 'D', ...) or 0,
// and the wchan symbol ("" when running or unreadable).
char TaskStateLetter(int tid);
std::string TaskWchan(int tid);
// Whether thread `tid` is asleep in the kernel waiting on userfaultfd
// (a fault in handle_userfault, or a syscall waiting for an event read).
bool TaskAsleepOnUserfault(int tid);
bool TaskAsleep(int tid);

int64_t MonotonicNs();
int GetTid();

}  // namespace faultline
