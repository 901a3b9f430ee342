/* gym_nemo fork server, the parts that run in C where a C compiler is found (callsetup.py compiles
 * and loads this file with ctypes; callsetup.h holds what it shares with the Python side):
 *  - a call process's setup, from fork to the user's code: fork_ready, prepare, receive, apply;
 *  - the zygote's loop that forks them, hands them their calls and reaps them: gn_zygote_serve.
 * Why C: a forked CPython copies every page its Python touches (reference counts are writes), and these
 * steps in Python cost ~300 page faults per call. call.py and zygote.py have the same steps in Python
 * (the fallback); both must stay equivalent, and the test suite runs every sandbox test on both. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "callsetup.h"

/* Their sizes, which the Python side checks against its ctypes structures before it loads this build. */
const size_t gn_sizeof_gn_mount = sizeof(struct gn_mount), gn_sizeof_gn_rlimit = sizeof(struct gn_rlimit);
const size_t gn_sizeof_gn_plan = sizeof(struct gn_plan), gn_sizeof_gn_config = sizeof(struct gn_config);
const size_t gn_sizeof_gn_result = sizeof(struct gn_result);

static const struct gn_config *config;
static const struct gn_plan *plans[GN_MAX_PLANS];
struct gn_result gn_result;
char gn_msg[GN_PACKET];                     /* where a call's request lands */

void gn_configure(const struct gn_config *c) { config = c; }
void gn_plan_set(int index, const struct gn_plan *p) { if (index >= 0 && index < GN_MAX_PLANS) plans[index] = p; }
void gn_plans_clear(void) { memset(plans, 0, sizeof plans); }

/* Close every fd >= low: close_range(2), else (older kernels, gVisor) the fds /proc/self/fd lists. */
static void close_from(int low) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, low, ~0U, 0) == 0) return;
#endif
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
    if (setsid() < 0 || dup3(ctl, GN_CTL_FD, O_CLOEXEC) < 0) _exit(120);  /* the zygote hands the call to another */
    close_from(4);
    if (config->namespaces) {
        if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) < 0) FAIL(GN_STAGE_UNSHARE);
        for (int i = 0; i < config->n_mounts; i++) {
            const struct gn_mount *m = &config->mounts[i];
            if (mount(m->source, m->target, m->fstype, m->flags, m->data) < 0) FAIL(GN_STAGE_READY_MOUNTS);
        }
        if (chroot(config->skeleton) < 0) FAIL(GN_STAGE_CHROOT);
    }
failed:;
}

