// faultline_fc_connector: the VMM's side of Firecracker's UFFD handshake, in a
// throwaway process (Firecracker's example handlers SIGKILL the peer they
// read from SO_PEERCRED when they panic; that must never be faultline).
//
//   faultline_fc_connector SOCKET_PATH TIMEOUT_MS JSON
//
// Descriptor 3 is the userfaultfd to send; descriptor 4, when open, is a
// guest_memfd sent after it (Firecracker's secret-free mode). It connects
// (retrying while the handler has not bound the socket yet, up to
// TIMEOUT_MS), sends JSON with the descriptors as SCM_RIGHTS, prints "sent",
// then holds the connection open, as Firecracker does, until its stdin
// closes or its parent dies.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: faultline_fc_connector SOCKET_PATH TIMEOUT_MS JSON\n");
    return 2;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  signal(SIGPIPE, SIG_IGN);
  long deadline = now_ms() + atol(argv[2]);
  struct sockaddr_un address = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof(address.sun_path)) {
    fprintf(stderr, "connect(%s): the path is too long for a Unix socket\n", argv[1]);
    return 1;
  }
  strcpy(address.sun_path, argv[1]);
  int sock;
  for (;;) {
    sock = socket(AF_UNIX, SOCK_STREAM, 0);
    if (sock < 0) {
      fprintf(stderr, "socket: %s\n", strerror(errno));
      return 1;
    }
    if (connect(sock, (struct sockaddr*)&address, sizeof(address)) == 0) break;
    int error = errno;
    close(sock);
    if ((error != ENOENT && error != ECONNREFUSED) || now_ms() > deadline) {
      fprintf(stderr, "connect(%s): %s\n", argv[1], strerror(error));
      return 1;
    }
    usleep(1000);
  }
  int fds[2] = {3, 4};
  int count = fcntl(4, F_GETFD) >= 0 ? 2 : 1;
  struct iovec iov = {argv[3], strlen(argv[3])};
  union {
    char buffer[CMSG_SPACE(sizeof(int) * 2)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof(control));
  struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buffer,
                           .msg_controllen = CMSG_SPACE(sizeof(int) * count)};
  struct cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * count);
  memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
  if (sendmsg(sock, &message, MSG_NOSIGNAL) != (ssize_t)iov.iov_len) {
    fprintf(stderr, "sendmsg: %s\n", strerror(errno));
    return 1;
  }
  close(3);
  if (count == 2) close(4);
  printf("sent\n");
  fflush(stdout);
  char byte;
  while (read(0, &byte, 1) > 0) {
  }
  return 0;
}
