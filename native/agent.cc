#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>

#include "guard.h"
#include "threads.h"

namespace faultline {

namespace {

// -1: no deadline.
int64_t deadline_ms = -1;
bool timed_out = false;

bool WaitReadable(int fd) {
  if (deadline_ms < 0) return true;
  for (;;) {
    int64_t left = deadline_ms - MonotonicNs() / 1000000;
    if (left <= 0) {
      timed_out = true;
      return false;
    }
    struct pollfd entry = {fd, POLLIN, 0};
    int ready = poll(&entry, 1, static_cast<int>(left));
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
  }
}

// Reads `length` bytes; a descriptor passed with them (SCM_RIGHTS) goes to
// *passed (closed when the caller takes none, or already has one).
bool ReadAll(int fd, void* buffer, size_t length, int* passed = nullptr) {
  uint8_t* at = static_cast<uint8_t*>(buffer);
  while (length > 0) {
    if (!WaitReadable(fd)) return false;
    struct iovec io = {at, length};
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    struct msghdr message = {};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int received;
      std::memcpy(&received, CMSG_DATA(c), sizeof received);
      if (passed != nullptr && *passed < 0) {
        *passed = received;
      } else {
        close(received);
      }
    }
    at += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

// Sends one descriptor with a single byte of `buffer` (SCM_RIGHTS); true if that byte went.
bool SendFd(int socket, const uint8_t* byte, int fd) {
  struct iovec io = {const_cast<uint8_t*>(byte), 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr message = {};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  struct cmsghdr* c = CMSG_FIRSTHDR(&message);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    ssize_t n = sendmsg(socket, &message, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    return n == 1;
  }
}

bool WriteAll(int fd, const void* buffer, size_t length) {
  const uint8_t* at = static_cast<const uint8_t*>(buffer);
  while (length > 0) {
    ssize_t n = send(fd, at, length, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    at += n;
    length -= static_cast<size_t>(n);
  }
  return true;
}

// A frame with a fixed header of `header` bytes followed by u32 length +
// data; `pass` (if not -1) travels with the frame's first byte.
bool SendFrame(int fd, const void* header, size_t header_length, const uint8_t* data, size_t length,
               int pass = -1) {
  uint32_t data_length = static_cast<uint32_t>(length);
  uint32_t total = static_cast<uint32_t>(header_length + 4 + length);
  const uint8_t* total_bytes = reinterpret_cast<const uint8_t*>(&total);
  bool head = pass < 0 ? WriteAll(fd, total_bytes, 4) : SendFd(fd, total_bytes, pass) && WriteAll(fd, total_bytes + 1, 3);
  return head && WriteAll(fd, header, header_length) && WriteAll(fd, &data_length, 4) &&
         (length == 0 || WriteAll(fd, data, length));
}

bool ReceiveFrame(int fd, void* header, size_t header_length, std::vector<uint8_t>* data, int* passed = nullptr) {
  uint32_t total = 0;
  uint32_t data_length = 0;
  if (!ReadAll(fd, &total, 4, passed) || total < header_length + 4) return false;
  if (!ReadAll(fd, header, header_length) || !ReadAll(fd, &data_length, 4)) return false;
  if (data_length != total - header_length - 4) return false;
  data->resize(data_length);
  return data_length == 0 || ReadAll(fd, data->data(), data_length);
}

struct RequestHeader {
  uint32_t op;
  uint32_t pad;
  int64_t args[8];
};

struct ReplyHeader {
  int64_t result;
  int64_t extra[8];
};

int64_t Syscall(long result) { return result == -1 ? -static_cast<int64_t>(errno) : result; }

// The agent's threads (index = the id the parent knows) and memory syscalls
// that went to sleep on an event and finish in the background.
std::vector<std::shared_ptr<AccessThread>> threads;
std::vector<std::shared_ptr<AccessThread>> sleeping;

// A memory syscall that may sleep until a userfaultfd event is read: it runs
// in a thread, so the agent keeps answering.
int64_t SleepingSyscall(int call, const int64_t* args) {
  auto thread = std::make_shared<AccessThread>();
  Op op;
  op.kind = OP_SYSCALL;
  op.call = call;
  for (int i = 0; i < 6; i++) op.args[i] = static_cast<long>(args[i]);
  thread->ops.push_back(std::move(op));
  int error = StartAccessThread(thread);
  if (error != 0) return -error;
  WaitAccessThread(*thread);
  if (!thread->finished.load(std::memory_order_acquire)) {
    sleeping.push_back(thread);
    return AGENT_WOULD_SLEEP;
  }
  return static_cast<int64_t>(thread->returns.empty() ? -ENOSYS : thread->returns[0]);
}

// Buffers of UFFDIO_COPY calls still asleep (their threads write into them).
std::vector<std::shared_ptr<std::vector<uint8_t>>> sleeping_args;

// UFFDIO_COPY reads its source with copy_from_user: a source in a
// MISSING-registered range puts the caller to sleep in handle_userfault
// until someone resolves that fault. It runs in a thread so the agent keeps
// answering; AGENT_WOULD_SLEEP tells the backend it went to sleep.
int64_t SleepingCopy(int fd, unsigned long request, const std::vector<uint8_t>& arg, std::vector<uint8_t>* out) {
  auto buffer = std::make_shared<std::vector<uint8_t>>(arg);
  auto thread = std::make_shared<AccessThread>();
  Op op;
  op.kind = OP_SYSCALL;
  op.call = CALL_IOCTL;
  op.args[0] = fd;
  op.args[1] = static_cast<long>(request);
  op.args[2] = static_cast<long>(reinterpret_cast<uintptr_t>(buffer->data()));
  thread->ops.push_back(std::move(op));
  int error = StartAccessThread(thread);
  if (error != 0) return -error;
  WaitAccessThread(*thread);
  *out = *buffer;
  if (!thread->finished.load(std::memory_order_acquire)) {
    sleeping.push_back(thread);
    sleeping_args.push_back(buffer);
    return AGENT_WOULD_SLEEP;
  }
  return static_cast<int64_t>(thread->returns.empty() ? -ENOSYS : thread->returns[0]);
}

template <typename T>
T Take(const std::vector<uint8_t>& data, size_t* at) {
  T value{};
  if (*at + sizeof(T) <= data.size()) std::memcpy(&value, data.data() + *at, sizeof(T));
  *at += sizeof(T);
  return value;
}

template <typename T>
void Put(std::vector<uint8_t>* data, T value) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&value);
  data->insert(data->end(), bytes, bytes + sizeof(T));
}

// Ops as the parent encodes them: u32 count, then per op i32 kind, i32
// kernel, i32 call, i32 keep count, i64 address, i64 length, i64 args[6],
// i32 keep fds..., u32 data length, data.
bool ParseOps(const std::vector<uint8_t>& data, std::vector<Op>* ops) {
  size_t at = 0;
  uint32_t count = Take<uint32_t>(data, &at);
  for (uint32_t i = 0; i < count && at <= data.size(); i++) {
    Op op;
    op.kind = Take<int32_t>(data, &at);
    op.kernel = Take<int32_t>(data, &at) != 0;
    op.call = Take<int32_t>(data, &at);
    int32_t keep = Take<int32_t>(data, &at);
    op.address = static_cast<uintptr_t>(Take<int64_t>(data, &at));
    op.length = static_cast<size_t>(Take<int64_t>(data, &at));
    for (int j = 0; j < 6; j++) op.args[j] = static_cast<long>(Take<int64_t>(data, &at));
    for (int32_t j = 0; j < keep; j++) op.keep_fds.push_back(Take<int32_t>(data, &at));
    uint32_t length = Take<uint32_t>(data, &at);
    if (at + length > data.size()) return false;
    op.data.assign(data.begin() + static_cast<long>(at), data.begin() + static_cast<long>(at + length));
    at += length;
    if (op.kind == OP_READ && op.length > (size_t{1} << 32)) return false;
    ops->push_back(std::move(op));
  }
  return at <= data.size();
}

int StateCode(const char* state) {
  if (std::strcmp(state, "blocked") == 0) return 1;
  if (std::strcmp(state, "done") == 0) return 2;
  if (std::strcmp(state, "sigbus") == 0) return 3;
  if (std::strcmp(state, "segv") == 0) return 4;
  return 0;
}

AccessThread* ThreadAt(int64_t index) {
  if (index < 0 || static_cast<size_t>(index) >= threads.size()) return nullptr;
  return threads[static_cast<size_t>(index)].get();
}

void Serve(const RequestHeader& request, const std::vector<uint8_t>& data, ReplyHeader* reply,
           std::vector<uint8_t>* out, int* pass) {
  const int64_t* a = request.args;
  int fd = static_cast<int>(a[0]);
  switch (request.op) {
    case AGENT_MMAP: {
      if (a[3] & MAP_FIXED) {
        reply->result = SleepingSyscall(CALL_MMAP, a);
        break;
      }
      uintptr_t reservation = 0;
      size_t reserved = 0;
      reply->result = IsolatedMmap(static_cast<uintptr_t>(a[0]), static_cast<size_t>(a[1]), static_cast<int>(a[2]),
                                   static_cast<int>(a[3]), static_cast<int>(a[4]), static_cast<long>(a[5]),
                                   &reservation, &reserved);
      break;
    }
    case AGENT_MUNMAP:
      reply->result = SleepingSyscall(CALL_MUNMAP, a);
      break;
    case AGENT_MADVISE:
      reply->result = SleepingSyscall(CALL_MADVISE, a);
      break;
    case AGENT_MREMAP:
      reply->result = SleepingSyscall(CALL_MREMAP, a);
      break;
    case AGENT_MPROTECT:
      reply->result = Syscall(syscall(SYS_mprotect, a[0], a[1], a[2]));
      break;
    case AGENT_MEMFD_CREATE: {
      std::string name(data.begin(), data.end());
      reply->result = Syscall(syscall(SYS_memfd_create, name.c_str(), static_cast<unsigned int>(a[0])));
      break;
    }
    case AGENT_OPEN: {
      std::string path(data.begin(), data.end());
      reply->result = Syscall(open(path.c_str(), static_cast<int>(a[0])));
      break;
    }
    case AGENT_FTRUNCATE:
      reply->result = Syscall(ftruncate(fd, a[1]));
      break;
    case AGENT_FALLOCATE:
      reply->result = Syscall(fallocate(fd, static_cast<int>(a[1]), a[2], a[3]));
      break;
    case AGENT_PREAD: {
      out->resize(static_cast<size_t>(a[1]));
      reply->result = Syscall(pread(fd, out->data(), out->size(), a[2]));
      out->resize(reply->result > 0 ? static_cast<size_t>(reply->result) : 0);
      break;
    }
    case AGENT_PWRITE:
      reply->result = Syscall(pwrite(fd, data.data(), data.size(), a[1]));
      break;
    case AGENT_WRITE:
      reply->result = Syscall(write(fd, data.data(), data.size()));
      break;
    case AGENT_LSEEK:
      reply->result = Syscall(lseek(fd, a[1], static_cast<int>(a[2])));
      break;
    case AGENT_CLOSE:
      reply->result = Syscall(close(fd));
      break;
    case AGENT_USERFAULTFD:
      reply->result = Syscall(syscall(SYS_userfaultfd, static_cast<int>(a[0])));
      break;
    case AGENT_IOCTL: {
      unsigned long request_code = static_cast<uint32_t>(a[1]);
      // A closed fd fails at once (and the thread's own pipe would take its number).
      if (a[2] == 0 && request_code == UFFDIO_COPY && data.size() >= sizeof(struct uffdio_copy) &&
          fcntl(fd, F_GETFD) >= 0) {
        reply->result = SleepingCopy(fd, request_code, data, out);
      } else if (a[2] == 0) {
        *out = data;
        reply->result = Syscall(ioctl(fd, request_code, out->data()));
      } else if (a[2] == 1) {
        reply->result = Syscall(ioctl(fd, request_code, static_cast<unsigned long>(a[3])));
      } else {
        reply->result = Syscall(ioctl(fd, request_code, nullptr));
      }
      break;
    }
    case AGENT_READ: {
      out->resize(static_cast<size_t>(a[1]));
      // Never sleeps, whatever the file's O_NONBLOCK (the backend's read contract).
      reply->result = Syscall(ReadNeverBlocking(fd, out->data(), out->size()));
      out->resize(reply->result > 0 ? static_cast<size_t>(reply->result) : 0);
      break;
    }
    case AGENT_POLL: {
      struct pollfd entry = {fd, POLLIN | POLLOUT, 0};
      int result = poll(&entry, 1, 0);
      reply->result = result < 0 ? -errno : entry.revents;
      break;
    }
    case AGENT_READ_MEMORY:
    case AGENT_WRITE_MEMORY: {
      bool write = request.op == AGENT_WRITE_MEMORY;
      std::vector<uint8_t> buffer = write ? data : std::vector<uint8_t>(static_cast<size_t>(a[1]));
      DirectOutcome outcome = DirectAccess(static_cast<uintptr_t>(a[0]), buffer.data(), buffer.size(), write);
      reply->result = outcome.kind;
      reply->extra[0] = outcome.signal;
      reply->extra[1] = static_cast<int64_t>(outcome.address);
      reply->extra[2] = outcome.code;
      if (!write && outcome.kind == COPY_DONE) *out = std::move(buffer);
      break;
    }
    case AGENT_PAGEMAP: {
      size_t pages = static_cast<size_t>(a[1]);
      out->resize(pages * 8);
      reply->result = pages == 0 || ReadPagemap(static_cast<uintptr_t>(a[0]), pages,
                                                reinterpret_cast<uint64_t*>(out->data()))
                          ? 0
                          : -EINVAL;
      break;
    }
    case AGENT_SPAWN: {
      auto thread = std::make_shared<AccessThread>();
      if (!ParseOps(data, &thread->ops)) {
        reply->result = -EINVAL;
        break;
      }
      int error = StartAccessThread(thread);
      if (error != 0) {
        reply->result = -error;
        break;
      }
      threads.push_back(thread);
      reply->result = static_cast<int64_t>(threads.size() - 1);
      reply->extra[0] = thread->tid.load();
      break;
    }
    case AGENT_THREAD_STATE: {
      AccessThread* thread = ThreadAt(a[0]);
      reply->result = thread == nullptr ? -ESRCH : StateCode(AccessThreadState(*thread));
      break;
    }
    case AGENT_THREAD_RESULT: {
      AccessThread* thread = ThreadAt(a[0]);
      if (thread == nullptr) {
        reply->result = -ESRCH;
        break;
      }
      if (!thread->finished.load(std::memory_order_acquire)) {
        reply->result = 0;
        break;
      }
      reply->result = 1;
      Put<int32_t>(out, thread->end);
      Put<int32_t>(out, thread->signal);
      Put<int64_t>(out, static_cast<int64_t>(thread->signal_address));
      Put<int32_t>(out, thread->signal_code);
      Put<int32_t>(out, thread->error);
      Put<int64_t>(out, thread->faults);
      Put<uint32_t>(out, static_cast<uint32_t>(thread->returns.size()));
      for (double value : thread->returns) Put<double>(out, value);
      Put<uint32_t>(out, static_cast<uint32_t>(thread->reads.size()));
      for (const auto& bytes : thread->reads) {
        Put<uint32_t>(out, static_cast<uint32_t>(bytes.size()));
        out->insert(out->end(), bytes.begin(), bytes.end());
      }
      Put<uint32_t>(out, static_cast<uint32_t>(thread->children.size()));
      for (const ForkedChild& child : thread->children) Put<int32_t>(out, child.pid);
      // Last, so that a reader made before it stops at the children.
      Put<int64_t>(out, thread->blocked_ns);
      break;
    }
    case AGENT_TAKE_CHILD: {
      // The socket to a child a fork access of this agent made goes to the
      // backend, which then talks to the child directly.
      AccessThread* thread = ThreadAt(a[0]);
      if (thread == nullptr || !thread->finished.load(std::memory_order_acquire) || a[1] < 0 ||
          static_cast<size_t>(a[1]) >= thread->children.size()) {
        reply->result = -ESRCH;
        break;
      }
      ForkedChild& child = thread->children[static_cast<size_t>(a[1])];
      if (child.socket < 0) {
        reply->result = -EBADF;
        break;
      }
      reply->result = child.pid;
      *pass = child.socket;
      child.socket = -1;
      break;
    }
    case AGENT_THREAD_SIGNAL: {
      AccessThread* thread = ThreadAt(a[0]);
      int signal = static_cast<int>(a[1]);
      if (thread == nullptr) {
        reply->result = -ESRCH;
      } else if (!InstallIgnoredSignal(signal)) {
        reply->result = -EINVAL;
      } else {
        reply->result = Syscall(syscall(SYS_tgkill, getpid(), thread->tid.load(), signal));
      }
      break;
    }
    default:
      reply->result = -ENOSYS;
  }
}

}  // namespace

AgentCallStatus AgentCall(int socket, uint32_t op, const int64_t args[8], const uint8_t* data, size_t length,
                          AgentReply* reply, int timeout_ms) {
  RequestHeader request = {};
  request.op = op;
  for (int i = 0; i < 8; i++) request.args[i] = args[i];
  if (!SendFrame(socket, &request, sizeof request, data, length)) return AGENT_CALL_BROKEN;
  ReplyHeader header = {};
  deadline_ms = MonotonicNs() / 1000000 + timeout_ms;
  timed_out = false;
  reply->fd = -1;
  bool received = ReceiveFrame(socket, &header, sizeof header, &reply->data, &reply->fd);
  deadline_ms = -1;
  if (!received) return timed_out ? AGENT_CALL_TIMEOUT : AGENT_CALL_BROKEN;
  reply->result = header.result;
  for (int i = 0; i < 8; i++) reply->extra[i] = header.extra[i];
  return AGENT_CALL_OK;
}

void AgentServe(int socket) {
  // A child a fork access makes serves as an agent too; its socket goes to
  // the backend (AGENT_TAKE_CHILD). Children are reaped by the kernel: the
  // backend, not their parent, watches them.
  ForkedChildMain = AgentServe;
  signal(SIGCHLD, SIG_IGN);
  InstallHandlers();
  // The agent's own descriptors exist before the program's: a descriptor
  // the program closes is then not reused by the agent behind its back.
  uint64_t entry = 0;
  ReadPagemap(reinterpret_cast<uintptr_t>(&entry) & ~uintptr_t{4095}, 1, &entry);
  for (;;) {
    RequestHeader request = {};
    std::vector<uint8_t> data;
    if (!ReceiveFrame(socket, &request, sizeof request, &data)) _exit(0);
    ReplyHeader reply = {};
    std::vector<uint8_t> out;
    if (request.op == AGENT_EXIT) {
      SendFrame(socket, &reply, sizeof reply, nullptr, 0);
      _exit(0);
    }
    int pass = -1;
    Serve(request, data, &reply, &out, &pass);
    bool sent = SendFrame(socket, &reply, sizeof reply, out.data(), out.size(), pass);
    if (pass >= 0) close(pass);
    if (!sent) _exit(0);
  }
}

void InstallAgent() { ForkedChildMain = AgentServe; }

}  // namespace faultline
