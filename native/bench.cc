// The native side of `faultline bench` (see bench.h).
//
// benchHandler runs one row of the benchmark inside the call: it maps the
// region, starts one faulting thread and one handler thread, times the
// faulting thread from its first touch to its last touch completing, checks
// every page afterwards, and unmaps and closes everything. A failing call
// ends the run with an error string naming the call and errno; the faulting
// thread is then released by closing the userfaultfd (the kernel wakes every
// waiter and stops handling the range), and a SIGBUS/SIGSEGV in it is caught
// by its guard (guard.h), so the process survives.
//
// The handler's wait: on this kind of VM a sleep/wake pair costs more than
// the fault itself, so the handler first retries a non-blocking read() up to
// `spin` times and only then sleeps in poll() on the userfaultfd and an
// eventfd that says the run is over.
//
// Placement (`pin`) is left to the scheduler unless asked. Measured on a
// 2-vCPU VM whose idle vCPUs halt at once (MISSING + COPY 4 KiB): both
// threads on one CPU make ~120k faults/s even without spinning (a wake is a
// context switch there, not an IPI to a halted vCPU); unpinned and spinning,
// 50-64k; on two pinned CPUs with a handler that sleeps, ~16k.
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <vector>

#include "guard.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif

namespace faultline {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHugePage = size_t{2} << 20;

enum class Row { kMissingCopy, kMissingZeropage, kMinorContinue, kWp, kHugetlbCopy };

struct RowInfo {
  const char* name;
  Row row;
  size_t page;
};

constexpr RowInfo kRows[] = {
    {"missing-copy", Row::kMissingCopy, kPage},     {"missing-zeropage", Row::kMissingZeropage, kPage},
    {"minor-continue", Row::kMinorContinue, kPage}, {"wp", Row::kWp, kPage},
    {"hugetlb-copy", Row::kHugetlbCopy, kHugePage},
};

std::string Errno(const char* call, int error) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(error);
#else
  const char* name = nullptr;
#endif
  char buffer[256];
  if (name != nullptr) {
    std::snprintf(buffer, sizeof buffer, "%s: %s (%s)", call, name, std::strerror(error));
  } else {
    std::snprintf(buffer, sizeof buffer, "%s: errno %d (%s)", call, error, std::strerror(error));
  }
  return buffer;
}

// The per-page pattern: the page's index (4 KiB pages from the region start)
// in the first 8 bytes, then one byte derived from the index.
uint8_t PatternByte(uint64_t index) { return static_cast<uint8_t>((index ^ (index >> 8)) * 31 + 7); }

void FillPattern(uint8_t* start, size_t length) {
  for (size_t offset = 0; offset < length; offset += kPage) {
    uint64_t index = offset / kPage;
    std::memcpy(start + offset, &index, sizeof index);
    std::memset(start + offset + sizeof index, PatternByte(index), kPage - sizeof index);
  }
}

// The byte the wp row's faulting thread writes at offset 8 of each chunk: never the pattern's.
constexpr size_t kMarkerOffset = 8;
uint8_t MarkerByte(uint64_t index) { return static_cast<uint8_t>(~PatternByte(index)); }

struct Bench {
  Row row = Row::kMissingCopy;
  size_t length = 0;
  size_t chunk = 0;
  long spin = kBenchDefaultSpin;
  int vcpus = 1;         // faulting threads, each over an equal slice of the region
  int fault_cpu = -1;    // -1: not pinned
  int handler_cpu = -1;

  int uffd = -1;
  bool uffd_closed = false;  // by the handler, after an error (read only once it has been joined)
  int memfd = -1;
  int stop_fd = -1;
  uint8_t* region = nullptr;  // the registered ("guest") mapping
  uint8_t* source = nullptr;  // UFFDIO_COPY's source (copy rows)
  uint8_t* filler = nullptr;  // a second mapping of the memfd (minor-continue)

  std::atomic<bool> done{false};
  std::atomic<bool> abort{false};

  // Handler results (read after it has been joined).
  uint64_t faults = 0;
  uint64_t polls = 0;
  std::string handler_error;
  // Faulting-thread results (read after they have been joined): the earliest start, the latest end.
  std::atomic<int64_t> started_ns{0};
  std::atomic<int64_t> ended_ns{0};
  std::mutex fault_mutex;
  std::string fault_error;
};

