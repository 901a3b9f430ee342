"""Entry point: ``python -I -S <this directory> [daemon options]`` starts the daemon (``daemon.main``), and
``python -I -S <runtime dir>/zygote/forkserver/__main__.pyc --zygote ...`` a zygote (``zygote.main``).

Standard library only, and runnable by any Python >= 3.11 without gym_nemo installed (a container's
interpreter gets this directory as a read-only mount), so the package is loaded here by its path under
the name ``forkserver`` (this directory's name, here and in the runtime dir); no directory of it stays on
``sys.path``, where user code could import it.
"""

import os
import sys


def _load_package() -> None:
    """Import this directory as the package ``forkserver``: its parent is on ``sys.path`` for that import
    only (the package's own ``__path__`` finds its modules from then on)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:  # `python <dir>` put it there
        del sys.path[0]
    sys.path.insert(0, os.path.dirname(here))
    try:
        import forkserver  # noqa: F401
    finally:
        del sys.path[0]


if __name__ == "__main__":
    _load_package()
    if sys.argv[1:2] == ["--zygote"]:
        from forkserver import zygote

        zygote.main(sys.argv[1:])
    else:
        from forkserver import daemon

        daemon.main(sys.argv[1:])
