// One sendmsg carrying data and a descriptor (SCM_RIGHTS), for the addon's
// socket calls and the handler launcher's report to its parent. Only
// async-signal-safe calls: the launcher uses it between fork and exec.
#pragma once

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

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
