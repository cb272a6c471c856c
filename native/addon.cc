// faultline's host addon: the system calls the host backend makes, memory
// accesses that survive SIGSEGV/SIGBUS, access threads that may sleep on
// userfaultfd faults, and readiness waits on the libuv loop.
//
// Calls return their result, or -errno on failure: the TypeScript side turns
// that into a KernelError naming the call.
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <napi.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "scm.h"
#include "agent.h"
#include "bench.h"
#include "binary_handler.h"
#include "guard.h"
#include "threads.h"

namespace faultline {
namespace {

double Result(long value) { return value < 0 ? -static_cast<double>(errno) : static_cast<double>(value); }

// A JavaScript number as the 64-bit value a C caller would pass: negative
// values wrap as in a cast from a signed type, out-of-range values saturate.
int64_t ToInt64(double value) {
  if (value != value) return 0;
  if (value >= 9223372036854775807.0) return INT64_MAX;
  if (value <= -9223372036854775808.0) return INT64_MIN;
  return static_cast<int64_t>(value);
}

uintptr_t AddressArg(const Napi::CallbackInfo& info, size_t index) {
  double value = info[index].As<Napi::Number>().DoubleValue();
  if (value >= 18446744073709551615.0) return UINTPTR_MAX;
  if (value >= 9223372036854775808.0) return static_cast<uintptr_t>(value);
  return static_cast<uintptr_t>(ToInt64(value));
}

long LongArg(const Napi::CallbackInfo& info, size_t index) {
  return static_cast<long>(ToInt64(info[index].As<Napi::Number>().DoubleValue()));
}

int IntArg(const Napi::CallbackInfo& info, size_t index) { return info[index].As<Napi::Number>().Int32Value(); }

// The bytes of a Uint8Array (or Buffer) argument.
uint8_t* BytesArg(const Napi::CallbackInfo& info, size_t index, size_t* length) {
  Napi::TypedArray array = info[index].As<Napi::TypedArray>();
  Napi::ArrayBuffer buffer = array.ArrayBuffer();
  *length = array.ByteLength();
  return static_cast<uint8_t*>(buffer.Data()) + array.ByteOffset();
}

Napi::Value Num(Napi::Env env, double value) { return Napi::Number::New(env, value); }

Napi::Value Userfaultfd(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(syscall(SYS_userfaultfd, IntArg(info, 0))));
}

Napi::Value Open(const Napi::CallbackInfo& info) {
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return Num(info.Env(), Result(open(path.c_str(), IntArg(info, 1))));
}

Napi::Value Ioctl(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  unsigned long request = static_cast<uint32_t>(info[1].As<Napi::Number>().Int64Value());
  long result;
  if (info[2].IsTypedArray()) {
    size_t length;
    uint8_t* bytes = BytesArg(info, 2, &length);
    result = ioctl(fd, request, bytes);
  } else if (info[2].IsNumber()) {
    result = ioctl(fd, request, static_cast<unsigned long>(info[2].As<Napi::Number>().Int64Value()));
  } else {
    result = ioctl(fd, request, nullptr);
  }
  return Num(info.Env(), Result(result));
}

Napi::Value Mmap(const Napi::CallbackInfo& info) {
  void* result = mmap(reinterpret_cast<void*>(AddressArg(info, 0)), static_cast<size_t>(LongArg(info, 1)),
                      IntArg(info, 2), IntArg(info, 3), IntArg(info, 4), static_cast<off_t>(LongArg(info, 5)));
  if (result == MAP_FAILED) return Num(info.Env(), -static_cast<double>(errno));
  return Num(info.Env(), static_cast<double>(reinterpret_cast<uintptr_t>(result)));
}

// mmapIsolated(...mmap args): [address or -errno, guarded range start, length].
Napi::Value MmapIsolated(const Napi::CallbackInfo& info) {
  uintptr_t reservation = 0;
  size_t reserved = 0;
  long result = IsolatedMmap(AddressArg(info, 0), static_cast<size_t>(LongArg(info, 1)), IntArg(info, 2),
                             IntArg(info, 3), IntArg(info, 4), LongArg(info, 5), &reservation, &reserved);
  Napi::Array out = Napi::Array::New(info.Env(), 3);
  out.Set(0u, Num(info.Env(), static_cast<double>(result)));
  out.Set(1u, Num(info.Env(), static_cast<double>(reservation)));
  out.Set(2u, Num(info.Env(), static_cast<double>(reserved)));
  return out;
}

Napi::Value Munmap(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(syscall(SYS_munmap, AddressArg(info, 0), LongArg(info, 1))));
}

