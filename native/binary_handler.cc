// Handler binaries under seccomp user notification (src/handlers/binary/):
// starting the binary with a filter that traps its userfaultfd calls (and, on
// request, its waits on the fake userfaultfd and its writes to the fake
// guest_memfd), and the calls the supervisor needs to serve them: receive,
// check, answer, and read or write the binary's memory.
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/kcmp.h>
#include <linux/seccomp.h>
#include <napi.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "binary_handler.h"
#include "scm.h"

#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace faultline {
namespace {

// What the filter traps (the `trap` bits of handlerSpawn).
constexpr int TRAP_UFFD = 1;    // userfaultfd(2), ioctl with type 0xAA
constexpr int TRAP_WAITS = 2;   // poll, ppoll, read(fd >= 3)
constexpr int TRAP_WRITES = 4;  // write, pwrite64, lseek (fd >= 3): the fake guest_memfd

Napi::Value Num(Napi::Env env, double value) { return Napi::Number::New(env, value); }

int IntArg(const Napi::CallbackInfo& info, size_t index) { return info[index].As<Napi::Number>().Int32Value(); }

// The filter: trap the chosen calls, let everything else through.
std::vector<struct sock_filter> BuildFilter(int trap) {
  enum Target { NOTIFY, IOCTL, FD };
  std::vector<std::pair<int, Target>> calls;
  if (trap & TRAP_UFFD) {
    calls.push_back({__NR_userfaultfd, NOTIFY});
    calls.push_back({__NR_ioctl, IOCTL});
  }
  if (trap & TRAP_WAITS) {
    calls.push_back({__NR_poll, NOTIFY});
    calls.push_back({__NR_ppoll, NOTIFY});
    calls.push_back({__NR_read, FD});
  }
  if (trap & TRAP_WRITES) {
    calls.push_back({__NR_write, FD});
    calls.push_back({__NR_pwrite64, FD});
    calls.push_back({__NR_lseek, FD});
  }
  std::vector<struct sock_filter> program;
  program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
  size_t first = program.size();
  // Layout after the comparisons: ALLOW, ioctl block (3), fd block (2), ALLOW, NOTIFY.
  size_t base = first + calls.size();
  size_t ioctl_block = base + 1, fd_block = base + 4, allow = base + 6, notify = base + 7;
  for (size_t i = 0; i < calls.size(); i++) {
    size_t here = first + i;
    size_t target = calls[i].second == NOTIFY ? notify : calls[i].second == IOCTL ? ioctl_block : fd_block;
    program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(calls[i].first),
                               static_cast<uint8_t>(target - here - 1), 0));
  }
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  // ioctl: request type 0xAA (userfaultfd's).
  program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])));
  program.push_back(BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0xff00));
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xAA00, static_cast<uint8_t>(notify - (base + 3) - 1),
                             static_cast<uint8_t>(allow - (base + 3) - 1)));
  // A call on a descriptor past stdio.
  program.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
  program.push_back(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 3, static_cast<uint8_t>(notify - (base + 5) - 1),
                             static_cast<uint8_t>(allow - (base + 5) - 1)));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  program.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF));
  return program;
}

// Descriptors a child gets at 3, 4, ... (the connector's uffd and guest_memfd).
constexpr int MAX_PASSED = 4;

// What the child needs between clone and exec, prepared by the parent.
struct ChildStart {
  int report;
  int in_fd;   // becomes 0
  int out_fd;  // becomes 1 and 2
  int passed[MAX_PASSED];
  int passed_count;
  const char* path;
  char* const* argv;
  const struct sock_fprog* filter;
  pid_t parent;
  sigset_t mask;  // the parent thread's own mask, restored before exec
};

// A handled signal gets the default action, so a handler of Node's never runs
// on the parent's memory; then the thread's own mask comes back.
void ResetSignals(const sigset_t& mask) {
  for (int signal = 1; signal < NSIG; signal++) {
    struct sigaction action;
    if (sigaction(signal, nullptr, &action) != 0 || action.sa_handler == SIG_IGN ||
        action.sa_handler == SIG_DFL)
      continue;
    action.sa_handler = SIG_DFL;
    action.sa_flags = 0;
    sigaction(signal, &action, nullptr);
  }
  pthread_sigmask(SIG_SETMASK, &mask, nullptr);
}

