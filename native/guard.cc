#include "guard.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

namespace faultline {

namespace {

// Initial-exec TLS: no lazy allocation, so the handlers may read it.
thread_local Guard* tls_guard __attribute__((tls_model("initial-exec"))) = nullptr;
thread_local bool tls_faultline_thread __attribute__((tls_model("initial-exec"))) = false;
thread_local void* tls_signal_stack = nullptr;

struct sigaction old_actions[NSIG];
bool installed[NSIG];
std::mutex install_mutex;
bool handlers_installed = false;

// Passes a signal on to the handler that was installed before ours.
void Chain(int signal, siginfo_t* info, void* context) {
  const struct sigaction& old = old_actions[signal];
  if (old.sa_flags & SA_SIGINFO) {
    if (old.sa_sigaction != nullptr) old.sa_sigaction(signal, info, context);
    return;
  }
  if (old.sa_handler == SIG_IGN) {
    if (signal == SIGSEGV || signal == SIGBUS) {
      // Ignoring a synchronous fault would loop: let it take the default action.
      struct sigaction def = {};
      def.sa_handler = SIG_DFL;
      sigaction(signal, &def, nullptr);
    }
    return;
  }
  if (old.sa_handler == SIG_DFL) {
    // Restore the default and re-deliver: a synchronous fault re-executes and
    // takes the default action; an asynchronous signal is raised again.
    struct sigaction def = {};
    def.sa_handler = SIG_DFL;
    sigaction(signal, &def, nullptr);
    if (signal != SIGSEGV && signal != SIGBUS) syscall(SYS_tgkill, getpid(), GetTid(), signal);
    return;
  }
  old.sa_handler(signal);
}

void OnFault(int signal, siginfo_t* info, void* context) {
  Guard* guard = tls_guard;
  if (guard != nullptr && guard->active) {
    guard->active = 0;
    guard->abortable = 0;
    guard->signal = signal;
    guard->address = reinterpret_cast<uintptr_t>(info->si_addr);
    guard->code = info->si_code;
    siglongjmp(guard->env, COPY_SIGNAL);
  }
  Chain(signal, info, context);
}

void OnAbort(int, siginfo_t*, void*) {
  Guard* guard = tls_guard;
  if (guard != nullptr && guard->abortable) {
    guard->active = 0;
    guard->abortable = 0;
    guard->signal = 0;
    siglongjmp(guard->env, COPY_ABORTED);
  }
}

void OnIgnored(int signal, siginfo_t* info, void* context) {
  if (tls_faultline_thread) return;
  Chain(signal, info, context);
}

bool ReadSmallFile(const char* path, char* buffer, size_t size, size_t* length) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buffer, size - 1);
  close(fd);
  if (n < 0) return false;
  buffer[n] = 0;
  *length = static_cast<size_t>(n);
  return true;
}

}  // namespace

Guard*& CurrentGuard() { return tls_guard; }

void ResetGuardAfterFork() { new (&install_mutex) std::mutex(); }
bool& IsFaultlineThread() { return tls_faultline_thread; }

int AbortSignal() { return SIGRTMIN + 6; }

void InstallHandlers() {
  std::lock_guard<std::mutex> lock(install_mutex);
  if (handlers_installed) return;
  handlers_installed = true;
  struct sigaction action = {};
  action.sa_sigaction = OnFault;
  // SA_NODEFER: the signal stays unblocked, so leaving the handler with
  // siglongjmp (which does not restore the mask) leaves the thread able to
  // take the next fault.
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &old_actions[SIGSEGV]);
  sigaction(SIGBUS, &action, &old_actions[SIGBUS]);
  installed[SIGSEGV] = installed[SIGBUS] = true;
  struct sigaction abort_action = {};
  abort_action.sa_sigaction = OnAbort;
  abort_action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&abort_action.sa_mask);
  sigaction(AbortSignal(), &abort_action, &old_actions[AbortSignal()]);
  installed[AbortSignal()] = true;
}

bool InstallIgnoredSignal(int signal) {
  if (signal <= 0 || signal >= NSIG || signal == SIGKILL || signal == SIGSTOP) return false;
  std::lock_guard<std::mutex> lock(install_mutex);
  if (installed[signal]) return true;
  struct sigaction action = {};
  action.sa_sigaction = OnIgnored;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;  // no SA_RESTART: a sleeping syscall sees EINTR
  sigemptyset(&action.sa_mask);
  if (sigaction(signal, &action, &old_actions[signal]) != 0) return false;
  installed[signal] = true;
  return true;
}

int GuardedCopy(Guard* guard, uintptr_t address, uint8_t* buffer, size_t length, bool write,
                std::atomic<size_t>* done, bool abortable) {
  tls_guard = guard;
  guard->signal = 0;
  int jumped = sigsetjmp(guard->env, 0);
  if (jumped != 0) {
    guard->active = 0;
    guard->abortable = 0;
    return jumped;
  }
  guard->active = 1;
  guard->abortable = abortable ? 1 : 0;
  size_t offset = done->load(std::memory_order_relaxed);
  while (offset < length) {
    uintptr_t at = address + offset;
    size_t span = 4096 - (at & 4095);
    if (span > length - offset) span = length - offset;
    volatile uint8_t* first = reinterpret_cast<volatile uint8_t*>(at);
    if (write) {
      *first = buffer[offset];
      std::memcpy(reinterpret_cast<void*>(at + 1), buffer + offset + 1, span - 1);
    } else {
      buffer[offset] = *first;
      std::memcpy(buffer + offset + 1, reinterpret_cast<const void*>(at + 1), span - 1);
    }
    offset += span;
    done->store(offset, std::memory_order_release);
  }
  guard->abortable = 0;
  guard->active = 0;
  return COPY_DONE;
}

void PrepareThread(Guard* guard) {
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  stack_t stack = {};
  stack.ss_size = 64 * 1024;
  stack.ss_sp = std::malloc(stack.ss_size);
  if (stack.ss_sp != nullptr && sigaltstack(&stack, nullptr) == 0) {
    tls_signal_stack = stack.ss_sp;
  } else {
    std::free(stack.ss_sp);
  }
  tls_guard = guard;
  tls_faultline_thread = true;
}

void ReleaseThread() {
  tls_guard = nullptr;
  if (tls_signal_stack == nullptr) return;
  stack_t disable = {};
  disable.ss_flags = SS_DISABLE;
  if (sigaltstack(&disable, nullptr) == 0) {
    std::free(tls_signal_stack);
    tls_signal_stack = nullptr;
  }
}

char TaskStateLetter(int tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  char buffer[1024];
  size_t length = 0;
  if (!ReadSmallFile(path, buffer, sizeof buffer, &length)) return 0;
  // The state follows the last ')' (the name may contain parentheses).
  char* close = std::strrchr(buffer, ')');
  if (close == nullptr || close[1] != ' ') return 0;
  return close[2];
}

std::string TaskWchan(int tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/wchan", tid);
  char buffer[256];
  size_t length = 0;
  if (!ReadSmallFile(path, buffer, sizeof buffer, &length)) return "";
  std::string value(buffer, length);
  if (value == "0") return "";
  return value;
}

bool TaskAsleep(int tid) {
  char state = TaskStateLetter(tid);
  return state == 'S' || state == 'D';
}

bool TaskAsleepOnUserfault(int tid) {
  if (!TaskAsleep(tid)) return false;
  std::string wchan = TaskWchan(tid);
  return wchan.find("userfault") != std::string::npos;
}

int64_t MonotonicNs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
}

int GetTid() { return static_cast<int>(syscall(SYS_gettid)); }

}  // namespace faultline