/* Wait for the call on fd 3: its request, and its fds as 0..n-1. */
/* One packet from sock into buf, its fds (up to GN_MAX_FDS, close-on-exec) into fds; returns recvmsg's value. */
static ssize_t recv_with_fds(int sock, char *buf, size_t cap, int flags, int *fds, int *n_fds) {
    char control[CMSG_SPACE(GN_MAX_FDS * sizeof(int))];
    struct iovec iov = {buf, cap};
    struct msghdr mh = {0};
    mh.msg_iov = &iov; mh.msg_iovlen = 1; mh.msg_control = control; mh.msg_controllen = sizeof control;
    ssize_t got = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
    *n_fds = 0;
    if (got <= 0) return got;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k && *n_fds < GN_MAX_FDS; i++) memcpy(&fds[(*n_fds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    return got;
}

static void receive(void) {
    int fds[GN_MAX_FDS], n;
    ssize_t got;
    do got = recv_with_fds(GN_CTL_FD, gn_msg, sizeof gn_msg, 0, fds, &n); while (got < 0 && errno == EINTR);
    if (got <= 0) { gn_result.msg_len = 0; return; }
    gn_result.msg_len = got;
    for (int i = 0; i < n; i++)  /* they arrive ascending from 4 up: no dup clobbers a later one */
        if (dup3(fds[i], i, i < 3 ? 0 : O_CLOEXEC) < 0 && gn_result.stage == 0) { gn_result.stage = GN_STAGE_DUP; gn_result.error = errno; }
    close_from(n);
}

/* The call's own limits, then (a run) its code from stdin and the ready mark on stderr. */
static void apply(const struct gn_plan *p) {
    if (p->has_scratch && mount(p->scratch.source, p->scratch.target, p->scratch.fstype, p->scratch.flags, p->scratch.data) < 0) FAIL(GN_STAGE_SCRATCH);
    if (chdir(p->workdir) < 0) FAIL(GN_STAGE_CHDIR);
    for (int i = 0; i < p->n_rlimits; i++)
        if (setrlimit(p->rlimits[i].resource, &(struct rlimit){p->rlimits[i].cur, p->rlimits[i].max}) < 0)
            FAIL(GN_STAGE_RLIMIT);
    if (p->uid && (setgroups(0, NULL) < 0 || setgid(p->uid) < 0 || setuid(p->uid) < 0)) FAIL(GN_STAGE_UID);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) FAIL(GN_STAGE_NO_NEW_PRIVS);
    if (config->seccomp && prctl(PR_SET_SECCOMP, 2 /* SECCOMP_MODE_FILTER */, config->seccomp, 0, 0) < 0) FAIL(GN_STAGE_SECCOMP);
    if (p->session) {
        if (write(GN_CTL_FD, "R", 1) != 1) FAIL(GN_STAGE_WRITE);
        return;
    }
    unsigned char header[4];
    if (read_exactly(0, (char *)header, 4) < 0) FAIL(GN_STAGE_SOURCE);
    size_t n = ((size_t)header[0] << 24) | (header[1] << 16) | (header[2] << 8) | header[3];
    char *source = malloc(n + 1);
    if (!source || read_exactly(0, source, n) < 0) FAIL(GN_STAGE_SOURCE);
    gn_result.source = source; gn_result.source_len = n;
    if (write(2, config->ready_mark, config->ready_mark_len) != (ssize_t)config->ready_mark_len) FAIL(GN_STAGE_WRITE);
failed:;
}

static int find_plan(const char *msg, size_t len) {
    for (int i = 0; i < GN_MAX_PLANS; i++)
        if (plans[i] && plans[i]->msg_len == len && memcmp(plans[i]->msg, msg, len) == 0) return i;
    return -1;
}

/* Fork a call process ahead of its call. The parent gets the child's pid and *ours, its end of the
 * control socket; the child returns 0 once its call has come and gn_result says how far C got. */
static pid_t fork_ready(int *ours) {
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
    gn_result.plan = find_plan(gn_msg, (size_t)gn_result.msg_len);
    if (gn_result.plan >= 0) apply(plans[gn_result.plan]);
    return 0;
}

/* ---------------------------------------------------------------- the zygote's loop (see zygote.serve)
 * The zygote forks every call: each fork write-protects all its pages, and a Python loop then writes
 * to ~160 of them per call (a page fault and a copy each). This loop touches its own few. Requests of
 * no cached plan and kill requests go back to Python (gn_zygote_serve returns GN_SERVE_PYTHON), which
 * answers them with gn_hand_off, gn_post, gn_kill_call and gn_drop_pending. In a call process forked here, every
 * one of these returns GN_SERVE_CHILD: the caller becomes that call (call.ready_child_c). */

#define WORKER GN_CTL_FD                    /* the zygote's socket to its worker */
#define MAX_READY 16
#define CHILD GN_SERVE_CHILD

struct ready_call { pid_t pid; int fd; };
struct out { struct out *next; size_t len; char data[]; };

static struct ready_call ready[MAX_READY];
static int n_ready, want_ready;
static pid_t *calls;
static int n_calls, cap_calls;
static struct out *out_head, *out_tail;
char gn_pending[GN_PACKET];                  /* the request being handled, and its fds */
ssize_t gn_pending_len;
static int pending_fds[GN_MAX_FDS], n_pending_fds;

static int call_index(pid_t pid) {
    for (int i = 0; i < n_calls; i++) if (calls[i] == pid) return i;
    return -1;
}

static void flush(void) {
    while (out_head) {
        ssize_t sent = send(WORKER, out_head->data, out_head->len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) return;
        struct out *done = out_head;  /* sent, or the worker is gone (the next recv says so) */
        out_head = done->next;
        if (!out_head) out_tail = NULL;
        free(done);
    }
}

void gn_post(const char *data, size_t len) {
    struct out *o = malloc(sizeof *o + len);
    if (!o) return;
    o->next = NULL; o->len = len; memcpy(o->data, data, len);
    if (out_tail) out_tail->next = o; else out_head = o;
    out_tail = o;
    flush();
}

static void post_error(const char *what, int error) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "{\"error\": \"%s: %s\"}", what, strerror(error));
    gn_post(buf, (size_t)n);
}

