"""Entry point: ``python -I -S <this directory> [daemon options]`` starts the daemon (``daemon.main``), and
``python -I -S <runtime dir>/zygote/forkserver/__main__.pyc --zygote ...`` a zygote (``zygote.main``).

Standard library only, and runnable by any Python >= 3.11 without gym_nemo installed (a container's
interpreter gets this directory as a read-only mount), so the package is loaded here by its path under
the name ``forkserver``; no directory of it stays on ``sys.path``, where user code could import it.
"""

import importlib.util
import os
import sys


def _load_package() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:  # `python <dir>` put it there
        del sys.path[0]
    init = os.path.join(here, "__init__" + os.path.splitext(__file__)[1])  # .py, or .pyc in the runtime dir
    spec = importlib.util.spec_from_file_location("forkserver", init, submodule_search_locations=[here])
    package = importlib.util.module_from_spec(spec)
    sys.modules["forkserver"] = package
    spec.loader.exec_module(package)


if __name__ == "__main__":
    _load_package()
    if sys.argv[1:2] == ["--zygote"]:
        from forkserver import zygote

        zygote.main(sys.argv[1:])
    else:
        from forkserver import daemon

        daemon.main(sys.argv[1:])
