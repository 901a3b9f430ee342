/* gym_nemo fork server: what callsetup.c and the Python side share, written once.
 *
 * callsetup.c includes this header, and abi.py reads it when the fork server starts: the constants and
 * stage names below become Python names, the structs ctypes structures. So keep to the form abi.py
 * parses: one "#define GN_NAME integer" a line (a stage's text in its comment), and in a struct one
 * field a line, "type name;" or "type name[GN_CONSTANT];", of the types abi.py knows. */
#ifndef GN_CALLSETUP_H
#define GN_CALLSETUP_H
#include <stddef.h>
#include <sys/types.h>

#define GN_PACKET 65536                 /* the largest packet on a zygote's sockets */
#define GN_MAX_FDS 8                    /* fds passed with one packet */
#define GN_MAX_PLANS 64                 /* plans cached at once (the cache is emptied when full) */
#define GN_MAX_RLIMITS 8                /* rlimits in one plan */
#define GN_CTL_FD 3                     /* a zygote's socket to its worker; a call process's to its zygote */
#define GN_SERVE_PYTHON 1               /* gn_zygote_serve: a request of no cached plan waits for Python */
#define GN_SERVE_CHILD 2                /* gn_zygote_serve: we are a call process forked by the loop */

/* gn_result.stage: the step of a call process's setup that failed (0: none) */
#define GN_STAGE_UNSHARE 3              /* unshare */
#define GN_STAGE_READY_MOUNTS 4         /* mount /dev/shm or /proc */
#define GN_STAGE_CHROOT 5               /* chroot */
#define GN_STAGE_DUP 6                  /* dup3 */
#define GN_STAGE_SCRATCH 7              /* mount the scratch dir */
#define GN_STAGE_CHDIR 8                /* chdir */
#define GN_STAGE_RLIMIT 9               /* setrlimit */
#define GN_STAGE_UID 10                 /* switch uid */
#define GN_STAGE_NO_NEW_PRIVS 11        /* no_new_privs */
#define GN_STAGE_SECCOMP 12             /* seccomp */
#define GN_STAGE_WRITE 13               /* write */
#define GN_STAGE_SOURCE 14              /* read the code */

struct gn_mount {                       /* mount(2)'s arguments */
    const char *source;
    const char *target;
    const char *fstype;
    unsigned long flags;
    const char *data;
};

struct gn_rlimit {
    int resource;
    unsigned long cur;
    unsigned long max;
};

struct gn_plan {                        /* a call's setup, cached by the request bytes it answers */
    const char *msg;
    size_t msg_len;
    struct gn_mount scratch;
    int has_scratch;
    const char *workdir;
    struct gn_rlimit rlimits[GN_MAX_RLIMITS];
    int n_rlimits;
    int uid;                            /* 0: no switch */
    int session;                        /* send "R" on fd 3 instead of reading code and marking stderr */
};

struct gn_config {                      /* a zygote's, set once */
    int namespaces;
    int own_pidns;
    const struct gn_mount *mounts;
    int n_mounts;
    const char *skeleton;
    const void *seccomp;                /* struct sock_fprog *, or NULL */
    const char *ready_mark;
    size_t ready_mark_len;
};

struct gn_result {                      /* what a call process's Python learns from its setup in C */
    int stage;
    int error;                          /* errno of the failed stage */
    ssize_t msg_len;                    /* 0: the zygote hung up before a call came */
    int plan;                           /* index set by gn_plan_set, or -1 (Python sets up the rest) */
    char *source;
    size_t source_len;
};

#endif