// Puts in_fd at 0, out_fd at 1 and 2, the passed ones at 3, 4, ...: each is
// first moved above that range, so none overwrites another (nor the report
// socket, whose new number goes to *report). 0 or an errno.
int PlaceDescriptors(const ChildStart& start, int* report) {
  int base = 3 + start.passed_count;
  int moved[2 + MAX_PASSED];
  int sources[2 + MAX_PASSED] = {start.in_fd, start.out_fd};
  for (int i = 0; i < start.passed_count; i++) sources[2 + i] = start.passed[i];
  int count = 2 + start.passed_count;
  int own = fcntl(*report, F_DUPFD_CLOEXEC, base);
  if (own < 0) return errno;
  *report = own;
  for (int i = 0; i < count; i++) {
    moved[i] = fcntl(sources[i], F_DUPFD_CLOEXEC, base);
    if (moved[i] < 0) return errno;
  }
  if (dup2(moved[0], 0) < 0 || dup2(moved[1], 1) < 0 || dup2(moved[1], 2) < 0) return errno;
  for (int i = 0; i < start.passed_count; i++)
    if (dup2(moved[2 + i], 3 + i) < 0) return errno;
  return 0;
}

// The seccomp filter with a listener, sent back over the report socket. 0 or an errno.
int InstallFilter(const struct sock_fprog* filter, int report) {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  long listener = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER,
                          SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, filter);
  if (listener < 0) return errno;
  int fd = static_cast<int>(listener);
  char byte = 0;
  int error = SendWithFd(report, &byte, 1, fd) == 1 ? 0 : errno;
  close(fd);
  return error;
}

// In the child, between clone and exec, sharing the parent's memory
// (CLONE_VM) with every signal blocked: only system calls, nothing written
// but this stack.
[[noreturn]] void ChildExec(const ChildStart& start) {
  ResetSignals(start.mask);
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != start.parent) _exit(127);
  int report = start.report;
  int error = PlaceDescriptors(start, &report);
  if (error == 0 && start.filter != nullptr) error = InstallFilter(start.filter, report);
  if (error == 0) {
    // Nothing else of faultline's reaches the binary: every other descriptor closes at exec.
    syscall(__NR_close_range, 3 + start.passed_count, ~0U, CLOSE_RANGE_CLOEXEC);
    execv(start.path, start.argv);
    error = errno;
  }
  int32_t code = error;
  ssize_t ignored = write(report, &code, sizeof(code));
  (void)ignored;
  _exit(127);
}

int ChildMain(void* argument) { ChildExec(*static_cast<ChildStart*>(argument)); }

// Starts the child as posix_spawn does, with clone(CLONE_VM | CLONE_VFORK): no
// copy of the page tables, and no copy-on-write fault afterwards on every
// page this process (every worker thread's heap) writes next. fork() cost
// ~1.3 ms per 100 MB of resident memory, and then a fault per page touched.
// This thread waits until the child has exec'd or exited. Returns the pid,
// or -1 with errno set.
pid_t SpawnChild(ChildStart& start) {
  constexpr size_t STACK_BYTES = 64 * 1024;
  void* stack = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &start.mask);
  pid_t pid = clone(ChildMain, static_cast<char*>(stack) + STACK_BYTES, CLONE_VM | CLONE_VFORK | SIGCHLD, &start);
  int error = errno;
  pthread_sigmask(SIG_SETMASK, &start.mask, nullptr);
  munmap(stack, STACK_BYTES);
  errno = error;
  return pid;
}

// Receives the listener the child sent, or -errno.
int ReceiveListener(int report) {
  char byte;
  int fd;
  int flags;
  ssize_t got = RecvWithFd(report, &byte, 1, &fd, &flags);
  if (got < 0) return -errno;
  if (got == 0 || fd < 0) {
    if (fd >= 0) close(fd);
    return -EPROTO;
  }
  return fd;
}

