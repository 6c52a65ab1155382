// Linux process-control calls that Swift's Glibc module does not import: prctl and syscall are
// variadic, and glibc declares pidfd_open only from 2.36, in a header the module leaves out.
// Each returns what the underlying call returns (-1 with errno set on failure).
#ifndef C_ASPEN_LINUX_H
#define C_ASPEN_LINUX_H

#ifdef __linux__
#include <sys/types.h>

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants are reparented to this process.
int aspen_set_child_subreaper(void);

/// pidfd_open(pid, 0): a descriptor that names this one process even after its pid is reused.
int aspen_pidfd_open(pid_t pid);

/// pidfd_send_signal(pidfd, signal, NULL, 0).
int aspen_pidfd_send_signal(int pidfd, int signal);
#endif

#endif