void gn_drop_pending(void) {
    for (int i = 0; i < n_pending_fds; i++) close(pending_fds[i]);
    n_pending_fds = 0;
}

int gn_kill_call(pid_t pid) {  /* only while pid is an unreaped call of ours: its group id is still its own */
    return call_index(pid) >= 0 ? killpg(pid, SIGKILL) : -1;
}

/* Fork call processes ahead until want_ready wait. */
static int refill(void) {
    while (n_ready < want_ready) {
        int fd;
        pid_t pid = fork_ready(&fd);
        if (pid == 0) return CHILD;
        if (pid < 0) return 0;
        ready[n_ready++] = (struct ready_call){pid, fd};
    }
    return 0;
}

/* Hand the pending request to a call process forked ahead (skipping any that died waiting, forking
 * one if none waits); answer {"pid"} or {"error"}. */
int gn_hand_off(void) {
    int tries = n_ready + 3, error = 0;
    pid_t pid = -1;
    if (n_calls == cap_calls) {
        int cap = cap_calls ? 2 * cap_calls : 64;
        pid_t *more = realloc(calls, (size_t)cap * sizeof *calls);
        if (!more) { gn_drop_pending(); post_error("out of memory", ENOMEM); return 0; }
        calls = more; cap_calls = cap;
    }
    for (int attempt = 0; attempt < tries; attempt++) {
        struct ready_call r;
        if (n_ready) {
            r = ready[0];
            memmove(ready, ready + 1, (size_t)--n_ready * sizeof *ready);
        } else {
            r.pid = fork_ready(&r.fd);
            if (r.pid == 0) return CHILD;
            if (r.pid < 0) { error = errno; break; }
        }
        char control[CMSG_SPACE(GN_MAX_FDS * sizeof(int))];
        struct iovec iov = {gn_pending, (size_t)gn_pending_len};
        struct msghdr mh = {0};
        mh.msg_iov = &iov; mh.msg_iovlen = 1;
        if (n_pending_fds) {
            memset(control, 0, sizeof control);
            mh.msg_control = control; mh.msg_controllen = CMSG_SPACE(n_pending_fds * sizeof(int));
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET; c->cmsg_type = SCM_RIGHTS; c->cmsg_len = CMSG_LEN(n_pending_fds * sizeof(int));
            memcpy(CMSG_DATA(c), pending_fds, n_pending_fds * sizeof(int));
        }
        ssize_t sent;
        do sent = sendmsg(r.fd, &mh, MSG_NOSIGNAL); while (sent < 0 && errno == EINTR);
        error = errno;
        close(r.fd);
        if (sent >= 0) { pid = r.pid; break; }
    }
    gn_drop_pending();
    if (pid > 0) {
        calls[n_calls++] = pid;
        char buf[64];
        gn_post(buf, (size_t)snprintf(buf, sizeof buf, "{\"pid\": %d}", pid));
    } else {
        post_error("fork a call process", error);
    }
    return refill();
}

/* Without pid namespaces, kill what calls left behind: processes re-parented to us (a child subreaper)
 * that are neither calls nor forked ahead; reap only those, never a call (its exit is reported). */