// One faulting thread's slice of the region.
struct Slice {
  struct Bench* bench;
  size_t begin;
  size_t end;
};

void NoteStart(std::atomic<int64_t>& at, int64_t now) {
  int64_t seen = at.load();
  while ((seen == 0 || now < seen) && !at.compare_exchange_weak(seen, now)) {
  }
}

void NoteEnd(std::atomic<int64_t>& at, int64_t now) {
  int64_t seen = at.load();
  while (now > seen && !at.compare_exchange_weak(seen, now)) {
  }
}

void Pin(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int OpenUserfaultfd() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0 || errno != EPERM) return fd;
  // Without CAP_SYS_PTRACE (and vm.unprivileged_userfaultfd 0): /dev/userfaultfd.
  int device = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (device < 0) {
    errno = EPERM;
    return -1;
  }
  fd = ioctl(device, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
  int error = errno;
  close(device);
  errno = error;
  return fd;
}

// --- the handler ------------------------------------------------------------

// Resolves one message; false with b.handler_error set on failure.
bool Resolve(Bench& b, const struct uffd_msg& message) {
  if (message.event != UFFD_EVENT_PAGEFAULT) {
    char text[64];
    std::snprintf(text, sizeof text, "read(userfaultfd): unexpected event 0x%x", message.event);
    b.handler_error = text;
    return false;
  }
  uintptr_t address = static_cast<uintptr_t>(message.arg.pagefault.address);
  uint64_t flags = message.arg.pagefault.flags;
  uintptr_t start = reinterpret_cast<uintptr_t>(b.region);
  if (address < start || address >= start + b.length) {
    char text[96];
    std::snprintf(text, sizeof text, "read(userfaultfd): fault at 0x%" PRIxPTR " outside the region", address);
    b.handler_error = text;
    return false;
  }
  uint64_t expected = b.row == Row::kWp              ? (UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE)
                      : b.row == Row::kMinorContinue ? UFFD_PAGEFAULT_FLAG_MINOR
                                                     : 0;
  if (flags != expected) {
    char text[128];
    std::snprintf(text, sizeof text, "read(userfaultfd): fault flags 0x%" PRIx64 ", expected 0x%" PRIx64, flags,
                  expected);
    b.handler_error = text;
    return false;
  }
  size_t offset = (address - start) / b.chunk * b.chunk;
  uint64_t dst = start + offset;
  int result = 0;
  const char* call = "";
  switch (b.row) {
    case Row::kMissingCopy:
    case Row::kHugetlbCopy: {
      struct uffdio_copy copy = {};
      copy.dst = dst;
      copy.src = reinterpret_cast<uintptr_t>(b.source + offset);
      copy.len = b.chunk;
      call = "ioctl(UFFDIO_COPY)";
      result = ioctl(b.uffd, UFFDIO_COPY, &copy);
      if (result == 0 && copy.copy != static_cast<int64_t>(b.chunk)) errno = EIO, result = -1;
      break;
    }
    case Row::kMissingZeropage: {
      struct uffdio_zeropage zero = {};
      zero.range = {dst, b.chunk};
      call = "ioctl(UFFDIO_ZEROPAGE)";
      result = ioctl(b.uffd, UFFDIO_ZEROPAGE, &zero);
      if (result == 0 && zero.zeropage != static_cast<int64_t>(b.chunk)) errno = EIO, result = -1;
      break;
    }
    case Row::kMinorContinue: {
      struct uffdio_continue cont = {};
      cont.range = {dst, b.chunk};
      call = "ioctl(UFFDIO_CONTINUE)";
      result = ioctl(b.uffd, UFFDIO_CONTINUE, &cont);
      if (result == 0 && cont.mapped != static_cast<int64_t>(b.chunk)) errno = EIO, result = -1;
      break;
    }
    case Row::kWp: {
      struct uffdio_writeprotect wp = {};
      wp.range = {dst, b.chunk};
      wp.mode = 0;  // un-protect, and wake the faulting thread
      call = "ioctl(UFFDIO_WRITEPROTECT)";
      result = ioctl(b.uffd, UFFDIO_WRITEPROTECT, &wp);
      break;
    }
  }
  if (result != 0) {
    int error = errno;
    if (error == EEXIST) {
      // Already resolved (a repeated fault): just wake the thread.
      struct uffdio_range range = {dst, b.chunk};
      if (ioctl(b.uffd, UFFDIO_WAKE, &range) == 0) {
        b.faults++;
        return true;
      }
      error = errno;
      call = "ioctl(UFFDIO_WAKE)";
    }
    b.handler_error = Errno(call, error);
    return false;
  }
  b.faults++;
  return true;
}