Napi::Value Mprotect(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(syscall(SYS_mprotect, AddressArg(info, 0), LongArg(info, 1), IntArg(info, 2))));
}

Napi::Value Madvise(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(syscall(SYS_madvise, AddressArg(info, 0), LongArg(info, 1), IntArg(info, 2))));
}

Napi::Value Mremap(const Napi::CallbackInfo& info) {
  long result = syscall(SYS_mremap, AddressArg(info, 0), LongArg(info, 1), LongArg(info, 2), IntArg(info, 3),
                        AddressArg(info, 4));
  if (result == -1) return Num(info.Env(), -static_cast<double>(errno));
  return Num(info.Env(), static_cast<double>(static_cast<unsigned long>(result)));
}

Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value();
  return Num(info.Env(), Result(syscall(SYS_memfd_create, name.c_str(), IntArg(info, 1))));
}

Napi::Value Ftruncate(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(ftruncate(IntArg(info, 0), static_cast<off_t>(LongArg(info, 1)))));
}

Napi::Value Fallocate(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(fallocate(IntArg(info, 0), IntArg(info, 1), static_cast<off_t>(LongArg(info, 2)),
                                          static_cast<off_t>(LongArg(info, 3)))));
}

Napi::Value Pread(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return Num(info.Env(), Result(pread(IntArg(info, 0), bytes, length, static_cast<off_t>(LongArg(info, 2)))));
}

Napi::Value Pwrite(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return Num(info.Env(), Result(pwrite(IntArg(info, 0), bytes, length, static_cast<off_t>(LongArg(info, 2)))));
}

Napi::Value Write(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return Num(info.Env(), Result(write(IntArg(info, 0), bytes, length)));
}

Napi::Value Lseek(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(lseek(IntArg(info, 0), static_cast<off_t>(LongArg(info, 1)), IntArg(info, 2))));
}

Napi::Value Read(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return Num(info.Env(), Result(read(IntArg(info, 0), bytes, length)));
}

// read(2) that never sleeps, whatever the file's O_NONBLOCK (see ReadNeverBlocking).
Napi::Value ReadNowait(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return Num(info.Env(), Result(ReadNeverBlocking(IntArg(info, 0), bytes, length)));
}

Napi::Value Poll(const Napi::CallbackInfo& info) {
  struct pollfd entry = {IntArg(info, 0), POLLIN | POLLOUT, 0};
  int result = poll(&entry, 1, 0);
  if (result < 0) return Num(info.Env(), -static_cast<double>(errno));
  return Num(info.Env(), entry.revents);
}

// --- waiting for readability on the event loop -----------------------------

struct Poller {
  uv_poll_t handle;
  int fd;
  Napi::Env env;
  std::vector<Napi::FunctionReference> waiters;
  std::unique_ptr<Napi::AsyncContext> context;
  explicit Poller(Napi::Env e) : fd(-1), env(e) {}
};

// Per JavaScript thread: a poller belongs to its thread's event loop and env, and fd
// numbers are per process, so worker threads must not find one another's.
thread_local std::unordered_map<int, Poller*> pollers;

void RunWaiters(Poller* poller) {
  std::vector<Napi::FunctionReference> waiters = std::move(poller->waiters);
  poller->waiters.clear();
  napi_env env = poller->env;
  Napi::HandleScope scope(poller->env);
  napi_value global = poller->env.Global();
  for (auto& waiter : waiters) {
    // Not FunctionReference::MakeCallback: when the call fails it builds a
    // Napi::Error, and on a worker thread that is exiting (process.exit,
    // terminate) no JavaScript can run any more, so building it aborted the
    // whole process. A waiter that threw is reported as uncaught, as Node
    // does for its own callbacks; on an exiting thread the call is dropped.
    napi_value result;
    napi_status status = napi_make_callback(env, *poller->context, global, waiter.Value(), 0, nullptr, &result);
    if (status == napi_ok) continue;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value error;
      if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    }
  }
}

void OnReadable(uv_poll_t* handle, int, int) {
  Poller* poller = static_cast<Poller*>(handle->data);
  uv_poll_stop(handle);
  RunWaiters(poller);
}

