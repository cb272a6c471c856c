#include "threads.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>

namespace faultline {

namespace {

// A thread asleep this long inside an access, with no userfaultfd wchan to
// tell why, is reported as blocked anyway.
constexpr int64_t kBlockedGraceNs = 200 * 1000 * 1000;

constexpr uint64_t kPagemapPresent = 1ULL << 63;
constexpr uint64_t kPagemapUffdWp = 1ULL << 57;

long VoluntarySwitches() {
  struct rusage usage;
  if (getrusage(RUSAGE_THREAD, &usage) != 0) return 0;
  return usage.ru_nvcsw;
}

// A touch slower than this may have slept; faster ones cannot have (a sleep
// and a wakeup by another thread cost microseconds), so only slower ones pay
// for a getrusage(2).
constexpr int64_t kSlowTouchNs = 2000;

// Blocked time, the host's postcopy-blocktime: how long the thread sat in the
// kernel waiting for userfaultfd to resolve its faults. Every touch of
// memory is timed with CLOCK_MONOTONIC (clock_gettime through the vDSO, tens
// of nanoseconds): each page span of a user access (its first byte is what
// faults), and each read(2)/write(2) through which a kernel-mode access copies
// to or from the range. A touch of a resident page takes nanoseconds; one
// that faults into handle_userfault sleeps until the handler has placed the
// page and woken it, tens of microseconds at least. A touch counts as blocked
// when it took longer than kSlowTouchNs and the thread's voluntary context
// switches (getrusage RUSAGE_THREAD, read only after such a touch) went up
// during it, i.e. the thread slept: a fault that is slow without sleeping
// (zeroing a fresh 2 MiB huge page) and a thread merely preempted
// (an involuntary switch) do not count. The whole touch is added: fault
// entry, the sleep, and the retry, which is what the vCPU lost. A sleep in a
// fault for another reason (a contended page lock) would count too; with
// userfaultfd registered memory that is the waiter on the same page. Time in
// syscall accesses (madvise waiting for its event to be read) is not fault
// time and is left out, as the model leaves it out.
struct BlockClock {
  AccessThread& thread;
  long switches;
  int64_t started = 0;
  explicit BlockClock(AccessThread& owner) : thread(owner), switches(VoluntarySwitches()) {}
  void Start() { started = MonotonicNs(); }
  void Stop() {
    int64_t took = MonotonicNs() - started;
    if (took < kSlowTouchNs) return;
    long now = VoluntarySwitches();
    if (now == switches) return;
    // Each sleep in a touch is a userfaultfd fault the thread waited for (the
    // thread's fault count); counting them here spares the fast path any
    // getrusage(2).
    thread.faults += now - switches;
    switches = now;
    thread.blocked_ns += took;
  }
  // After a syscall access, whose sleeps are neither fault nor blocked time.
  void Resync() { switches = VoluntarySwitches(); }
};

// A pipe a thread's kernel-mode accesses go through.
struct Pipe {
  int read_fd = -1;
  int write_fd = -1;
  size_t capacity = 0;
  bool Open() {
    if (read_fd >= 0) return true;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return false;
    read_fd = fds[0];
    write_fd = fds[1];
    int size = fcntl(write_fd, F_SETPIPE_SZ, 1 << 20);
    if (size <= 0) size = fcntl(write_fd, F_GETPIPE_SZ);
    capacity = size > 0 ? static_cast<size_t>(size) : 4096;
    return true;
  }
  ~Pipe() {
    if (read_fd >= 0) close(read_fd);
    if (write_fd >= 0) close(write_fd);
  }
  void Drain(size_t bytes) {
    uint8_t scratch[4096];
    while (bytes > 0) {
      ssize_t n = read(read_fd, scratch, std::min(bytes, sizeof scratch));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      bytes -= static_cast<size_t>(n);
    }
  }
};

bool WriteAll(int fd, const uint8_t* data, size_t length) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = write(fd, data + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// copy_to_user: read(2) from a pipe holding `data` into [address, +length).
int KernelWrite(Pipe& pipe, uintptr_t address, const uint8_t* data, size_t length, BlockClock& clock) {
  size_t offset = 0;
  while (offset < length) {
    size_t chunk = std::min(pipe.capacity, length - offset);
    if (!WriteAll(pipe.write_fd, data + offset, chunk)) return errno != 0 ? errno : EIO;
    size_t got = 0;
    while (got < chunk) {
      clock.Start();
      ssize_t n = read(pipe.read_fd, reinterpret_cast<void*>(address + offset + got), chunk - got);
      clock.Stop();
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int error = errno;
        pipe.Drain(chunk - got);
        return error;
      }
      if (n == 0) return EIO;
      got += static_cast<size_t>(n);
    }
    offset += chunk;
  }
  return 0;
}

// copy_from_user: write(2) from [address, +length) into a pipe, then drain it.
int KernelRead(Pipe& pipe, uintptr_t address, uint8_t* into, size_t length, BlockClock& clock) {
  size_t offset = 0;
  while (offset < length) {
    size_t chunk = std::min(pipe.capacity, length - offset);
    size_t put = 0;
    int error = 0;
    while (put < chunk) {
      clock.Start();
      ssize_t n = write(pipe.write_fd, reinterpret_cast<const void*>(address + offset + put), chunk - put);
      clock.Stop();
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = errno;
        break;
      }
      put += static_cast<size_t>(n);
    }
    size_t got = 0;
    while (got < put) {
      ssize_t n = read(pipe.read_fd, into + offset + got, put - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return EIO;
      got += static_cast<size_t>(n);
    }
    if (error != 0) return error;
    offset += chunk;
  }
  return 0;
}

double RunSyscall(const Op& op) {
  long result;
  switch (op.call) {
    case CALL_MADVISE:
      result = syscall(SYS_madvise, op.args[0], op.args[1], op.args[2]);
      break;
    case CALL_MUNMAP:
      result = syscall(SYS_munmap, op.args[0], op.args[1]);
      break;
    case CALL_MREMAP:
      result = syscall(SYS_mremap, op.args[0], op.args[1], op.args[2], op.args[3], op.args[4]);
      break;
    case CALL_MMAP:
      result = syscall(SYS_mmap, op.args[0], op.args[1], op.args[2], op.args[3], op.args[4], op.args[5]);
      break;
    case CALL_IOCTL:
      result = syscall(SYS_ioctl, op.args[0], op.args[1], op.args[2]);
      break;
    default:
      return -ENOSYS;
  }
  if (result == -1) return -static_cast<double>(errno);
  return static_cast<double>(static_cast<unsigned long>(result));
}

// Closes every descriptor of a forked child except 0-2 and `keep`.
void CloseOtherFds(std::vector<int> keep) {
  keep.push_back(0);
  keep.push_back(1);
  keep.push_back(2);
  std::sort(keep.begin(), keep.end());
  unsigned int next = 0;
  for (int fd : keep) {
    if (fd < 0 || static_cast<unsigned int>(fd) < next) continue;
    if (static_cast<unsigned int>(fd) > next) syscall(SYS_close_range, next, static_cast<unsigned int>(fd) - 1, 0);
    next = static_cast<unsigned int>(fd) + 1;
  }
  syscall(SYS_close_range, next, ~0U, 0);
}

double RunFork(AccessThread& thread, const Op& op) {
  if (ForkedChildMain == nullptr) return -ENOSYS;
  int sockets[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) return -static_cast<double>(errno);
  // fork() holds glibc's malloc and stdio locks across the system call. With
  // UFFD_FEATURE_EVENT_FORK the call sleeps until the monitor reads the FORK
  // event, and the monitor (Node's main thread) needs malloc to do that: so
  // then the locks must not be held, and _Fork() is used. Its child starts
  // without glibc's lock reset; it is used only for the agent, whose calls
  // the parent bounds with a timeout.
  pid_t pid = op.args[0] != 0 ? _Fork() : fork();
  if (pid < 0) {
    int error = errno;
    close(sockets[0]);
    close(sockets[1]);
    return -static_cast<double>(error);
  }
  if (pid == 0) {
    std::vector<int> keep = op.keep_fds;
    keep.push_back(sockets[1]);
    CloseOtherFds(keep);
    ResetAfterFork();
    ForkedChildMain(sockets[1]);
    _exit(0);
  }
  close(sockets[1]);
  thread.children.push_back({static_cast<int>(pid), sockets[0]});
  return static_cast<double>(pid);
}

void RunProgram(AccessThread& thread) {
  Pipe pipe;
  BlockClock clock(thread);
  for (size_t index = 0; index < thread.ops.size(); index++) {
    Op& op = thread.ops[index];
    thread.current.store(static_cast<int>(index), std::memory_order_release);
    thread.access_started_ns.store(MonotonicNs(), std::memory_order_release);
    if (op.kind == OP_SYSCALL) {
      thread.returns.push_back(op.call == CALL_FORK ? RunFork(thread, op) : RunSyscall(op));
      clock.Resync();
      continue;
    }
    bool write = op.kind == OP_WRITE;
    std::vector<uint8_t> buffer;
    uint8_t* bytes;
    if (write) {
      bytes = op.data.data();
    } else {
      buffer.resize(op.length);
      bytes = buffer.data();
    }
    size_t length = write ? op.data.size() : op.length;
    if (op.kernel) {
      int error = pipe.Open() ? (write ? KernelWrite(pipe, op.address, bytes, length, clock)
                                       : KernelRead(pipe, op.address, bytes, length, clock))
                              : errno;
      if (error != 0) {
        // A syscall that cannot fault the memory in fails; the thread goes on.
        thread.error = error;
        continue;
      }
    } else {
      // One guarded copy per page span, each timed (see BlockClock).
      std::atomic<size_t> done{0};
      int outcome = COPY_DONE;
      for (size_t offset = 0; outcome == COPY_DONE && offset < length; offset = done.load()) {
        uintptr_t at = op.address + offset;
        size_t end = offset + std::min<size_t>(4096 - (at & 4095), length - offset);
        clock.Start();
        outcome = GuardedCopy(&thread.guard, op.address, bytes, end, write, &done, false);
        clock.Stop();
      }
      if (outcome == COPY_SIGNAL) {
        thread.signal = thread.guard.signal;
        thread.signal_address = thread.guard.address;
        thread.signal_code = thread.guard.code;
        thread.end = thread.signal == SIGBUS ? END_SIGBUS : END_SEGV;
        return;
      }
    }
    if (!write) thread.reads.push_back(std::move(buffer));
  }
}

void* ThreadMain(void* argument) {
  auto* holder = static_cast<std::shared_ptr<AccessThread>*>(argument);
  std::shared_ptr<AccessThread> thread = *holder;
  delete holder;
  PrepareThread(&thread->guard);
  if (!thread->name.empty()) {
    std::string short_name = thread->name.substr(0, 15);
    pthread_setname_np(pthread_self(), short_name.c_str());
  }
  thread->tid.store(GetTid(), std::memory_order_release);
  try {
    RunProgram(*thread);
  } catch (...) {
    // Out of memory for a read buffer: the thread ends with what it has.
    thread->error = ENOMEM;
  }
  thread->current.store(-1, std::memory_order_release);
  ReleaseThread();
  std::function<void()> on_exit = thread->on_exit;
  thread->finished.store(true, std::memory_order_release);
  if (on_exit) on_exit();
  return nullptr;
}

// --- the direct-access helper ----------------------------------------------

struct Helper {
  pthread_t handle{};
  std::mutex mutex;
  std::condition_variable job_ready;
  std::condition_variable job_done;
  bool has_job = false;
  bool finished = true;
  uintptr_t address = 0;
  uint8_t* buffer = nullptr;
  size_t length = 0;
  bool write = false;
  std::atomic<size_t> done{0};
  int outcome = COPY_DONE;
  Guard guard;
  std::atomic<int> tid{0};
};

Helper* helper = nullptr;

void* HelperMain(void* argument) {
  Helper* self = static_cast<Helper*>(argument);
  PrepareThread(&self->guard);
  pthread_setname_np(pthread_self(), "faultline-direct");
  self->tid.store(GetTid(), std::memory_order_release);
  std::unique_lock<std::mutex> lock(self->mutex);
  for (;;) {
    self->job_ready.wait(lock, [self] { return self->has_job; });
    self->has_job = false;
    lock.unlock();
    int outcome = GuardedCopy(&self->guard, self->address, self->buffer, self->length, self->write,
                              &self->done, true);
    lock.lock();
    self->outcome = outcome;
    self->finished = true;
    self->job_done.notify_all();
  }
  return nullptr;
}

Helper* GetHelper() {
  if (helper != nullptr) return helper;
  Helper* created = new Helper();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int error = pthread_create(&created->handle, &attr, HelperMain, created);
  pthread_attr_destroy(&attr);
  if (error != 0) {
    delete created;
    return nullptr;
  }
  while (created->tid.load(std::memory_order_acquire) == 0) sched_yield();
  helper = created;
  return helper;
}

int pagemap_fd = -1;

// Whether every page of the range is present (and, for a write, carries no
// uffd-wp bit): then the access cannot reach userfaultfd.
bool SafeWithoutFault(uintptr_t address, size_t length, bool write) {
  uintptr_t first = address & ~static_cast<uintptr_t>(4095);
  size_t pages = (address + length - first + 4095) / 4096;
  if (pages > 4096) return false;
  uint64_t entries[4096];
  if (!ReadPagemap(first, pages, entries)) return false;
  for (size_t i = 0; i < pages; i++) {
    if (!(entries[i] & kPagemapPresent)) return false;
    if (write && (entries[i] & kPagemapUffdWp)) return false;
  }
  return true;
}

}  // namespace

void (*ForkedChildMain)(int socket) = nullptr;

void ResetAfterFork() {
  // The helper thread and its lock stayed behind in the parent.
  helper = nullptr;
  if (pagemap_fd >= 0) {
    close(pagemap_fd);
    pagemap_fd = -1;
  }
  ResetGuardAfterFork();
}

long IsolatedMmap(uintptr_t address, size_t length, int prot, int flags, int fd, long offset,
                  uintptr_t* reservation, size_t* reserved) {
  *reservation = 0;
  *reserved = 0;
  auto plain = [&]() -> long {
    void* result = mmap(reinterpret_cast<void*>(address), length, prot, flags, fd, offset);
    return result == MAP_FAILED ? -errno : static_cast<long>(reinterpret_cast<uintptr_t>(result));
  };
  constexpr int kUnguarded = MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_32BIT;
  if (address != 0 || (flags & kUnguarded) != 0 || length == 0) return plain();
  constexpr size_t kGuard = 64 * 1024;
  int huge_shift = (flags >> MAP_HUGE_SHIFT) & MAP_HUGE_MASK;
  size_t align = huge_shift > 21 && huge_shift < 40 ? size_t{1} << huge_shift : size_t{2} << 20;
  if (length > (size_t{1} << 46)) return plain();
  size_t span = (length + align - 1) / align * align;
  size_t total = span + 2 * kGuard + align;
  void* guard = mmap(nullptr, total, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (guard == MAP_FAILED) return plain();
  uintptr_t base = reinterpret_cast<uintptr_t>(guard);
  uintptr_t start = (base + kGuard + align - 1) / align * align;
  void* placed = mmap(reinterpret_cast<void*>(start), length, prot, flags | MAP_FIXED, fd, offset);
  if (placed == MAP_FAILED) {
    munmap(guard, total);
    return plain();
  }
  *reservation = base;
  *reserved = total;
  return static_cast<long>(start);
}

bool ReadPagemap(uintptr_t address, size_t pages, uint64_t* out) {
  if (pagemap_fd < 0) {
    pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap_fd < 0) return false;
  }
  size_t want = pages * 8;
  size_t got = 0;
  off_t offset = static_cast<off_t>((address / 4096) * 8);
  while (got < want) {
    ssize_t n = pread(pagemap_fd, reinterpret_cast<uint8_t*>(out) + got, want - got, offset + got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

int StartAccessThread(std::shared_ptr<AccessThread> thread) {
  InstallHandlers();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  auto* holder = new std::shared_ptr<AccessThread>(thread);
  int error = pthread_create(&thread->handle, &attr, ThreadMain, holder);
  pthread_attr_destroy(&attr);
  if (error != 0) {
    delete holder;
    return error;
  }
  // The tid is part of the handle the caller gets back.
  while (thread->tid.load(std::memory_order_acquire) == 0) sched_yield();
  return 0;
}

const char* AccessThreadState(AccessThread& thread) {
  if (thread.finished.load(std::memory_order_acquire)) {
    return thread.end == END_SIGBUS ? "sigbus" : thread.end == END_SEGV ? "segv" : "done";
  }
  int tid = thread.tid.load(std::memory_order_acquire);
  if (tid == 0) return "running";
  if (!TaskAsleep(tid)) return "running";
  if (TaskWchan(tid).find("userfault") != std::string::npos) return "blocked";
  int64_t started = thread.access_started_ns.load(std::memory_order_acquire);
  if (thread.current.load(std::memory_order_acquire) >= 0 && started != 0 &&
      MonotonicNs() - started > kBlockedGraceNs && TaskAsleep(tid)) {
    return "blocked";
  }
  return "running";
}

const char* WaitAccessThread(AccessThread& thread) {
  for (int round = 0;; round++) {
    const char* state = AccessThreadState(thread);
    if (std::strcmp(state, "running") != 0) return state;
    struct timespec pause = {0, round < 100 ? 20000 : 500000};
    nanosleep(&pause, nullptr);
  }
}

DirectOutcome DirectAccess(uintptr_t address, uint8_t* buffer, size_t length, bool write) {
  InstallHandlers();
  DirectOutcome result;
  if (length == 0) return result;
  if (SafeWithoutFault(address, length, write)) {
    static thread_local Guard guard;
    std::atomic<size_t> done{0};
    int outcome = GuardedCopy(&guard, address, buffer, length, write, &done, false);
    if (outcome == COPY_SIGNAL) {
      result.kind = COPY_SIGNAL;
      result.signal = guard.signal;
      result.address = guard.address;
      result.code = guard.code;
    }
    return result;
  }
  Helper* self = GetHelper();
  if (self == nullptr) {
    result.kind = COPY_ABORTED;
    result.address = address;
    return result;
  }
  std::unique_lock<std::mutex> lock(self->mutex);
  self->address = address;
  self->buffer = buffer;
  self->length = length;
  self->write = write;
  self->done.store(0);
  self->finished = false;
  self->has_job = true;
  self->job_ready.notify_one();
  bool aborted = false;
  int64_t asleep_since = 0;
  while (!self->finished) {
    self->job_done.wait_for(lock, std::chrono::microseconds(500));
    if (self->finished || aborted) continue;
    int tid = self->tid.load();
    lock.unlock();
    bool blocked = false;
    if (TaskAsleep(tid)) {
      if (TaskWchan(tid).find("userfault") != std::string::npos) {
        blocked = true;
      } else if (asleep_since == 0) {
        asleep_since = MonotonicNs();
      } else if (MonotonicNs() - asleep_since > kBlockedGraceNs) {
        blocked = true;
      }
    } else {
      asleep_since = 0;
    }
    lock.lock();
    if (blocked && !self->finished) {
      aborted = true;
      pthread_kill(self->handle, AbortSignal());
    }
  }
  if (self->outcome == COPY_SIGNAL) {
    result.kind = COPY_SIGNAL;
    result.signal = self->guard.signal;
    result.address = self->guard.address;
    result.code = self->guard.code;
  } else if (self->outcome == COPY_ABORTED) {
    result.kind = COPY_ABORTED;
    result.address = address + self->done.load();
  }
  return result;
}

long ReadNeverBlocking(int fd, void* buffer, size_t length) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_NONBLOCK) != 0) return read(fd, buffer, length);
  if (fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -1;
  long result = read(fd, buffer, length);
  int saved = errno;
  fcntl(fd, F_SETFL, flags);
  errno = saved;
  return result;
}

}  // namespace faultline