void* HandlerMain(void* argument) {
  Bench& b = *static_cast<Bench*>(argument);
  Pin(b.handler_cpu);
  struct uffd_msg messages[64];
  long misses = 0;
  for (;;) {
    ssize_t n = read(b.uffd, messages, sizeof messages);
    if (n > 0) {
      misses = 0;
      size_t count = static_cast<size_t>(n) / sizeof messages[0];
      bool ok = true;
      for (size_t i = 0; i < count && ok; i++) ok = Resolve(b, messages[i]);
      if (!ok) break;
      continue;
    }
    if (n == 0) {
      b.handler_error = "read(userfaultfd): end of file";
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      b.handler_error = Errno("read(userfaultfd)", errno);
      break;
    }
    if (b.done.load(std::memory_order_acquire)) break;
    if (++misses <= b.spin) continue;
    misses = 0;
    b.polls++;
    struct pollfd fds[2] = {{b.uffd, POLLIN, 0}, {b.stop_fd, POLLIN, 0}};
    int ready = poll(fds, 2, -1);
    if (ready < 0 && errno != EINTR) {
      b.handler_error = Errno("poll(userfaultfd)", errno);
      break;
    }
    if (ready > 0 && (fds[0].revents & (POLLERR | POLLNVAL)) != 0) {
      char text[64];
      std::snprintf(text, sizeof text, "poll(userfaultfd): revents 0x%x", fds[0].revents);
      b.handler_error = text;
      break;
    }
  }
  if (!b.handler_error.empty()) {
    // Release the faulting thread: closing the userfaultfd wakes every waiter
    // and the kernel handles the range's faults itself from then on.
    b.abort.store(true, std::memory_order_release);
    close(b.uffd);
    b.uffd_closed = true;
  }
  return nullptr;
}

// --- the faulting thread ----------------------------------------------------

void* FaultMain(void* argument) {
  const Slice& slice = *static_cast<Slice*>(argument);
  Bench& b = *slice.bench;
  Pin(b.fault_cpu);
  Guard guard;
  PrepareThread(&guard);
  volatile uint8_t* region = b.region;
  const size_t chunk = b.chunk;
  const bool write = b.row == Row::kWp;
  volatile uint8_t sink = 0;
  if (sigsetjmp(guard.env, 0) != 0) {
    guard.active = 0;
    char text[96];
    std::snprintf(text, sizeof text, "faulting thread: signal %d at 0x%" PRIxPTR " (si_code %d)", guard.signal,
                  static_cast<uintptr_t>(guard.address), guard.code);
    {
      std::lock_guard<std::mutex> lock(b.fault_mutex);
      if (b.fault_error.empty()) b.fault_error = text;
    }
    NoteEnd(b.ended_ns, MonotonicNs());
    ReleaseThread();
    return nullptr;
  }
  guard.active = 1;
  NoteStart(b.started_ns, MonotonicNs());
  for (size_t offset = slice.begin; offset < slice.end; offset += chunk) {
    if (write) {
      region[offset + kMarkerOffset] = MarkerByte(offset / kPage);
    } else {
      sink = region[offset];
    }
    if (b.abort.load(std::memory_order_relaxed)) break;
  }
  NoteEnd(b.ended_ns, MonotonicNs());
  guard.active = 0;
  (void)sink;
  ReleaseThread();
  return nullptr;
}

// --- setup, verification, teardown --------------------------------------------

std::string Register(Bench& b, uint64_t mode, uint64_t needed_ioctl, const char* needed_name) {
  struct uffdio_register reg = {};
  reg.range = {reinterpret_cast<uintptr_t>(b.region), b.length};
  reg.mode = mode;
  if (ioctl(b.uffd, UFFDIO_REGISTER, &reg) != 0) return Errno("ioctl(UFFDIO_REGISTER)", errno);
  if ((reg.ioctls & (uint64_t{1} << needed_ioctl)) == 0) {
    return std::string("ioctl(UFFDIO_REGISTER): the range does not support ") + needed_name;
  }
  return "";
}

