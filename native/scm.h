// Data with a descriptor (SCM_RIGHTS) over a Unix socket, both ways, for the
// addon's socket calls and the handler launcher's report to its parent. Only
// async-signal-safe calls: the launcher sends between fork and exec.
#pragma once

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

// Returns the bytes sent or -1 with errno set; retries on EINTR.
static inline ssize_t SendWithFd(int sock, const void* data, size_t length, int fd) {
  struct iovec iov = {const_cast<void*>(data), length};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  memset(control, 0, sizeof(control));
  struct msghdr message;
  memset(&message, 0, sizeof(message));
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  struct cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(header), &fd, sizeof(int));
  ssize_t sent;
  do {
    sent = sendmsg(sock, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent;
}

// One recvmsg (close-on-exec, retried on EINTR) into `data`. Stores the first
// descriptor that came in *fd (-1 when none) and closes any others, so a
// peer sending many leaks none; *flags gets msg_flags (MSG_TRUNC, MSG_CTRUNC).
// Returns the bytes received or -1 with errno set.
static inline ssize_t RecvWithFd(int sock, void* data, size_t length, int* fd, int* flags) {
  struct iovec iov = {data, length};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  struct msghdr message;
  memset(&message, 0, sizeof(message));
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t received;
  do {
    received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
  } while (received < 0 && errno == EINTR);
  *fd = -1;
  *flags = message.msg_flags;
  if (received < 0) return received;
  for (struct cmsghdr* header = CMSG_FIRSTHDR(&message); header != nullptr;
       header = CMSG_NXTHDR(&message, header)) {
    if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; i++) {
      int each;
      memcpy(&each, CMSG_DATA(header) + i * sizeof(int), sizeof(int));
      if (*fd < 0) *fd = each;
      else close(each);
    }
  }
  return received;
}