void ClosePoller(int fd) {
  auto found = pollers.find(fd);
  if (found == pollers.end()) return;
  Poller* poller = found->second;
  pollers.erase(found);
  uv_poll_stop(&poller->handle);
  // Waiters learn that the fd is gone (poll would now report POLLNVAL).
  if (!poller->waiters.empty()) RunWaiters(poller);
  uv_close(reinterpret_cast<uv_handle_t*>(&poller->handle),
           [](uv_handle_t* handle) { delete static_cast<Poller*>(handle->data); });
}

// waitReadable(fd, callback): 0, or -errno when the fd cannot be polled.
Napi::Value WaitReadable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = IntArg(info, 0);
  Poller* poller;
  auto found = pollers.find(fd);
  if (found != pollers.end()) {
    poller = found->second;
  } else {
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return Num(env, -EINVAL);
    poller = new Poller(env);
    poller->fd = fd;
    poller->handle.data = poller;
    int error = uv_poll_init(loop, &poller->handle, fd);
    if (error != 0) {
      delete poller;
      return Num(env, error);
    }
    poller->context = std::make_unique<Napi::AsyncContext>(env, "faultline-poll");
    pollers[fd] = poller;
  }
  poller->waiters.push_back(Napi::Persistent(info[1].As<Napi::Function>()));
  int error = uv_poll_start(&poller->handle, UV_READABLE | UV_DISCONNECT, OnReadable);
  if (error != 0) {
    poller->waiters.pop_back();
    return Num(env, error);
  }
  return Num(env, 0);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = IntArg(info, 0);
  ClosePoller(fd);
  return Num(info.Env(), Result(close(fd)));
}

// --- memory accesses by the calling thread ---------------------------------

Napi::Value OutcomeValue(Napi::Env env, const DirectOutcome& outcome) {
  if (outcome.kind == COPY_DONE) return env.Null();
  Napi::Array array = Napi::Array::New(env, 4);
  array.Set(0u, Num(env, outcome.kind));
  array.Set(1u, Num(env, outcome.signal));
  array.Set(2u, Num(env, static_cast<double>(outcome.address)));
  array.Set(3u, Num(env, outcome.code));
  return array;
}

// readMemory(address, buffer) / writeMemory(address, buffer): null, or
// [kind, signal, address, si_code] with kind 1 = signal, 2 = would block.
Napi::Value ReadMemory(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return OutcomeValue(info.Env(), DirectAccess(AddressArg(info, 0), bytes, length, false));
}

Napi::Value WriteMemory(const Napi::CallbackInfo& info) {
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  return OutcomeValue(info.Env(), DirectAccess(AddressArg(info, 0), bytes, length, true));
}

// pagemap(address, pages): the raw 64-bit entries as a Buffer, or null.
Napi::Value Pagemap(const Napi::CallbackInfo& info) {
  uintptr_t address = AddressArg(info, 0);
  size_t pages = static_cast<size_t>(LongArg(info, 1));
  Napi::Buffer<uint8_t> buffer = Napi::Buffer<uint8_t>::New(info.Env(), pages * 8);
  if (pages > 0 && !ReadPagemap(address, pages, reinterpret_cast<uint64_t*>(buffer.Data()))) {
    return info.Env().Null();
  }
  return buffer;
}

// --- access threads --------------------------------------------------------

using ThreadHandle = std::shared_ptr<AccessThread>;

ThreadHandle& HandleArg(const Napi::CallbackInfo& info, size_t index) {
  return *info[index].As<Napi::External<ThreadHandle>>().Data();
}

