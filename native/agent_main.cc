// faultline_agent: a fresh process for the host backend's createProcess().
// Usage: faultline_agent SOCKET_FD [unprivileged]. It serves requests from
// the backend on the socket (agent.h) until the socket closes.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "agent.h"

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  int socket = std::atoi(argv[1]);
  // The agent ends with the thread that started it (Node's main thread).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) return 1;
  // Standard descriptors as a process has them (spawned without any): the
  // program's own descriptors then start at 3, above them.
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) < 0) open("/dev/null", O_RDWR);
  }
  if (argc > 2 && std::strcmp(argv[2], "unprivileged") == 0) {
    // nobody: no CAP_SYS_PTRACE, no access to the root-only /dev/userfaultfd.
    const gid_t nobody = 65534;
    if (setgroups(0, nullptr) != 0 || setresgid(nobody, nobody, nobody) != 0 ||
        setresuid(nobody, nobody, nobody) != 0) {
      return 3;
    }
    // Keep /proc/self owned by the process so it can read its own pagemap.
    prctl(PR_SET_DUMPABLE, 1);
  }
  faultline::AgentServe(socket);
  return 0;
}
