// A page-fault handler speaking Firecracker's UFFD handler protocol, written
// for faultline's tests (built by node-gyp, dynamic and -static):
//
//   fc_handler SOCKET_PATH MEMORY_FILE_PATH [OPTIONS]
//
// It binds SOCKET_PATH, accepts the VMM's one connection, receives the
// regions JSON with the userfaultfd (and, in guest_memfd modes, the
// guest_memfd) as SCM_RIGHTS, maps the memory file read-only, and serves
// faults: UFFDIO_COPY from the file (UFFDIO_ZEROPAGE for pages a REMOVE event
// discarded), EEXIST as success followed by UFFDIO_WAKE, EAGAIN deferred and
// retried once the events are read; MINOR faults are filled with lseek(2) +
// write(2) into the guest_memfd, then UFFDIO_CONTINUE.
//
// Variants (compile-time): BUG_EAGAIN_FATAL treats EAGAIN as fatal;
// BUG_UNBOUNDED_POLL retries deferred faults only after poll(-1) returns.
//
// Options, for the robustness tests (N counts faults served):
//   --exit-after N      exit(3) after N faults
//   --crash-after N     SIGSEGV after N faults
//   --hang-after N      spin forever after N faults
//   --close-after N     close the userfaultfd after N faults, keep polling
//   --garbage-after N   issue UFFDIO_COPY with a wild source after N faults
//   --kill-peer-after N SIGKILL the socket peer (SO_PEERCRED), then abort,
//                       as Firecracker's example handlers do on panic
//   --threads           serve from a second thread (the main thread joins it)
//   --second-thread     a second thread makes one uffd call (a poll) before
//                       the main thread serves: a binary with two uffd threads
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REGIONS 16
#define MAX_DEFERRED 65536

struct region {
  uint64_t base, size, offset, page_size;
};

static struct region regions[MAX_REGIONS];
static int region_count;
static int uffd = -1, gmem = -1, stream = -1;
static const uint8_t* memory;
static uint64_t memory_size;
static uint8_t* removed;  // one byte per 4 KiB of the memory file
static uint64_t deferred[MAX_DEFERRED];
static int deferred_count;
static long served;
static long exit_after = -1, crash_after = -1, hang_after = -1, close_after = -1, garbage_after = -1,
            kill_peer_after = -1;
static int use_thread;
static int second_thread;
static sem_t second_polled;


static void die(const char* what) {
  fprintf(stderr, "fc_handler: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void panic_kill_peer(const char* what) {
  struct ucred cred;
  socklen_t length = sizeof(cred);
  if (getsockopt(stream, SOL_SOCKET, SO_PEERCRED, &cred, &length) == 0 && cred.pid > 0)
    kill(cred.pid, SIGKILL);
  fprintf(stderr, "fc_handler: panic: %s\n", what);
  abort();
}

// The number after "key": in the object text [from, to), or -1.
static int64_t json_number(const char* from, const char* to, const char* key) {
  char pattern[64];
  snprintf(pattern, sizeof(pattern), "\"%s\"", key);
  const char* at = memmem(from, (size_t)(to - from), pattern, strlen(pattern));
  if (at == NULL) return -1;
  at += strlen(pattern);
  while (at < to && (*at == ' ' || *at == ':')) at++;
  if (at >= to || *at < '0' || *at > '9') return -1;
  return strtoll(at, NULL, 10);
}

static void parse_regions(char* json) {
  char* at = json;
  while ((at = strchr(at, '{')) != NULL) {
    char* end = strchr(at, '}');
    if (end == NULL || region_count == MAX_REGIONS) break;
    struct region* r = &regions[region_count++];
    int64_t base = json_number(at, end, "base_host_virt_addr"), size = json_number(at, end, "size"),
            offset = json_number(at, end, "offset"), page = json_number(at, end, "page_size");
    if (base < 0 || size <= 0 || offset < 0 || page <= 0) {
      fprintf(stderr, "fc_handler: malformed region %d in %s\n", region_count - 1, json);
      exit(1);
    }
    r->base = (uint64_t)base;
    r->size = (uint64_t)size;
    r->offset = (uint64_t)offset;
    r->page_size = (uint64_t)page;
    at = end + 1;
  }
  if (region_count == 0) {
    fprintf(stderr, "fc_handler: no regions in %s\n", json);
    exit(1);
  }
}

static void handshake(const char* socket_path) {
  int listener = socket(AF_UNIX, SOCK_STREAM, 0);
  if (listener < 0) die("socket");
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  strncpy(address.sun_path, socket_path, sizeof(address.sun_path) - 1);
  unlink(socket_path);
  if (bind(listener, (struct sockaddr*)&address, sizeof(address)) < 0) die("bind");
  if (listen(listener, 1) < 0) die("listen");
  stream = accept(listener, NULL, NULL);
  if (stream < 0) die("accept");
  close(listener);
  static char json[65536];
  struct iovec iov = {json, sizeof(json) - 1};
  union {
    char buffer[CMSG_SPACE(sizeof(int) * 2)];
    struct cmsghdr align;
  } control;
  struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                           .msg_controllen = sizeof(control.buffer)};
  ssize_t got = recvmsg(stream, &message, 0);
  if (got <= 0) die("recvmsg");
  json[got] = 0;
  for (struct cmsghdr* h = CMSG_FIRSTHDR(&message); h != NULL; h = CMSG_NXTHDR(&message, h)) {
    if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) continue;
    int fds[2] = {-1, -1};
    size_t count = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    memcpy(fds, CMSG_DATA(h), (count > 2 ? 2 : count) * sizeof(int));
    uffd = fds[0];
    if (count > 1) gmem = fds[1];
  }
  if (uffd < 0) {
    fprintf(stderr, "fc_handler: no userfaultfd in the handshake\n");
    exit(1);
  }
  parse_regions(json);
}

