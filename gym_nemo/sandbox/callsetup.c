/* gym_nemo fork server: a call process's setup in C (see CallSetup in forkserver.py). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <grp.h>

#define MAX_FDS 8
#define MAX_PLANS 64

struct gn_mount { const char *source, *target, *fstype; unsigned long flags; const char *data; };
struct gn_rlimit { int resource; struct rlimit limit; };
struct gn_plan {
    const char *msg; size_t msg_len;       /* the request bytes this plan answers */
    struct gn_mount scratch; int has_scratch;
    const char *workdir;
    struct gn_rlimit rlimits[8]; int n_rlimits;
    int uid;                               /* 0: no switch */
    int session;                           /* send "R" on fd 3 instead of reading code and marking stderr */
};
struct gn_config {
    int namespaces, own_pidns;
    const struct gn_mount *mounts; int n_mounts;
    const char *skeleton;
    const void *seccomp;                   /* struct sock_fprog *, or NULL */
    const char *ready_mark; size_t ready_mark_len;
};
struct gn_result {                          /* what the child's Python learns when gn_fork_ready returns 0 */
    int stage, error;                       /* the step that failed (0: none) and its errno */
    ssize_t msg_len;                        /* 0: the zygote hung up before a call came */
    int n_fds, plan;                        /* plan: index set by gn_plan_set, or -1 (the Python path goes on) */
    char *source; size_t source_len;
};

static const struct gn_config *config;
static const struct gn_plan *plans[MAX_PLANS];
struct gn_result gn_result;
char gn_msg[1 << 16];                       /* where a call's request lands (ZYGOTE_PACKET) */

void gn_configure(const struct gn_config *c) { config = c; }
void gn_plan_set(int index, const struct gn_plan *p) { if (index >= 0 && index < MAX_PLANS) plans[index] = p; }
void gn_plans_clear(void) { memset(plans, 0, sizeof plans); }

/* Close every fd >= low: close_range(2), else (older kernels, gVisor) the fds /proc/self/fd lists. */
static void close_from(int low) {
    if (syscall(SYS_close_range, low, ~0U, 0) == 0) return;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir) {
        for (int fd = low; fd < 65536; fd++) close(fd);
        return;
    }
    int own = dirfd(dir);
    for (struct dirent *entry; (entry = readdir(dir));) {
        if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
        int fd = atoi(entry->d_name);
        if (fd >= low && fd != own) close(fd);
    }
    closedir(dir);
}

static int read_exactly(int fd, char *buf, size_t n) {
    while (n) {
        ssize_t got = read(fd, buf, n);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) { if (got == 0) errno = EPIPE; return -1; }
        buf += got; n -= (size_t)got;
    }
    return 0;
}

#define FAIL(n) do { gn_result.stage = (n); gn_result.error = errno; goto failed; } while (0)

/* What no call changes: own session, ctl on fd 3, nothing else of the zygote, namespaces, chroot. */
static void prepare(int ctl) {
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &dfl, NULL);
    if (setsid() < 0 || dup3(ctl, 3, O_CLOEXEC) < 0) _exit(120);  /* the zygote hands the call to another */
    close_from(4);
    if (config->namespaces) {
        if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0) FAIL(3);
        for (int i = 0; i < config->n_mounts; i++) {
            const struct gn_mount *m = &config->mounts[i];
            if (mount(m->source, m->target, m->fstype, m->flags, m->data) < 0) FAIL(4);
        }
        if (chroot(config->skeleton) < 0) FAIL(5);
    }
failed:;
}

/* Wait for the call on fd 3: its request, and its fds as 0..n-1. */
static void receive(void) {
    char control[CMSG_SPACE(MAX_FDS * sizeof(int))];
    struct iovec iov = {gn_msg, sizeof gn_msg};
    struct msghdr mh = {0};
    mh.msg_iov = &iov; mh.msg_iovlen = 1; mh.msg_control = control; mh.msg_controllen = sizeof control;
    ssize_t got;
    do got = recvmsg(3, &mh, MSG_CMSG_CLOEXEC); while (got < 0 && errno == EINTR);
    if (got <= 0) { gn_result.msg_len = 0; return; }
    gn_result.msg_len = got;
    int fds[MAX_FDS], n = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && n < MAX_FDS; i++) memcpy(&fds[n++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    for (int i = 0; i < n; i++)  /* they arrive ascending from 4 up: no dup clobbers a later one */
        if (dup3(fds[i], i, i < 3 ? 0 : O_CLOEXEC) < 0 && gn_result.stage == 0) { gn_result.stage = 6; gn_result.error = errno; }
    gn_result.n_fds = n;
    close_from(n);
}

/* The call's own limits, then (a run) its code from stdin and the ready mark on stderr. */
static void apply(const struct gn_plan *p) {
    if (p->has_scratch && mount(p->scratch.source, p->scratch.target, p->scratch.fstype, p->scratch.flags, p->scratch.data) < 0) FAIL(7);
    if (chdir(p->workdir) < 0) FAIL(8);
    for (int i = 0; i < p->n_rlimits; i++)
        if (setrlimit(p->rlimits[i].resource, &p->rlimits[i].limit) < 0) FAIL(9);
    if (p->uid && (setgroups(0, NULL) < 0 || setgid(p->uid) < 0 || setuid(p->uid) < 0)) FAIL(10);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) FAIL(11);
    if (config->seccomp && prctl(PR_SET_SECCOMP, 2 /* SECCOMP_MODE_FILTER */, config->seccomp, 0, 0) < 0) FAIL(12);
    if (p->session) {
        if (write(3, "R", 1) != 1) FAIL(13);
        return;
    }
    unsigned char header[4];
    if (read_exactly(0, (char *)header, 4) < 0) FAIL(14);
    size_t n = ((size_t)header[0] << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
    char *source = malloc(n + 1);
    if (!source || read_exactly(0, source, n) < 0) FAIL(14);
    gn_result.source = source; gn_result.source_len = n;
    if (write(2, config->ready_mark, config->ready_mark_len) != (ssize_t)config->ready_mark_len) FAIL(13);
failed:;
}

/* Fork a call process ahead of its call. The parent gets the child's pid and *ours, its end of the
 * control socket; the child returns 0 once its call has come and gn_result says how far C got. */
pid_t gn_fork_ready(int *ours) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) return -1;
    if (config->namespaces && unshare(CLONE_NEWPID) < 0) { int e = errno; close(pair[0]); close(pair[1]); errno = e; return -1; }
    pid_t pid = fork();
    if (pid != 0) {
        int e = errno;
        if (config->namespaces) setns(config->own_pidns, CLONE_NEWPID);
        close(pair[1]);
        if (pid < 0) { close(pair[0]); errno = e; return -1; }
        *ours = pair[0];
        return pid;
    }
    memset(&gn_result, 0, sizeof gn_result);
    gn_result.plan = -1;
    prepare(pair[1]);
    receive();
    if (gn_result.msg_len <= 0 || gn_result.stage) return 0;
    for (int i = 0; i < MAX_PLANS; i++) {
        const struct gn_plan *p = plans[i];
        if (p && p->msg_len == (size_t)gn_result.msg_len && memcmp(p->msg, gn_msg, p->msg_len) == 0) {
            gn_result.plan = i;
            apply(p);
            break;
        }
    }
    return 0;
}