// The optional fifth argument of handlerSpawn: { stdin?: fd, fds?: [fd, ...] }. False when malformed.
bool ReadSpawnExtras(const Napi::CallbackInfo& info, ChildStart* start) {
  start->in_fd = -1;
  start->passed_count = 0;
  if (info.Length() < 5 || !info[4].IsObject()) return true;
  Napi::Object extras = info[4].As<Napi::Object>();
  if (extras.Has("stdin")) start->in_fd = extras.Get("stdin").As<Napi::Number>().Int32Value();
  if (!extras.Has("fds")) return true;
  Napi::Array fds = extras.Get("fds").As<Napi::Array>();
  if (fds.Length() > MAX_PASSED) return false;
  for (uint32_t i = 0; i < fds.Length(); i++) start->passed[i] = fds.Get(i).As<Napi::Number>().Int32Value();
  start->passed_count = static_cast<int>(fds.Length());
  return true;
}

// handlerSpawn(path, argv, outFd, trap, { stdin, fds }?): [pid, pidfd, listener (-1 without
// traps)], or [-errno, stage] where stage names what failed ("exec", "seccomp", ...). The child
// gets stdin (default /dev/null) at 0, outFd at 1 and 2, and fds at 3, 4, ...
Napi::Value HandlerSpawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::Array args = info[1].As<Napi::Array>();
  ChildStart start = {};
  start.out_fd = IntArg(info, 2);
  int trap = IntArg(info, 3);
  std::vector<std::string> strings;
  strings.push_back(path);
  for (uint32_t i = 0; i < args.Length(); i++) strings.push_back(args.Get(i).As<Napi::String>().Utf8Value());
  std::vector<char*> argv;
  for (auto& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<struct sock_filter> program = BuildFilter(trap);
  struct sock_fprog filter = {static_cast<unsigned short>(program.size()), program.data()};
  auto failure = [&](int error, const char* stage) {
    Napi::Array result = Napi::Array::New(env, 2);
    result.Set(0u, Num(env, -error));
    result.Set(1u, Napi::String::New(env, stage));
    return result;
  };
  if (!ReadSpawnExtras(info, &start)) return failure(EINVAL, "arguments");
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) return failure(errno, "socketpair");
  int null_fd = start.in_fd >= 0 ? -1 : open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (start.in_fd < 0 && null_fd < 0) {
    int error = errno;
    close(pair[0]);
    close(pair[1]);
    return failure(error, "open /dev/null");
  }
  if (start.in_fd < 0) start.in_fd = null_fd;
  start.report = pair[1];
  start.path = path.c_str();
  start.argv = argv.data();
  start.filter = trap != 0 ? &filter : nullptr;
  start.parent = getpid();
  pid_t pid = SpawnChild(start);
  int fork_error = errno;
  close(pair[1]);
  if (null_fd >= 0) close(null_fd);
  if (pid < 0) {
    close(pair[0]);
    return failure(fork_error, "clone");
  }
  int listener = -1;
  int error = 0;
  const char* stage = "exec";
  if (trap != 0) {
    listener = ReceiveListener(pair[0]);
    if (listener < 0) {
      error = -listener;
      stage = "seccomp";
    }
  }
  int32_t code = 0;
  ssize_t got;
  do {
    got = read(pair[0], &code, sizeof(code));
  } while (got < 0 && errno == EINTR);
  close(pair[0]);
  if (error == 0 && got == sizeof(code)) error = code;
  int pidfd = -1;
  if (error == 0) {
    pidfd = static_cast<int>(syscall(__NR_pidfd_open, pid, 0));
    if (pidfd < 0) {
      error = errno;
      stage = "pidfd_open";
    } else {
      fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    }
  }
  if (error != 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    if (listener >= 0) close(listener);
    if (pidfd >= 0) close(pidfd);
    return failure(error, stage);
  }
  if (listener >= 0) {
    // Wake the binary on the supervisor's CPU when answering: a cross-CPU wakeup costs ~45 us here.
    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0);
  }
  Napi::Array result = Napi::Array::New(env, 3);
  result.Set(0u, Num(env, pid));
  result.Set(1u, Num(env, pidfd));
  result.Set(2u, Num(env, listener));
  return result;
}

// notifRecv(listener, out: BigUint64Array(9)): out = [id, pid, nr, arg0..arg5]; 0 or -errno.
Napi::Value NotifRecv(const Napi::CallbackInfo& info) {
  int listener = IntArg(info, 0);
  Napi::TypedArray array = info[1].As<Napi::TypedArray>();
  if (array.TypedArrayType() != napi_biguint64_array || array.ElementLength() < 9)
    return Num(info.Env(), -EINVAL);
  uint64_t* out = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset());
  struct seccomp_notif notif;
  memset(&notif, 0, sizeof(notif));
  int result;
  do {
    result = ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &notif);
  } while (result < 0 && errno == EINTR);
  if (result < 0) return Num(info.Env(), -errno);
  out[0] = notif.id;
  out[1] = notif.pid;
  out[2] = static_cast<uint64_t>(notif.data.nr);
  for (int i = 0; i < 6; i++) out[3 + i] = notif.data.args[i];
  return Num(info.Env(), 0);
}

