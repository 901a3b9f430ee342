"""The gym_nemo fork server: runs untrusted code in isolated children of a warm interpreter.

Standalone on purpose (standard library only, Python >= 3.11): the local backend starts it as a daemon on
a unix socket shared by every env process on the machine (``python -I -S <this directory> --socket ...``),
and the docker backend mounts this directory into each container and runs it there. Inside, the package
is named ``forkserver`` (see ``__main__``); on the host, ``gym_nemo.sandbox.forkserver``.

Processes, and the module that holds each one's code:
  daemon (``daemon``)   decides the isolation once (``isolation``), pre-forks one worker per core and waits.
  worker (``worker``)   an event loop (``eventloop``) over its clients; runs calls (``runs``) in slots,
                        keeps sessions, and starts a zygote.
  zygote (``zygote``)   a fresh interpreter holding the warm modules; forks every call process, keeps a few
                        forked ahead, reaps them and reports their exits to its worker.
  call   (``call``)     set up (namespaces, chroot, limits from ``limits``, uid, ``seccomp``), then the code.
Where a C compiler is found, ``callsetup.c`` (driven by ``callsetup``) runs the zygote's loop and each call
process's setup up to the user's code; ``callsetup.h`` holds what C and Python share (read by ``abi``).
Wire formats are in ``protocol``, the ctypes kernel interfaces in ``kernel``. See docs/sandbox_internals.md.
"""