uint8_t* Map(size_t length, int prot, int flags, int fd, const char* call, std::string* error) {
  void* address = mmap(nullptr, length, prot, flags, fd, 0);
  if (address == MAP_FAILED) {
    *error = Errno(call, errno);
    return nullptr;
  }
  return static_cast<uint8_t*>(address);
}

std::string Setup(Bench& b) {
  std::string error;
  const int rw = PROT_READ | PROT_WRITE;
  const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  b.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (b.stop_fd < 0) return Errno("eventfd", errno);
  b.uffd = OpenUserfaultfd();
  if (b.uffd < 0) return Errno("userfaultfd", errno);
  struct uffdio_api api = {};
  api.api = UFFD_API;
  switch (b.row) {
    case Row::kMinorContinue:
      api.features = UFFD_FEATURE_MINOR_SHMEM;
      break;
    case Row::kHugetlbCopy:
      api.features = UFFD_FEATURE_MISSING_HUGETLBFS;
      break;
    case Row::kWp:
      // Not needed to register WP on anonymous memory (the kernel reports
      // UFFD_PAGEFAULT_FLAG_WP regardless), but it says the kernel supports it.
      api.features = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
      break;
    default:
      break;
  }
  if (ioctl(b.uffd, UFFDIO_API, &api) != 0) return Errno("ioctl(UFFDIO_API)", errno);

  switch (b.row) {
    case Row::kMissingCopy:
    case Row::kHugetlbCopy: {
      b.source = Map(b.length, rw, anon | MAP_POPULATE, -1, "mmap(source)", &error);
      if (b.source == nullptr) return error;
      FillPattern(b.source, b.length);
      int flags = b.row == Row::kHugetlbCopy ? anon | MAP_HUGETLB : anon;
      b.region = Map(b.length, rw, flags, -1, b.row == Row::kHugetlbCopy ? "mmap(MAP_HUGETLB)" : "mmap(region)",
                     &error);
      if (b.region == nullptr) return error;
      return Register(b, UFFDIO_REGISTER_MODE_MISSING, _UFFDIO_COPY, "UFFDIO_COPY");
    }
    case Row::kMissingZeropage:
      b.region = Map(b.length, rw, anon, -1, "mmap(region)", &error);
      if (b.region == nullptr) return error;
      return Register(b, UFFDIO_REGISTER_MODE_MISSING, _UFFDIO_ZEROPAGE, "UFFDIO_ZEROPAGE");
    case Row::kMinorContinue: {
      b.memfd = static_cast<int>(syscall(SYS_memfd_create, "faultline-bench", MFD_CLOEXEC));
      if (b.memfd < 0) return Errno("memfd_create", errno);
      if (ftruncate(b.memfd, static_cast<off_t>(b.length)) != 0) return Errno("ftruncate(memfd)", errno);
      b.filler = Map(b.length, rw, MAP_SHARED, b.memfd, "mmap(memfd, filler)", &error);
      if (b.filler == nullptr) return error;
      FillPattern(b.filler, b.length);  // fills the page cache
      b.region = Map(b.length, rw, MAP_SHARED, b.memfd, "mmap(memfd, guest)", &error);
      if (b.region == nullptr) return error;
      return Register(b, UFFDIO_REGISTER_MODE_MINOR, _UFFDIO_CONTINUE, "UFFDIO_CONTINUE");
    }
    case Row::kWp: {
      b.region = Map(b.length, rw, anon, -1, "mmap(region)", &error);
      if (b.region == nullptr) return error;
      FillPattern(b.region, b.length);  // populates every page
      error = Register(b, UFFDIO_REGISTER_MODE_WP, _UFFDIO_WRITEPROTECT, "UFFDIO_WRITEPROTECT");
      if (!error.empty()) return error;
      struct uffdio_writeprotect wp = {};
      wp.range = {reinterpret_cast<uintptr_t>(b.region), b.length};
      wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
      if (ioctl(b.uffd, UFFDIO_WRITEPROTECT, &wp) != 0) return Errno("ioctl(UFFDIO_WRITEPROTECT, WP)", errno);
      return "";
    }
  }
  return "unknown row";
}

std::string PageMismatch(const char* what, size_t page, size_t offset, unsigned got, unsigned expected) {
  char text[160];
  std::snprintf(text, sizeof text, "verify: %s page %zu byte %zu is 0x%02x, expected 0x%02x", what, page, offset, got,
                expected);
  return text;
}

