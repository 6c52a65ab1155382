// aspen-job-trampoline: how a shell job's first process enters its cgroup before it runs a single
// instruction of the job's command.
//
//     aspen-job-trampoline CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]
//
// Writes "0" to CGROUP_PROCS (moving itself into that cgroup; a failure leaves it where it is,
// and the runner, which checks, cleans up by process group and marker alone), then execs
// EXECUTABLE with ARGV0 ARG... and its own environment, unchanged. If that exec fails it says
// why on standard error and exits 127, as a shell does.
//
// Why a program of its own: a process forked before the job joins its cgroup stays outside, and
// swift-subprocess runs no code of the caller's between its fork and the exec (nor can it reach
// clone3's CLONE_INTO_CGROUP); writing the pid from the parent after the spawn races with the
// child's first fork. A shell as the trampoline (`sh -c 'echo $$ > "$0"; exec "$@"'`) changes the
// environment it passes on (dash adds PWD, bash adds SHLVL and _, both drop names that are not
// identifiers), and a job gets exactly the environment its command names. Re-executing the
// worker's own program would do, but loading it costs the dynamic loader milliseconds per job
// where this C program, with nothing to relocate, costs a fraction of one.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv, char **envp) {
    if (argc < 4) {
        dprintf(STDERR_FILENO, "usage: aspen-job-trampoline CGROUP_PROCS EXECUTABLE ARGV0 [ARG...]\n");
        return 2;
    }
    int procs = open(argv[1], O_WRONLY | O_CLOEXEC);
    if (procs >= 0) {
        while (write(procs, "0", 1) < 0 && errno == EINTR) {}
        close(procs);
    }
    execve(argv[2], argv + 3, envp);
    int error = errno;
    dprintf(STDERR_FILENO, "aspen: cannot execute %s: %s\n", argv[2], strerror(error));
    return 127;
}