// spawnThread(ops, name, onExit): ops is an array of
// {kind, address, length, data?, kernel?, call?, args?}. Returns a handle.
Napi::Value SpawnThread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto thread = std::make_shared<AccessThread>();
  Napi::Array ops = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < ops.Length(); i++) {
    Napi::Object source = ops.Get(i).As<Napi::Object>();
    Op op;
    op.kind = source.Get("kind").As<Napi::Number>().Int32Value();
    op.address = static_cast<uintptr_t>(ToInt64(source.Get("address").As<Napi::Number>().DoubleValue()));
    op.length = static_cast<size_t>(ToInt64(source.Get("length").As<Napi::Number>().DoubleValue()));
    op.kernel = source.Get("kernel").ToBoolean().Value();
    if (op.kind == OP_READ && op.length > (size_t{1} << 32)) {
      throw Napi::RangeError::New(env, "spawnThread: a read access is limited to 4 GiB");
    }
    Napi::Value data = source.Get("data");
    if (data.IsTypedArray()) {
      Napi::TypedArray array = data.As<Napi::TypedArray>();
      const uint8_t* start = static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      op.data.assign(start, start + array.ByteLength());
    }
    Napi::Value call = source.Get("call");
    if (call.IsNumber()) op.call = call.As<Napi::Number>().Int32Value();
    Napi::Value keep = source.Get("keep");
    if (keep.IsArray()) {
      Napi::Array list = keep.As<Napi::Array>();
      for (uint32_t j = 0; j < list.Length(); j++) op.keep_fds.push_back(list.Get(j).As<Napi::Number>().Int32Value());
    }
    Napi::Value args = source.Get("args");
    if (args.IsArray()) {
      Napi::Array list = args.As<Napi::Array>();
      for (uint32_t j = 0; j < list.Length() && j < 6; j++) {
        op.args[j] = static_cast<long>(ToInt64(list.Get(j).As<Napi::Number>().DoubleValue()));
      }
    }
    thread->ops.push_back(std::move(op));
  }
  thread->name = info[1].As<Napi::String>().Utf8Value();
  Napi::ThreadSafeFunction on_exit =
      Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "faultline-thread", 0, 1);
  thread->on_exit = [on_exit]() mutable {
    on_exit.BlockingCall();
    on_exit.Release();
  };
  int error = StartAccessThread(thread);
  if (error != 0) {
    on_exit.Release();
    return Num(env, -error);
  }
  return Napi::External<ThreadHandle>::New(env, new ThreadHandle(thread),
                                           [](Napi::Env, ThreadHandle* handle) { delete handle; });
}

Napi::Value ThreadTid(const Napi::CallbackInfo& info) { return Num(info.Env(), HandleArg(info, 0)->tid.load()); }

Napi::Value ThreadState(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), AccessThreadState(*HandleArg(info, 0)));
}

Napi::Value ThreadWait(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), WaitAccessThread(*HandleArg(info, 0)));
}

Napi::Value ThreadResult(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  AccessThread& thread = *HandleArg(info, 0);
  if (!thread.finished.load(std::memory_order_acquire)) return env.Null();
  Napi::Object result = Napi::Object::New(env);
  result.Set("state", AccessThreadState(thread));
  Napi::Array reads = Napi::Array::New(env, thread.reads.size());
  for (size_t i = 0; i < thread.reads.size(); i++) {
    reads.Set(static_cast<uint32_t>(i),
              Napi::Buffer<uint8_t>::Copy(env, thread.reads[i].data(), thread.reads[i].size()));
  }
  result.Set("reads", reads);
  result.Set("signal", thread.signal);
  result.Set("address", static_cast<double>(thread.signal_address));
  result.Set("code", thread.signal_code);
  result.Set("errno", thread.error);
  result.Set("faults", static_cast<double>(thread.faults));
  result.Set("blockedMs", static_cast<double>(thread.blocked_ns) / 1e6);
  Napi::Array returns = Napi::Array::New(env, thread.returns.size());
  for (size_t i = 0; i < thread.returns.size(); i++) returns.Set(static_cast<uint32_t>(i), thread.returns[i]);
  result.Set("returns", returns);
  Napi::Array children = Napi::Array::New(env, thread.children.size());
  for (size_t i = 0; i < thread.children.size(); i++) {
    Napi::Array child = Napi::Array::New(env, 2);
    child.Set(0u, Num(env, thread.children[i].pid));
    child.Set(1u, Num(env, thread.children[i].socket));
    children.Set(static_cast<uint32_t>(i), child);
  }
  result.Set("children", children);
  return result;
}

// signalThread(tid, signal): 0 or -errno. Faultline threads ignore the signal.
Napi::Value SignalThread(const Napi::CallbackInfo& info) {
  int tid = IntArg(info, 0);
  int signal = IntArg(info, 1);
  if (!InstallIgnoredSignal(signal)) return Num(info.Env(), -EINVAL);
  return Num(info.Env(), Result(syscall(SYS_tgkill, getpid(), tid, signal)));
}