std::string Verify(const Bench& b) {
  const uint8_t* region = b.region;
  if (b.row == Row::kMissingZeropage) {
    for (size_t offset = 0; offset < b.length; offset += sizeof(uint64_t)) {
      uint64_t word;
      std::memcpy(&word, region + offset, sizeof word);
      if (word == 0) continue;
      for (size_t at = offset; at < offset + sizeof word; at++) {
        if (region[at] != 0) return PageMismatch("zero", at / kPage, at % kPage, region[at], 0);
      }
    }
    return "";
  }
  uint8_t expected[kPage];
  for (size_t offset = 0; offset < b.length; offset += kPage) {
    uint64_t index = offset / kPage;
    std::memcpy(expected, &index, sizeof index);
    std::memset(expected + sizeof index, PatternByte(index), kPage - sizeof index);
    if (b.row == Row::kWp && offset % b.chunk == 0) expected[kMarkerOffset] = MarkerByte(index);
    if (std::memcmp(region + offset, expected, kPage) == 0) continue;
    for (size_t at = 0; at < kPage; at++) {
      if (region[offset + at] != expected[at]) {
        return PageMismatch("pattern", index, at, region[offset + at], expected[at]);
      }
    }
  }
  return "";
}

void Teardown(Bench& b) {
  if (b.uffd >= 0 && !b.uffd_closed) close(b.uffd);
  b.uffd = -1;
  if (b.region != nullptr) munmap(b.region, b.length);
  if (b.source != nullptr) munmap(b.source, b.length);
  if (b.filler != nullptr) munmap(b.filler, b.length);
  if (b.memfd >= 0) close(b.memfd);
  if (b.stop_fd >= 0) close(b.stop_fd);
  b.region = b.source = b.filler = nullptr;
  b.memfd = b.stop_fd = -1;
}

std::string Run(Bench& b, BenchResult* result) {
  std::string error = Setup(b);
  if (!error.empty()) return error;
  pthread_t handler;
  int created = pthread_create(&handler, nullptr, HandlerMain, &b);
  if (created != 0) return Errno("pthread_create(handler)", created);
  std::vector<Slice> slices;
  const size_t chunks = b.length / b.chunk;
  for (int vcpu = 0; vcpu < b.vcpus; vcpu++) {
    slices.push_back({&b, chunks * vcpu / b.vcpus * b.chunk, chunks * (vcpu + 1) / b.vcpus * b.chunk});
  }
  std::vector<pthread_t> faulters;
  for (Slice& slice : slices) {
    pthread_t faulter;
    created = pthread_create(&faulter, nullptr, FaultMain, &slice);
    if (created != 0) break;
    faulters.push_back(faulter);
  }
  if (created != 0) {
    // Closing the userfaultfd releases any faulting thread already started.
    b.abort.store(true, std::memory_order_release);
    b.done.store(true, std::memory_order_release);
    uint64_t one = 1;
    (void)!write(b.stop_fd, &one, sizeof one);
    pthread_join(handler, nullptr);
    if (!b.uffd_closed) {
      close(b.uffd);
      b.uffd_closed = true;
    }
    for (pthread_t faulter : faulters) pthread_join(faulter, nullptr);
    return Errno("pthread_create(faulting thread)", created);
  }
  for (pthread_t faulter : faulters) pthread_join(faulter, nullptr);
  b.done.store(true, std::memory_order_release);
  uint64_t one = 1;
  // Adding 1 to an eventfd at 0 cannot fail (only an overflow of its counter would).
  (void)!write(b.stop_fd, &one, sizeof one);
  pthread_join(handler, nullptr);
  result->faults = b.faults;
  result->polls = b.polls;
  result->ns = b.ended_ns.load() - b.started_ns.load();
  if (!b.handler_error.empty()) return b.handler_error;
  if (!b.fault_error.empty()) return b.fault_error;
  return Verify(b);
}

}  // namespace