// notifWait(listener, pidfd, timeoutMs): blocks in poll(2) on both (the caller's
// thread sleeps, so the binary can run on its CPU: SYNC_WAKE_UP); 1 when a
// notification is pending, 2 when the binary ended (or the filter has no user
// left), 0 on timeout, or -errno.
Napi::Value NotifWait(const Napi::CallbackInfo& info) {
  struct pollfd fds[2] = {{IntArg(info, 0), POLLIN, 0}, {IntArg(info, 1), POLLIN, 0}};
  int ready;
  do {
    ready = poll(fds, 2, IntArg(info, 2));
  } while (ready < 0 && errno == EINTR);
  if (ready < 0) return Num(info.Env(), -errno);
  if (ready == 0) return Num(info.Env(), 0);
  if (fds[0].revents & POLLIN) return Num(info.Env(), 1);
  return Num(info.Env(), 2);
}

// notifSend(listener, id, value, error, flags): 0 or -errno (ENOENT: the caller is gone).
Napi::Value NotifSend(const Napi::CallbackInfo& info) {
  struct seccomp_notif_resp response;
  memset(&response, 0, sizeof(response));
  bool lossless;
  response.id = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  response.val = static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue());
  response.error = IntArg(info, 3);
  response.flags = static_cast<uint32_t>(IntArg(info, 4));
  int result = ioctl(IntArg(info, 0), SECCOMP_IOCTL_NOTIF_SEND, &response);
  return Num(info.Env(), result < 0 ? -errno : 0);
}

// notifIdValid(listener, id): 1 while the trapped call still waits for its answer, else 0.
Napi::Value NotifIdValid(const Napi::CallbackInfo& info) {
  bool lossless;
  uint64_t id = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  return Num(info.Env(), ioctl(IntArg(info, 0), SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 ? 1 : 0);
}

uint8_t* Bytes(const Napi::CallbackInfo& info, size_t index, size_t* length) {
  Napi::TypedArray array = info[index].As<Napi::TypedArray>();
  *length = array.ByteLength();
  return static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
}

// vmRead(pid, address, into) / vmWrite(pid, address, from): bytes moved, or -errno.
Napi::Value VmRead(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = Bytes(info, 2, &length);
  struct iovec local = {bytes, length};
  struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(info[1].As<Napi::Number>().DoubleValue())), length};
  ssize_t got = process_vm_readv(IntArg(info, 0), &local, 1, &remote, 1, 0);
  return Num(info.Env(), got < 0 ? -errno : static_cast<double>(got));
}

Napi::Value VmWrite(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = Bytes(info, 2, &length);
  struct iovec local = {bytes, length};
  struct iovec remote = {reinterpret_cast<void*>(static_cast<uintptr_t>(info[1].As<Napi::Number>().DoubleValue())), length};
  ssize_t put = process_vm_writev(IntArg(info, 0), &local, 1, &remote, 1, 0);
  return Num(info.Env(), put < 0 ? -errno : static_cast<double>(put));
}

// sameFile(pid, fd, ownFd): 1 when the binary's fd is the open file ownFd is, 0 if not, -errno.
Napi::Value SameFile(const Napi::CallbackInfo& info) {
  long result = syscall(__NR_kcmp, IntArg(info, 0), getpid(), KCMP_FILE, IntArg(info, 1), IntArg(info, 2));
  if (result < 0) return Num(info.Env(), -errno);
  return Num(info.Env(), result == 0 ? 1 : 0);
}