// taskInfo(tid): {state, wchan} from /proc, for diagnostics.
Napi::Value TaskInfo(const Napi::CallbackInfo& info) {
  int tid = IntArg(info, 0);
  Napi::Object result = Napi::Object::New(info.Env());
  char state = TaskStateLetter(tid);
  result.Set("state", std::string(state == 0 ? "" : std::string(1, state)));
  result.Set("wchan", TaskWchan(tid));
  return result;
}

Napi::Value Gettid(const Napi::CallbackInfo& info) { return Num(info.Env(), GetTid()); }

// --- other processes (agents) ---------------------------------------------

// agentCall(socket, pid, op, args[8], data | null, timeoutMs): [result,
// extra0..7, data | null]; result is AGENT_GONE when the agent is gone. An
// agent that does not answer in time is killed.
Napi::Value AgentCallJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int socket = IntArg(info, 0);
  int pid = IntArg(info, 1);
  uint32_t op = static_cast<uint32_t>(IntArg(info, 2));
  int64_t args[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  Napi::Array list = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length() && i < 8; i++) args[i] = ToInt64(list.Get(i).As<Napi::Number>().DoubleValue());
  const uint8_t* data = nullptr;
  size_t length = 0;
  if (info[4].IsTypedArray()) data = BytesArg(info, 4, &length);
  AgentReply reply;
  AgentCallStatus status = AgentCall(socket, op, args, data, length, &reply, IntArg(info, 5));
  // Only a live child times out: its pid cannot have been reused yet.
  if (status == AGENT_CALL_TIMEOUT && pid > 0) kill(pid, SIGKILL);
  bool ok = status == AGENT_CALL_OK;
  Napi::Array out = Napi::Array::New(env, 11);
  int64_t failed = status == AGENT_CALL_TIMEOUT ? AGENT_HUNG : AGENT_GONE;
  out.Set(0u, Num(env, static_cast<double>(ok ? reply.result : failed)));
  for (uint32_t i = 0; i < 8; i++) out.Set(i + 1, Num(env, static_cast<double>(reply.extra[i])));
  if (ok && !reply.data.empty()) {
    out.Set(9u, Napi::Buffer<uint8_t>::Copy(env, reply.data.data(), reply.data.size()));
  } else {
    out.Set(9u, env.Null());
  }
  out.Set(10u, Num(env, ok ? reply.fd : -1));
  if (!ok && reply.fd >= 0) close(reply.fd);
  return out;
}

// spawnAgent(path, privileged): [pid, socket] of a fresh faultline_agent, or -errno.
Napi::Value SpawnAgent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  bool privileged = info[1].ToBoolean().Value();
  int sockets[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets) != 0) return Num(env, -errno);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the agent's end, now descriptor 3.
  posix_spawn_file_actions_adddup2(&actions, sockets[1], 3);
  std::string unprivileged = "unprivileged";
  std::string fd = "3";
  char* argv[] = {const_cast<char*>(path.c_str()), const_cast<char*>(fd.c_str()),
                  privileged ? nullptr : const_cast<char*>(unprivileged.c_str()), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = 0;
  int error = posix_spawn(&pid, path.c_str(), &actions, nullptr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  close(sockets[1]);
  if (error != 0) {
    close(sockets[0]);
    return Num(env, -error);
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Num(env, pid));
  out.Set(1u, Num(env, sockets[0]));
  return out;
}

// reap(pid, wait): waitpid; the pid once it has exited, 0 if it runs, or -errno.
Napi::Value Reap(const Napi::CallbackInfo& info) {
  int status = 0;
  pid_t result = waitpid(IntArg(info, 0), &status, info[1].ToBoolean().Value() ? 0 : WNOHANG);
  return Num(info.Env(), result < 0 ? -errno : result);
}

// reapStatus(pid, wait): waitpid; [pid, exit code or -1, signal or 0], 0 if
// it still runs (wait false), or -errno (ECHILD: not a child of ours).
Napi::Value ReapStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int status = 0;
  pid_t result;
  do {
    result = waitpid(IntArg(info, 0), &status, info[1].ToBoolean().Value() ? 0 : WNOHANG);
  } while (result < 0 && errno == EINTR);
  if (result <= 0) return Num(env, result < 0 ? -errno : 0);
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, Num(env, result));
  out.Set(1u, Num(env, WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  out.Set(2u, Num(env, WIFSIGNALED(status) ? WTERMSIG(status) : 0));
  return out;
}

// --- KVM -------------------------------------------------------------------

// kvmCreateVm(type): a VM fd, or -errno.
Napi::Value KvmCreateVm(const Napi::CallbackInfo& info) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return Num(info.Env(), -static_cast<double>(errno));
  long vm = ioctl(kvm, KVM_CREATE_VM, static_cast<unsigned long>(IntArg(info, 0)));
  int error = errno;
  close(kvm);
  if (vm < 0) return Num(info.Env(), -static_cast<double>(error));
  return Num(info.Env(), static_cast<double>(vm));
}

