// aspen-job-trampoline: how a shell job's first process enters its cgroup (and, for a job that
// gets no network, a network namespace of its own) before it runs a single instruction of the
// job's command.
//
//     aspen-job-trampoline [--loopback-only] [--hide-processes] CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]
//
// Writes "0" to CGROUP_PROCS (moving itself into that cgroup; a failure leaves it where it is,
// and the runner, which checks, cleans up by process group and marker alone; "-" joins none).
// With --loopback-only it then moves into a new network namespace and brings its loopback up:
// the job can use 127.0.0.1 among its own processes and reaches nothing else, neither the node's
// ports nor any other host. With --hide-processes it moves into a new mount namespace and mounts
// a /proc of its own with hidepid=invisible: a job run as another user (the untrusted CI jobs'
// nobody) sees only its own user's processes, not the node's or other jobs' command lines.
// Those steps fail closed: if one cannot be done, the job does not run (exit 126, the reason on
// standard error). Then it execs EXECUTABLE with ARGV0 ARG...
// and its own environment, unchanged. If that exec fails it says why on standard error and
// exits 127, as a shell does.
//
// Why a program of its own: a process forked before the job joins its cgroup stays outside, and
// swift-subprocess runs no code of the caller's between its fork and the exec (nor can it reach
// clone3's CLONE_INTO_CGROUP); writing the pid from the parent after the spawn races with the
// child's first fork. A shell as the trampoline (`sh -c 'echo $$ > "$0"; exec "$@"'`) changes the
// environment it passes on (dash adds PWD, bash adds SHLVL and _, both drop names that are not
// identifiers), and a job gets exactly the environment its command names. Re-executing the
// worker's own program would do, but loading it costs the dynamic loader milliseconds per job
// where this C program, with nothing to relocate, costs a fraction of one. `unshare --net` would
// leave the namespace's loopback down.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

// A new network namespace with its loopback up; 0, or -1 with errno set.
static int loopback_only(void) {
    if (unshare(CLONE_NEWNET) != 0) return -1;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
    int result = ioctl(sock, SIOCGIFFLAGS, &request);
    if (result == 0) {
        request.ifr_flags |= IFF_UP;
        result = ioctl(sock, SIOCSIFFLAGS, &request);
    }
    int error = errno;
    close(sock);
    errno = error;
    return result;
}

// A new mount namespace whose /proc shows other users' processes to no one but root; 0, or -1
// with errno set. hidepid=invisible is Linux 5.8's name; 2 is the older one.
static int hide_processes(void) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    if (mount("proc", "/proc", "proc", flags, "hidepid=invisible") == 0) return 0;
    return mount("proc", "/proc", "proc", flags, "hidepid=2");
}

int main(int argc, char **argv, char **envp) {
    int first = 1;
    int isolate = 0, hide = 0;
    for (; first < argc; first++) {
        if (strcmp(argv[first], "--loopback-only") == 0) isolate = 1;
        else if (strcmp(argv[first], "--hide-processes") == 0) hide = 1;
        else break;
    }
    if (argc < first + 3) {
        dprintf(STDERR_FILENO, "usage: aspen-job-trampoline [--loopback-only] [--hide-processes] CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]\n");
        return 2;
    }
    if (strcmp(argv[first], "-") != 0) {
        int procs = open(argv[first], O_WRONLY | O_CLOEXEC);
        if (procs >= 0) {
            while (write(procs, "0", 1) < 0 && errno == EINTR) {}
            close(procs);
        }
    }
    if (isolate && loopback_only() != 0) {
        int error = errno;
        dprintf(STDERR_FILENO, "aspen: cannot give the job a network namespace of its own (it would reach the host's network): %s\n", strerror(error));
        return 126;
    }
    if (hide && hide_processes() != 0) {
        int error = errno;
        dprintf(STDERR_FILENO, "aspen: cannot give the job a /proc of its own (it would see every process): %s\n", strerror(error));
        return 126;
    }
    execve(argv[first + 1], argv + first + 2, envp);
    int error = errno;
    dprintf(STDERR_FILENO, "aspen: cannot execute %s: %s\n", argv[first + 1], strerror(error));
    return 127;
}