BenchResult RunBenchHandler(const BenchConfig& config) {
  BenchResult result;
  const RowInfo* info = nullptr;
  for (const RowInfo& candidate : kRows) {
    if (config.row == candidate.name) info = &candidate;
  }
  if (info == nullptr) {
    result.error = "benchHandler: unknown row '" + config.row +
                   "' (missing-copy, missing-zeropage, minor-continue, wp, hugetlb-copy)";
    return result;
  }
  size_t chunk = config.bytes_per_fault == 0 ? info->page : config.bytes_per_fault;
  char text[200];
  if (chunk % info->page != 0) {
    std::snprintf(text, sizeof text, "benchHandler: bytesPerFault %zu is not a multiple of the %s page size %zu",
                  chunk, info->name, info->page);
    result.error = text;
    return result;
  }
  if (config.region_bytes == 0 || config.region_bytes % chunk != 0) {
    std::snprintf(text, sizeof text, "benchHandler: regionBytes %zu is not a positive multiple of bytesPerFault %zu",
                  config.region_bytes, chunk);
    result.error = text;
    return result;
  }
  Bench b;
  b.row = info->row;
  b.length = config.region_bytes;
  b.chunk = chunk;
  b.spin = config.spin < 0 ? 0 : config.spin;
  if (config.vcpus < 1 || static_cast<size_t>(config.vcpus) > config.region_bytes / chunk) {
    std::snprintf(text, sizeof text, "benchHandler: vcpus %d is not between 1 and the %zu chunks of the region",
                  config.vcpus, config.region_bytes / chunk);
    result.error = text;
    return result;
  }
  b.vcpus = config.vcpus;
  if (config.pin != "none") {
    cpu_set_t allowed;
    int here = sched_getcpu();
    if (config.pin != "same" && config.pin != "split") {
      result.error = "benchHandler: pin '" + config.pin + "' is not none, same or split";
      return result;
    }
    if (here < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
      result.error = Errno("sched_getaffinity", errno);
      return result;
    }
    b.fault_cpu = b.handler_cpu = here;
    if (config.pin == "split") {
      b.handler_cpu = -1;
      for (int step = 1; step < CPU_SETSIZE && b.handler_cpu < 0; step++) {
        int cpu = (here + step) % CPU_SETSIZE;
        if (CPU_ISSET(cpu, &allowed)) b.handler_cpu = cpu;
      }
      if (b.handler_cpu < 0) {
        result.error = "benchHandler: pin 'split' needs two CPUs";
        return result;
      }
    }
  }
  try {
    result.error = Run(b, &result);
  } catch (const std::exception& exception) {
    result.error = std::string("benchHandler: ") + exception.what();
  }
  Teardown(b);
  return result;
}

MemcpyResult RunBenchMemcpy(size_t region_bytes, size_t chunk_bytes) {
  MemcpyResult result;
  if (region_bytes == 0 || chunk_bytes == 0) {
    result.error = "benchMemcpy: regionBytes and chunkBytes must be positive";
    return result;
  }
  const int rw = PROT_READ | PROT_WRITE;
  const int anon = MAP_PRIVATE | MAP_ANONYMOUS;
  std::string error;
  uint8_t* source = Map(region_bytes, rw, anon | MAP_POPULATE, -1, "mmap(source)", &error);
  uint8_t* prefaulted = nullptr;
  uint8_t* fresh = nullptr;
  auto copy = [&](uint8_t* destination) {
    int64_t start = MonotonicNs();
    for (size_t offset = 0; offset < region_bytes; offset += chunk_bytes) {
      size_t length = chunk_bytes < region_bytes - offset ? chunk_bytes : region_bytes - offset;
      std::memcpy(destination + offset, source + offset, length);
    }
    int64_t ns = MonotonicNs() - start;
    if (std::memcmp(destination, source, region_bytes) != 0) error = "benchMemcpy: the copy differs from its source";
    return ns;
  };
  if (source != nullptr) {
    FillPattern(source, region_bytes - region_bytes % kPage);
    prefaulted = Map(region_bytes, rw, anon | MAP_POPULATE, -1, "mmap(destination, MAP_POPULATE)", &error);
  }
  if (prefaulted != nullptr) {
    // MAP_POPULATE faults the pages in; writing them once more makes sure none is the shared zero page.
    std::memset(prefaulted, 1, region_bytes);
    result.ns = copy(prefaulted);
    munmap(prefaulted, region_bytes);
    if (error.empty()) fresh = Map(region_bytes, rw, anon, -1, "mmap(destination)", &error);
  }
  if (fresh != nullptr) {
    result.ns_fresh = copy(fresh);
    munmap(fresh, region_bytes);
  }
  if (source != nullptr) munmap(source, region_bytes);
  result.error = error;
  return result;
}

