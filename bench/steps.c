// What each set-up step of the fail-closed sandbox costs, timed without any tracing.
//
// usage: steps N > steps.json   (root; bench/run.sh builds it with cc when perf is profiled)
//
// perf trace adds several µs to every call it sees, far more than a prctl takes, and sampling
// cannot place the first 200 µs of a short-lived child. So this program repeats each step the
// way the sandbox child does it, in a child made with the namespaces faas's clone3 makes
// (pid, mount, ipc, uts), and reads CLOCK_MONOTONIC around it. N children, alternately with
// and without the /proc masks, so that "exit" (the child's exit, with its namespaces torn
// down, until the parent has reaped it) shows what 13 more mounts cost at teardown. A pool
// miss (a fresh network namespace) is timed in a child of its own, since freeing a network
// namespace goes on in a kernel worker after the exit and would blur the other numbers.
//
// The mask list is src/sandbox/namespaces.rs's MASKED_PROC; only names that exist on this
// kernel are mounted, as faas does. Output: JSON with p10/p50/p90/max in µs per step.
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *MASKED_PROC[] = {
    "config.gz", "cmdline", "bootconfig", "key-users", "keys", "interrupts", "softirqs", "kallsyms", "modules", "timer_list",
    "sched_debug", "schedstat", "diskstats", "partitions", "swaps", "iomem", "ioports", "kcore", "sysrq-trigger",
};
#define NMASKED (sizeof MASKED_PROC / sizeof MASKED_PROC[0])