// makePipe(blocking = false): [readEnd, writeEnd] (close-on-exec; non-blocking unless asked, as
// the VMM's userfaultfd is), or -errno.
Napi::Value MakePipe(const Napi::CallbackInfo& info) {
  int fds[2];
  bool blocking = info.Length() > 0 && info[0].ToBoolean().Value();
  if (pipe2(fds, O_CLOEXEC | (blocking ? 0 : O_NONBLOCK)) < 0) return Num(info.Env(), -errno);
  Napi::Array result = Napi::Array::New(info.Env(), 2);
  result.Set(0u, Num(info.Env(), fds[0]));
  result.Set(1u, Num(info.Env(), fds[1]));
  return result;
}

// fileFlags(fd): F_GETFL (the O_NONBLOCK the binary set on the shared open file), or -errno.
Napi::Value FileFlags(const Napi::CallbackInfo& info) {
  int flags = fcntl(IntArg(info, 0), F_GETFL);
  return Num(info.Env(), flags < 0 ? -errno : flags);
}

// killGroup(pid, signal): the binary and whatever it started (its own process group).
Napi::Value KillGroup(const Napi::CallbackInfo& info) {
  int pid = IntArg(info, 0);
  int signal = IntArg(info, 1);
  int a = kill(-pid, signal);
  int b = kill(pid, signal);
  return Num(info.Env(), a == 0 || b == 0 ? 0 : -errno);
}

// waitStatus(pid, block): [pid, status] (pid 0 while it runs), or -errno.
Napi::Value WaitStatus(const Napi::CallbackInfo& info) {
  int status = 0;
  pid_t result;
  do {
    result = waitpid(IntArg(info, 0), &status, info[1].ToBoolean().Value() ? 0 : WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result < 0) return Num(info.Env(), -errno);
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Num(info.Env(), result));
  out.Set(1u, Num(info.Env(), status));
  return out;
}

// Scratch directories of handler sessions, process-wide (the addon is loaded
// once per process; every worker thread sees these). On a signal the main
// thread closes the gate, waits for sessions creating a directory right
// now, and removes them all: a session on another thread cannot create one
// after that listing.
std::atomic<int> scratch_creating{0};
std::atomic<bool> scratch_closed{false};

// scratchEnter(): true when a session may create its scratch directory (then
// scratchLeave() once it exists); false once the process is being torn down.
Napi::Value ScratchEnter(const Napi::CallbackInfo& info) {
  scratch_creating.fetch_add(1);
  if (scratch_closed.load()) {
    scratch_creating.fetch_sub(1);
    return Napi::Boolean::New(info.Env(), false);
  }
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value ScratchLeave(const Napi::CallbackInfo& info) {
  scratch_creating.fetch_sub(1);
  return info.Env().Undefined();
}

// scratchClose(timeoutMs): no session creates a scratch directory from now
// on; waits (bounded) for those creating one. True when none is left.
Napi::Value ScratchClose(const Napi::CallbackInfo& info) {
  scratch_closed.store(true);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(IntArg(info, 0));
  while (scratch_creating.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  return Napi::Boolean::New(info.Env(), scratch_creating.load() == 0);
}

}  // namespace

void RegisterBinaryHandler(Napi::Env env, Napi::Object exports) {
  exports.Set("handlerSpawn", Napi::Function::New(env, HandlerSpawn));
  exports.Set("notifRecv", Napi::Function::New(env, NotifRecv));
  exports.Set("notifSend", Napi::Function::New(env, NotifSend));
  exports.Set("notifWait", Napi::Function::New(env, NotifWait));
  exports.Set("notifIdValid", Napi::Function::New(env, NotifIdValid));
  exports.Set("vmRead", Napi::Function::New(env, VmRead));
  exports.Set("vmWrite", Napi::Function::New(env, VmWrite));
  exports.Set("sameFile", Napi::Function::New(env, SameFile));
  exports.Set("makePipe", Napi::Function::New(env, MakePipe));
  exports.Set("fileFlags", Napi::Function::New(env, FileFlags));
  exports.Set("killGroup", Napi::Function::New(env, KillGroup));
  exports.Set("waitStatus", Napi::Function::New(env, WaitStatus));
  // 2: handlerSpawn takes { stdin, fds } (the TypeScript side falls back to child_process before).
  exports.Set("binarySpawnVersion", Napi::Number::New(env, 2));
  exports.Set("scratchEnter", Napi::Function::New(env, ScratchEnter));
  exports.Set("scratchLeave", Napi::Function::New(env, ScratchLeave));
  exports.Set("scratchClose", Napi::Function::New(env, ScratchClose));
}

}  // namespace faultline