// kvmCheckExtension(fd, capability): the value, or -errno.
Napi::Value KvmCheckExtension(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(ioctl(IntArg(info, 0), KVM_CHECK_EXTENSION, static_cast<unsigned long>(IntArg(info, 1)))));
}

// kvmCreateGuestMemfd(vmFd, size, flags): a guest_memfd, or -errno.
Napi::Value KvmCreateGuestMemfd(const Napi::CallbackInfo& info) {
  struct {
    uint64_t size;
    uint64_t flags;
    uint64_t reserved[6];
  } request = {};
  static_assert(sizeof request == 64, "struct kvm_create_guest_memfd is 64 bytes");
  request.size = static_cast<uint64_t>(ToInt64(info[1].As<Napi::Number>().DoubleValue()));
  request.flags = static_cast<uint64_t>(ToInt64(info[2].As<Napi::Number>().DoubleValue()));
  // _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
  unsigned long request_code = _IOWR(KVMIO, 0xd4, decltype(request));
  return Num(info.Env(), Result(ioctl(IntArg(info, 0), request_code, &request)));
}


// --- Unix sockets and SCM_RIGHTS (Firecracker's uffd handshake) ------------

// Fills a sockaddr_un for `path`; false when the path does not fit.
bool UnixAddress(const std::string& path, struct sockaddr_un* address) {
  memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address->sun_path)) return false;
  memcpy(address->sun_path, path.c_str(), path.size());
  return true;
}

// unixListen(path): a bound, listening, non-blocking stream socket, or -errno.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  struct sockaddr_un address;
  if (!UnixAddress(info[0].As<Napi::String>().Utf8Value(), &address)) return Num(info.Env(), -ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Num(info.Env(), -errno);
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) < 0 || listen(fd, 1) < 0) {
    int error = errno;
    close(fd);
    return Num(info.Env(), -error);
  }
  return Num(info.Env(), fd);
}

// unixAccept(fd): a connected (blocking, close-on-exec) socket, or -errno
// (-EAGAIN while no connection is pending on the non-blocking listener).
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  return Num(info.Env(), Result(accept4(IntArg(info, 0), nullptr, nullptr, SOCK_CLOEXEC)));
}

// unixConnect(path): a connected stream socket, or -errno.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  struct sockaddr_un address;
  if (!UnixAddress(info[0].As<Napi::String>().Utf8Value(), &address)) return Num(info.Env(), -ENAMETOOLONG);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Num(info.Env(), -errno);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) < 0) {
    int error = errno;
    close(fd);
    return Num(info.Env(), -error);
  }
  return Num(info.Env(), fd);
}

// sendFdWithData(sock, data, fd): one sendmsg carrying `data` and `fd` (SCM_RIGHTS); bytes sent or -errno.
Napi::Value SendFdWithData(const Napi::CallbackInfo& info) {
  int sock = IntArg(info, 0);
  size_t length;
  uint8_t* bytes = BytesArg(info, 1, &length);
  int fd = IntArg(info, 2);
  if (length == 0) return Num(info.Env(), -EINVAL);
  ssize_t sent = SendWithFd(sock, bytes, length, fd);
  return Num(info.Env(), Result(sent));
}

// pidfdGetfd(pid, fd): a duplicate in this process of descriptor `fd` of process `pid`
// (pidfd_open + pidfd_getfd; close-on-exec), or -errno. How faultline takes the
// userfaultfd an agent process (a workload's VMM) created.
Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, IntArg(info, 0), 0));
  if (pidfd < 0) return Num(info.Env(), -errno);
  long taken = syscall(SYS_pidfd_getfd, pidfd, IntArg(info, 1), 0);
  int error = errno;
  close(pidfd);
  return Num(info.Env(), taken < 0 ? -error : taken);
}