enum { BASE_MOUNTS, MASKS, SETSID, SYSCTL, SETNS, CAPBSET, PDEATH, EXIT_MASKED, EXIT_UNMASKED, NEWNET, NSTEPS };
static const char *NAMES[NSTEPS] = {
    [BASE_MOUNTS] = "mount /tmp and /proc",
    [MASKS] = "mask /proc files (bind /dev/null)",
    [SETSID] = "setsid",
    [SYSCTL] = "SysV IPC sysctls (open, write, close)",
    [SETNS] = "join the network namespace (setns)",
    [CAPBSET] = "empty the bounding set (PR_CAPBSET_DROP)",
    [PDEATH] = "parent-death signal + daemon check (PR_SET_PDEATHSIG, poll)",
    [EXIT_MASKED] = "child exit and reap, with the masks",
    [EXIT_UNMASKED] = "child exit and reap, without the masks",
    [NEWNET] = "a fresh network namespace (pool miss: CLONE_NEWNET)",
};

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static pid_t clone_sandbox(void) {
    // The namespaces faas's clone3 creates (CLONE_NEWNET aside: the pool provides that one).
    return (pid_t)syscall(SYS_clone, CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD, 0, 0, 0, 0);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200;
    if (n < 2) n = 2;
    double *res[NSTEPS];
    int count[NSTEPS] = {0};
    for (int s = 0; s < NSTEPS; s++) res[s] = calloc(n, sizeof(double));

    int cap_last = 40;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "r");
    if (f) {
        if (fscanf(f, "%d", &cap_last) != 1) cap_last = 40;
        fclose(f);
    }
    const char *masks[NMASKED];
    int nmasks = 0;
    for (size_t i = 0; i < NMASKED; i++) {
        char p[64];
        snprintf(p, sizeof p, "/proc/%s", MASKED_PROC[i]);
        if (access(p, F_OK) == 0) masks[nmasks++] = MASKED_PROC[i];
    }
    char root[] = "/tmp/faas-steps.XXXXXX";
    if (!mkdtemp(root)) return perror("mkdtemp"), 1;

    // The daemon's pidfd, which the child polls; and a network namespace held open, as the
    // pool holds them.
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int ready[2];
    if (pipe(ready)) return perror("pipe"), 1;
    pid_t holder = fork();
    if (holder == 0) {
        if (unshare(CLONE_NEWNET)) _exit(1);
        if (write(ready[1], "x", 1) != 1) _exit(1);
        pause();
        _exit(0);
    }
    char b;
    if (read(ready[0], &b, 1) != 1) return fprintf(stderr, "steps: cannot make a network namespace\n"), 1;
    char nspath[64];
    snprintf(nspath, sizeof nspath, "/proc/%d/ns/net", holder);
    int netfd = open(nspath, O_RDONLY | O_CLOEXEC);
    if (pidfd < 0 || netfd < 0) return fprintf(stderr, "steps: pidfd_open or the netns fd failed\n"), 1;

    int failed = 0;
    for (int i = 0; i < n && !failed; i++) {
        int masked = i % 2 == 0;
        int out[2];
        if (pipe(out)) return perror("pipe"), 1;
        pid_t c = clone_sandbox();
        if (c < 0) return perror("clone"), 1;
        if (c == 0) {
            double r[NSTEPS] = {0}, t;
            char d[256];
            close(out[0]);
            if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) _exit(2);
            t = now_us();
            if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m")) _exit(3);
            snprintf(d, sizeof d, "%s/proc", root);
            mkdir(d, 0555);
            if (mount("proc", d, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) _exit(4);
            r[BASE_MOUNTS] = now_us() - t;
            if (masked) {
                t = now_us();
                for (int k = 0; k < nmasks; k++) {
                    snprintf(d, sizeof d, "%s/proc/%s", root, masks[k]);
                    if (mount("/dev/null", d, NULL, MS_BIND, NULL)) _exit(5);
                }
                r[MASKS] = now_us() - t;
            }
            t = now_us();
            if (setsid() < 0) _exit(6);
            r[SETSID] = now_us() - t;
            // The values faas writes for a 256 MiB function (namespaces::ipc_limits).
            const char *sysctl[3][2] = {{"shmmax", "268435456"}, {"shmall", "65536"}, {"msgmni", "16"}};
            t = now_us();
            for (int k = 0; k < 3; k++) {
                snprintf(d, sizeof d, "%s/proc/sys/kernel/%s", root, sysctl[k][0]);
                int fd = open(d, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || write(fd, sysctl[k][1], strlen(sysctl[k][1])) < 0) _exit(7);
                close(fd);
            }
            r[SYSCTL] = now_us() - t;
            t = now_us();
            if (setns(netfd, CLONE_NEWNET)) _exit(8);
            r[SETNS] = now_us() - t;
            t = now_us();
            for (int cap = 0; cap <= cap_last; cap++)
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)) _exit(9);
            r[CAPBSET] = now_us() - t;
            t = now_us();
            if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)) _exit(10);
            struct pollfd pf = {pidfd, POLLIN, 0};
            if (poll(&pf, 1, 0) < 0 || pf.revents) _exit(11);
            r[PDEATH] = now_us() - t;
            if (write(out[1], r, sizeof r) != sizeof r) _exit(12);
            _exit(0);
        }
        close(out[1]);
        double r[NSTEPS];
        ssize_t got = read(out[0], r, sizeof r);
        double t = now_us();
        int st;
        waitpid(c, &st, 0);
        double exit_us = now_us() - t;
        close(out[0]);
        if (got != sizeof r) {
            fprintf(stderr, "steps: child failed at step %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            failed = 1;
            break;
        }
        for (int s = 0; s < NSTEPS; s++) {
            if (s == MASKS && !masked) continue;
            if (s == EXIT_MASKED || s == EXIT_UNMASKED || s == NEWNET) continue;
            res[s][count[s]++] = r[s];
        }
        int e = masked ? EXIT_MASKED : EXIT_UNMASKED;
        res[e][count[e]++] = exit_us;
    }
    // Pool misses: a child that makes its own network namespace (what clone3 does with
    // CLONE_NEWNET), timed alone.
    for (int i = 0; i < n / 2 && !failed; i++) {
        int out[2];
        if (pipe(out)) return perror("pipe"), 1;
        pid_t c = clone_sandbox();
        if (c == 0) {
            close(out[0]);
            double t = now_us();
            if (unshare(CLONE_NEWNET)) _exit(13);
            double r = now_us() - t;
            if (write(out[1], &r, sizeof r) != sizeof r) _exit(14);
            _exit(0);
        }
        close(out[1]);
        double r;
        ssize_t got = read(out[0], &r, sizeof r);
        close(out[0]);
        waitpid(c, NULL, 0);
        if (got != sizeof r) {
            failed = 1;
            break;
        }
        res[NEWNET][count[NEWNET]++] = r;
    }
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    rmdir(root);
    if (failed) return 1;

    printf("{\"n\": %d, \"masks\": %d, \"cap_last\": %d, \"steps\": [", n, nmasks, cap_last);
    for (int s = 0; s < NSTEPS; s++) {
        int k = count[s];
        qsort(res[s], k, sizeof(double), cmp);
        int calls = s == MASKS ? nmasks : s == SYSCTL ? 3 : s == CAPBSET ? cap_last + 1 : s == BASE_MOUNTS || s == PDEATH ? 2 : 1;
        printf("%s\n {\"step\": \"%s\", \"calls\": %d, \"n\": %d, \"p10\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"max\": %.1f}", s ? "," : "", NAMES[s], calls, k,
               k ? res[s][k / 10] : 0.0, k ? res[s][k / 2] : 0.0, k ? res[s][k * 9 / 10] : 0.0, k ? res[s][k - 1] : 0.0);
    }
    printf("\n]}\n");
    return 0;
}