static void map_memory(const char* path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) die("open memory file");
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat memory file");
  memory_size = (uint64_t)st.st_size;
  memory = mmap(NULL, memory_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (memory == MAP_FAILED) die("mmap memory file");
  close(fd);
  removed = calloc(memory_size / 4096 + 1, 1);
}

static const struct region* region_of(uint64_t address) {
  for (int i = 0; i < region_count; i++)
    if (address >= regions[i].base && address - regions[i].base < regions[i].size) return &regions[i];
  return NULL;
}

static void wake(uint64_t start, uint64_t length) {
  struct uffdio_range range = {.start = start, .len = length};
  if (ioctl(uffd, UFFDIO_WAKE, &range) < 0) die("UFFDIO_WAKE");
}

// One range ioctl; 0 on success (EEXIST counts, after a WAKE), -1 on EAGAIN.
static int resolve(uint64_t address, int minor) {
  const struct region* r = region_of(address);
  if (r == NULL) {
    fprintf(stderr, "fc_handler: fault at 0x%llx outside every region\n", (unsigned long long)address);
    exit(1);
  }
  uint64_t page = address & ~(r->page_size - 1);
  uint64_t offset = r->offset + (page - r->base);
  int result;
  const char* name;
  if (minor) {
    name = "UFFDIO_CONTINUE";
    // guest_memfd's write(2) at the file position (the model answers pwrite(2) with ESPIPE).
    if (gmem >= 0) {
      if (lseek(gmem, (off_t)offset, SEEK_SET) < 0) die("lseek guest_memfd");
      if (write(gmem, memory + offset, r->page_size) != (ssize_t)r->page_size) die("write guest_memfd");
    }
    struct uffdio_continue arg = {.range = {.start = page, .len = r->page_size}};
    result = ioctl(uffd, UFFDIO_CONTINUE, &arg);
  } else if (removed[offset / 4096] && r->page_size == 4096) {
    name = "UFFDIO_ZEROPAGE";
    struct uffdio_zeropage arg = {.range = {.start = page, .len = r->page_size}};
    result = ioctl(uffd, UFFDIO_ZEROPAGE, &arg);
  } else {
    name = "UFFDIO_COPY";
    static uint8_t* zeros;
    const uint8_t* source = memory + offset;
    if (removed[offset / 4096]) {
      if (zeros == NULL) zeros = calloc(r->page_size, 1);
      source = zeros;
    }
    if (garbage_after >= 0 && served >= garbage_after) source = (const uint8_t*)0x10;
    struct uffdio_copy arg = {.dst = page, .src = (uint64_t)(uintptr_t)source, .len = r->page_size};
    result = ioctl(uffd, UFFDIO_COPY, &arg);
  }
  if (result == 0) return 0;
  if (errno == EEXIST) {
    wake(page, r->page_size);
    return 0;
  }
  if (errno == EAGAIN) {
#ifdef BUG_EAGAIN_FATAL
    fprintf(stderr, "fc_handler: %s at 0x%llx: unexpected EAGAIN\n", name, (unsigned long long)page);
    exit(1);
#endif
    return -1;
  }
  if (kill_peer_after >= 0) panic_kill_peer(name);
  fprintf(stderr, "fc_handler: %s at 0x%llx: %s\n", name, (unsigned long long)page, strerror(errno));
  exit(1);
}

static void misbehave(void) {
  if (exit_after >= 0 && served >= exit_after) {
    fprintf(stderr, "fc_handler: exiting after %ld faults (--exit-after)\n", served);
    exit(3);
  }
  if (crash_after >= 0 && served >= crash_after) raise(SIGSEGV);
  if (hang_after >= 0 && served >= hang_after)
    for (volatile int spin = 0;; spin++) {
    }
  if (close_after >= 0 && served >= close_after && uffd >= 0) {
    close(uffd);
    uffd = open("/dev/null", O_RDONLY);  // keeps polling something that never has a message
  }
  if (kill_peer_after >= 0 && served >= kill_peer_after) panic_kill_peer("--kill-peer-after");
}