int SpinReadable(int fd, long tries) {
  struct pollfd entry = {fd, POLLIN, 0};
  for (long i = 0; i < tries; i++) {
    int ready = poll(&entry, 1, 0);
    if (ready > 0) return entry.revents;
    if (ready < 0 && errno != EINTR) return -errno;
  }
  return 0;
}

namespace {

double NumberField(const Napi::Object& object, const char* name, double fallback) {
  Napi::Value value = object.Get(name);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsNumber()) throw Napi::TypeError::New(object.Env(), std::string(name) + " must be a number");
  double number = value.As<Napi::Number>().DoubleValue();
  if (!(number >= 0) || number > 9007199254740991.0) {
    throw Napi::RangeError::New(object.Env(), std::string(name) + " must be a non-negative safe integer");
  }
  return number;
}

Napi::Object ConfigArg(const Napi::CallbackInfo& info, const char* function) {
  if (info.Length() < 1 || !info[0].IsObject()) {
    throw Napi::TypeError::New(info.Env(), std::string(function) + ": expected a config object");
  }
  return info[0].As<Napi::Object>();
}

Napi::Value ErrorValue(Napi::Env env, const std::string& error) {
  if (error.empty()) return env.Null();
  return Napi::String::New(env, error);
}

// benchHandler({row, regionBytes, bytesPerFault?, spin?, vcpus?, pin?: 'none' | 'same' | 'split'}):
// {faults, polls, ns, error}.
Napi::Value BenchHandlerJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object object = ConfigArg(info, "benchHandler");
  BenchConfig config;
  Napi::Value row = object.Get("row");
  if (!row.IsString()) throw Napi::TypeError::New(env, "benchHandler: row must be a string");
  config.row = row.As<Napi::String>().Utf8Value();
  config.region_bytes = static_cast<size_t>(NumberField(object, "regionBytes", 0));
  config.bytes_per_fault = static_cast<size_t>(NumberField(object, "bytesPerFault", 0));
  config.spin = static_cast<long>(NumberField(object, "spin", kBenchDefaultSpin));
  config.vcpus = static_cast<int>(NumberField(object, "vcpus", 1));
  Napi::Value pin = object.Get("pin");
  if (pin.IsString()) config.pin = pin.As<Napi::String>().Utf8Value();
  else if (!pin.IsUndefined() && !pin.IsNull()) throw Napi::TypeError::New(env, "benchHandler: pin must be a string");
  BenchResult result = RunBenchHandler(config);
  Napi::Object out = Napi::Object::New(env);
  out.Set("faults", Napi::Number::New(env, static_cast<double>(result.faults)));
  out.Set("polls", Napi::Number::New(env, static_cast<double>(result.polls)));
  out.Set("ns", Napi::Number::New(env, static_cast<double>(result.ns)));
  out.Set("error", ErrorValue(env, result.error));
  return out;
}

// benchMemcpy({regionBytes, chunkBytes}): {ns, nsFresh, error}.
Napi::Value BenchMemcpyJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object object = ConfigArg(info, "benchMemcpy");
  size_t region = static_cast<size_t>(NumberField(object, "regionBytes", 0));
  size_t chunk = static_cast<size_t>(NumberField(object, "chunkBytes", kPage));
  MemcpyResult result = RunBenchMemcpy(region, chunk);
  Napi::Object out = Napi::Object::New(env);
  out.Set("ns", Napi::Number::New(env, static_cast<double>(result.ns)));
  out.Set("nsFresh", Napi::Number::New(env, static_cast<double>(result.ns_fresh)));
  out.Set("error", ErrorValue(env, result.error));
  return out;
}

// spinReadable(fd, tries): revents once readable, 0 after `tries` empty polls, or -errno.
Napi::Value SpinReadableJs(const Napi::CallbackInfo& info) {
  int fd = info[0].As<Napi::Number>().Int32Value();
  long tries = static_cast<long>(info[1].As<Napi::Number>().Int64Value());
  return Napi::Number::New(info.Env(), SpinReadable(fd, tries));
}

}  // namespace

void RegisterBench(Napi::Env env, Napi::Object exports) {
  exports.Set("benchHandler", Napi::Function::New(env, BenchHandlerJs));
  exports.Set("benchMemcpy", Napi::Function::New(env, BenchMemcpyJs));
  exports.Set("spinReadable", Napi::Function::New(env, SpinReadableJs));
}

}  // namespace faultline