static void sweep_orphans(void) {
    pid_t me = getpid();
    for (int round = 0; round < 10; round++) {
        int found = 0;
        DIR *proc = opendir("/proc");
        if (!proc) return;
        for (struct dirent *e; (e = readdir(proc));) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
            pid_t pid = atoi(e->d_name);
            char path[64], stat[512];
            snprintf(path, sizeof path, "/proc/%d/stat", pid);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            ssize_t n = read(fd, stat, sizeof stat - 1);
            close(fd);
            if (n <= 0) continue;
            stat[n] = 0;
            char *end = strrchr(stat, ')');
            int ppid;
            if (!end || sscanf(end + 1, " %*c %d", &ppid) != 1 || ppid != me || call_index(pid) >= 0) continue;
            int waiting = 0;
            for (int i = 0; i < n_ready; i++) waiting |= ready[i].pid == pid;
            if (waiting) continue;
            found = 1;
            kill(pid, SIGKILL);
            waitpid(pid, NULL, WNOHANG);
        }
        closedir(proc);
        if (!found) return;
    }
}

/* Reap exited children; report the calls among them as {"exits": [[pid, wait status], ...]}. A call's
 * process group is killed while the call is still a zombie, so that group id cannot be reused yet. */
static void reap(void) {
    char buf[8192];
    size_t n = 0;
    int exits = 0, orphans = 0;
    for (;;) {
        siginfo_t info;
        info.si_pid = 0;
        if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0) break;
        pid_t pid = info.si_pid;
        int index = call_index(pid), status = 0;
        if (index >= 0) killpg(pid, SIGKILL);  /* stragglers of this call die with it */
        if (waitpid(pid, &status, 0) < 0) break;
        for (int i = 0; i < n_ready; i++)
            if (ready[i].pid == pid) {  /* died waiting for its call */
                close(ready[i].fd);
                memmove(ready + i, ready + i + 1, (size_t)(--n_ready - i) * sizeof *ready);
                break;
            }
        if (index < 0) {  /* an orphan: whatever it started is re-parented to us now */
            orphans++;
            continue;
        }
        calls[index] = calls[--n_calls];
        if (n + 40 > sizeof buf) { buf[n++] = ']'; buf[n++] = '}'; gn_post(buf, n); n = 0; }
        n += (size_t)snprintf(buf + n, sizeof buf - n, n ? ", [%d, %d]" : "{\"exits\": [[%d, %d]", pid, status);
        exits++;
    }
    if (n) { buf[n++] = ']'; buf[n++] = '}'; gn_post(buf, n); }
    if ((exits || orphans) && !config->namespaces) sweep_orphans();
}

/* Serve the worker until a request needs Python (GN_SERVE_PYTHON), or in a call process forked here
 * (GN_SERVE_CHILD). The
 * worker hanging up ends the zygote and its calls. */
int gn_zygote_serve(int wake, int ready_calls) {
    want_ready = ready_calls < MAX_READY ? ready_calls : MAX_READY;
    if (refill() == CHILD) return CHILD;
    for (;;) {
        struct pollfd fds[2] = {{WORKER, POLLIN | (out_head ? POLLOUT : 0), 0}, {wake, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR) return -1;
        if (fds[1].revents & POLLIN) {
            char drain[512];
            while (read(wake, drain, sizeof drain) > 0) {}
        }
        reap();
        if (fds[0].revents & POLLOUT) flush();
        if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t got = recv_with_fds(WORKER, gn_pending, sizeof gn_pending, MSG_DONTWAIT, pending_fds, &n_pending_fds);
        if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (got <= 0) {  /* the worker is gone: so are its calls */
            for (int i = 0; i < n_calls; i++) killpg(calls[i], SIGKILL);
            _exit(0);
        }
        gn_pending_len = got;
        if (find_plan(gn_pending, (size_t)got) < 0) return GN_SERVE_PYTHON;
        if (gn_hand_off() == CHILD) return CHILD;
    }
}