static void remove_range(uint64_t start, uint64_t end) {
  for (uint64_t address = start; address < end; address += 4096) {
    const struct region* r = region_of(address);
    if (r != NULL) removed[(r->offset + address - r->base) / 4096] = 1;
  }
}

static void retry_deferred(void) {
  int kept = 0;
  for (int i = 0; i < deferred_count; i++)
    if (resolve(deferred[i], 0) < 0) deferred[kept++] = deferred[i];
  deferred_count = kept;
}

// Reads every pending message (the uffd is non-blocking): true if any came.
static int drain(void) {
  int any = 0;
  struct uffd_msg messages[16];
  for (;;) {
    ssize_t got = read(uffd, messages, sizeof(messages));
    if (got < 0) {
      if (errno == EAGAIN) return any;
      die("read userfaultfd");
    }
    if (got == 0 || got % sizeof(struct uffd_msg) != 0) {
      fprintf(stderr, "fc_handler: read %zd bytes from the userfaultfd\n", got);
      exit(1);
    }
    any = 1;
    size_t count = (size_t)got / sizeof(struct uffd_msg);
    // Events first: a fault read in the same batch as a REMOVE covering its page
    // must be served as removed (zero), or the page comes back with stale bytes.
    for (size_t i = 0; i < count; i++)
      if (messages[i].event == UFFD_EVENT_REMOVE)
        remove_range(messages[i].arg.remove.start, messages[i].arg.remove.end);
    for (size_t i = 0; i < count; i++) {
      struct uffd_msg* m = &messages[i];
      if (m->event == UFFD_EVENT_PAGEFAULT) {
        int minor = (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0;
        if (resolve(m->arg.pagefault.address, minor) < 0) {
          if (deferred_count == MAX_DEFERRED) {
            fprintf(stderr, "fc_handler: too many deferred faults\n");
            exit(1);
          }
          deferred[deferred_count++] = m->arg.pagefault.address;
        }
        served++;
        misbehave();
      }
    }
  }
}

static void* serve(void* unused) {
  (void)unused;
  for (;;) {
    struct pollfd fds[2] = {{.fd = uffd, .events = POLLIN}, {.fd = stream, .events = POLLIN}};
#ifdef BUG_UNBOUNDED_POLL
    // The bug: deferred faults wait for the next message, however long that takes.
    int timeout = -1;
#else
    int timeout = deferred_count > 0 ? 1 : -1;
#endif
    int ready = poll(fds, 2, timeout);
    if (ready < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents & (POLLHUP | POLLERR)) {
      // The VMM went away: the session is over.
      exit(0);
    }
#ifdef BUG_UNBOUNDED_POLL
    retry_deferred();
    drain();
#else
    drain();
    retry_deferred();
#endif
  }
  return NULL;
}

// The second thread's one uffd call comes before the main thread serves, so
// that two threads surely make uffd calls, whatever the host's scheduling.
static void* second_thread_poll(void* unused) {
  (void)unused;
  struct pollfd fds = {.fd = uffd, .events = POLLIN};
  if (poll(&fds, 1, 0) < 0) die("poll");
  sem_post(&second_polled);
  return NULL;
}

static long option_value(int argc, char** argv, int* i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "fc_handler: %s needs a number\n", argv[*i]);
    exit(2);
  }
  return strtol(argv[++*i], NULL, 10);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fc_handler SOCKET_PATH MEMORY_FILE_PATH [OPTIONS]\n");
    return 2;
  }
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--exit-after") == 0) exit_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--crash-after") == 0) crash_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--hang-after") == 0) hang_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--close-after") == 0) close_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--garbage-after") == 0) garbage_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--kill-peer-after") == 0) kill_peer_after = option_value(argc, argv, &i);
    else if (strcmp(argv[i], "--threads") == 0) use_thread = 1;
    else if (strcmp(argv[i], "--second-thread") == 0) second_thread = 1;
    else {
      fprintf(stderr, "fc_handler: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  handshake(argv[1]);
  map_memory(argv[2]);
  if (second_thread) {
    pthread_t thread;
    sem_init(&second_polled, 0, 0);
    if (pthread_create(&thread, NULL, second_thread_poll, NULL) != 0) die("pthread_create");
    while (sem_wait(&second_polled) != 0) continue;
    serve(NULL);
  } else if (use_thread) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, serve, NULL) != 0) die("pthread_create");
    pthread_join(thread, NULL);
  } else {
    serve(NULL);
  }
  return 0;
}