// recvFdWithData(sock, maxBytes): {data, fd} (fd -1 when none came; close-on-exec), or -errno.
Napi::Value RecvFdWithData(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sock = IntArg(info, 0);
  long max = LongArg(info, 1);
  if (max <= 0 || max > (64L << 20)) return Num(env, -EINVAL);
  std::vector<uint8_t> buffer(static_cast<size_t>(max));
  int fd;
  int flags;
  ssize_t received = RecvWithFd(sock, buffer.data(), buffer.size(), &fd, &flags);
  if (received < 0) return Num(env, -errno);
  Napi::Object result = Napi::Object::New(env);
  result.Set("data", Napi::Buffer<uint8_t>::Copy(env, buffer.data(), static_cast<size_t>(received)));
  result.Set("fd", Num(env, fd));
  result.Set("truncated", Napi::Boolean::New(env, (flags & (MSG_TRUNC | MSG_CTRUNC)) != 0));
  return result;
}
}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallHandlers();
  InstallAgent();
  exports.Set("userfaultfd", Napi::Function::New(env, Userfaultfd));
  exports.Set("open", Napi::Function::New(env, Open));
  exports.Set("ioctl", Napi::Function::New(env, Ioctl));
  exports.Set("mmap", Napi::Function::New(env, Mmap));
  exports.Set("mmapIsolated", Napi::Function::New(env, MmapIsolated));
  exports.Set("munmap", Napi::Function::New(env, Munmap));
  exports.Set("mprotect", Napi::Function::New(env, Mprotect));
  exports.Set("madvise", Napi::Function::New(env, Madvise));
  exports.Set("mremap", Napi::Function::New(env, Mremap));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("ftruncate", Napi::Function::New(env, Ftruncate));
  exports.Set("fallocate", Napi::Function::New(env, Fallocate));
  exports.Set("pread", Napi::Function::New(env, Pread));
  exports.Set("pwrite", Napi::Function::New(env, Pwrite));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("lseek", Napi::Function::New(env, Lseek));
  exports.Set("readNowait", Napi::Function::New(env, ReadNowait));
  exports.Set("poll", Napi::Function::New(env, Poll));
  exports.Set("waitReadable", Napi::Function::New(env, WaitReadable));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("readMemory", Napi::Function::New(env, ReadMemory));
  exports.Set("writeMemory", Napi::Function::New(env, WriteMemory));
  exports.Set("pagemap", Napi::Function::New(env, Pagemap));
  exports.Set("spawnThread", Napi::Function::New(env, SpawnThread));
  exports.Set("threadTid", Napi::Function::New(env, ThreadTid));
  exports.Set("threadState", Napi::Function::New(env, ThreadState));
  exports.Set("threadResult", Napi::Function::New(env, ThreadResult));
  exports.Set("threadWait", Napi::Function::New(env, ThreadWait));
  exports.Set("signalThread", Napi::Function::New(env, SignalThread));
  exports.Set("taskInfo", Napi::Function::New(env, TaskInfo));
  exports.Set("gettid", Napi::Function::New(env, Gettid));
  exports.Set("agentCall", Napi::Function::New(env, AgentCallJs));
  exports.Set("spawnAgent", Napi::Function::New(env, SpawnAgent));
  exports.Set("reap", Napi::Function::New(env, Reap));
  exports.Set("reapStatus", Napi::Function::New(env, ReapStatus));
  exports.Set("kvmCreateVm", Napi::Function::New(env, KvmCreateVm));
  exports.Set("kvmCheckExtension", Napi::Function::New(env, KvmCheckExtension));
  exports.Set("kvmCreateGuestMemfd", Napi::Function::New(env, KvmCreateGuestMemfd));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
  exports.Set("sendFdWithData", Napi::Function::New(env, SendFdWithData));
  exports.Set("recvFdWithData", Napi::Function::New(env, RecvFdWithData));
  exports.Set("pidfdGetfd", Napi::Function::New(env, PidfdGetfd));
  RegisterBench(env, exports);  // benchHandler, benchMemcpy, spinReadable (bench.cc)
  RegisterBinaryHandler(env, exports);  // handler binaries under seccomp (binary_handler.cc)
  return exports;
}

}  // namespace faultline

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return faultline::Init(env, exports); }

NODE_API_MODULE(faultline_host, InitModule)
