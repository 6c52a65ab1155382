// aspen-job-trampoline: how a shell job's first process enters its cgroup, and for an isolated
// job its namespaces and its user, before it runs a single instruction of the job's command.
//
//     aspen-job-trampoline [--loopback-only] [--hide-processes] [--user UID:GID]
//                          [--environment N NAME=VALUE...] CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]
//
// In this order:
// - writes "0" to CGROUP_PROCS, moving itself into that cgroup ("-": none). A failure leaves it
//   where it is; the runner, which checks, cleans up by process group and marker alone;
// - --loopback-only: a new network namespace with its loopback up. The job's processes serve
//   each other on 127.0.0.1 and reach no other address: not the node's ports, not other hosts;
// - --hide-processes: a new mount namespace with a /proc of its own mounted hidepid=invisible
//   (Linux 5.8): a job run as another user sees no process of other users (the node's, trusted
//   jobs' command lines). On an older kernel a second procfs mount ignores hidepid, so there is
//   no fallback to hidepid=2: the job does not run;
// - --user: drops every supplementary group, then the group, then the user, and sets
//   no_new_privs, so that no setuid program gives the privileges back;
// - execs EXECUTABLE with ARGV0 ARG... and the environment given by --environment (its N
//   entries exactly), else its own, unchanged.
// Each isolating step fails closed: if one cannot be done the job does not run (exit 126, the
// reason on standard error). If the exec fails it says why and exits 127, as a shell does.
//
// The job's environment comes as arguments when the job runs as another user: this program runs
// as root, and an environment it started with would reach its dynamic loader (LD_PRELOAD, a path
// in the patch's own checkout) before main. The runner starts it with no environment but the
// job's marker.
//
// Why a program of its own: a process forked before the job joins its cgroup stays outside, and
// swift-subprocess runs no code of the caller's between its fork and the exec (nor can it reach
// clone3's CLONE_INTO_CGROUP); writing the pid from the parent after the spawn races with the
// child's first fork. A shell as the trampoline (`sh -c 'echo $$ > "$0"; exec "$@"'`) changes the
// environment it passes on (dash adds PWD, bash adds SHLVL and _, both drop names that are not
// identifiers), and a job gets exactly the environment its command names. Re-executing the
// worker's own program would do, but loading it costs the dynamic loader milliseconds per job
// where this C program, with nothing to relocate, costs a fraction of one. `unshare --net` would
// leave the namespace's loopback down, and `setpriv` would run as root with the job's environment.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
// with errno set.
static int hide_processes(void) {
    if (unshare(CLONE_NEWNS) != 0) return -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return -1;
    return mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible");
}

// Becomes user `uid` and group `gid` with no supplementary groups, for good; 0, or -1.
static int become(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
        errno = EPERM;
        return -1;
    }
    return 0;
}

static int refuse(const char *what) {
    int error = errno;
    dprintf(STDERR_FILENO, "aspen: cannot %s: %s\n", what, strerror(error));
    return 126;
}

static int usage(void) {
    dprintf(STDERR_FILENO,
        "usage: aspen-job-trampoline [--loopback-only] [--hide-processes] [--user UID:GID] [--environment N NAME=VALUE...] "
        "CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]\n");
    return 2;
}

int main(int argc, char **argv, char **envp) {
    int first = 1;
    int isolate = 0, hide = 0, drop = 0;
    unsigned long uid = 0, gid = 0;
    char **environment = envp;
    while (first < argc) {
        if (strcmp(argv[first], "--loopback-only") == 0) {
            isolate = 1;
            first += 1;
        } else if (strcmp(argv[first], "--hide-processes") == 0) {
            hide = 1;
            first += 1;
        } else if (strcmp(argv[first], "--user") == 0 && first + 1 < argc) {
            char *end = NULL;
            uid = strtoul(argv[first + 1], &end, 10);
            if (end == argv[first + 1] || *end != ':') return usage();
            char *rest = end + 1;
            gid = strtoul(rest, &end, 10);
            if (end == rest || *end != 0 || uid == 0 || gid == 0 || uid > 0xFFFFFFFEul || gid > 0xFFFFFFFEul) return usage();
            drop = 1;
            first += 2;
        } else if (strcmp(argv[first], "--environment") == 0 && first + 1 < argc) {
            char *end = NULL;
            unsigned long count = strtoul(argv[first + 1], &end, 10);
            if (end == argv[first + 1] || *end != 0 || count > (unsigned long)(argc - first - 2)) return usage();
            // The entries are argv's own strings; argv ends with NULL, which ends the copy too.
            environment = calloc(count + 1, sizeof(char *));
            if (environment == NULL) return refuse("allocate the environment");
            for (unsigned long index = 0; index < count; index++) environment[index] = argv[first + 2 + index];
            first += 2 + (int)count;
        } else {
            break;
        }
    }
    if (argc < first + 3) return usage();
    if (strcmp(argv[first], "-") != 0) {
        int procs = open(argv[first], O_WRONLY | O_CLOEXEC);
        if (procs >= 0) {
            while (write(procs, "0", 1) < 0 && errno == EINTR) {}
            close(procs);
        }
    }
    if (isolate && loopback_only() != 0) return refuse("give the job a network namespace of its own (it would reach the host's network)");
    if (hide && hide_processes() != 0) return refuse("give the job a /proc of its own (it would see every process; hidepid=invisible needs Linux 5.8)");
    if (drop && become((uid_t)uid, (gid_t)gid) != 0) return refuse("switch to the job's user");
    execve(argv[first + 1], argv + first + 2, environment);
    int error = errno;
    dprintf(STDERR_FILENO, "aspen: cannot execute %s: %s\n", argv[first + 1], strerror(error));
    return 127;
}
