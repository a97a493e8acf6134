"""Provenance: what is needed to reproduce a fit.

Recorded in ``material.json``: SHA-256 of every input file, the seed, the options and
the schedule actually run, the versions of the packages that shape the numbers, the git
revision of pbrfit's source (when run from a checkout), the platform and the wall time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["file_sha256", "package_versions", "git_revision", "collect"]

_PACKAGES = ("pbrfit", "torch", "numpy", "usd-core", "materialx", "OpenImageIO", "mitsuba", "drjit")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The git commit of pbrfit's source tree (with '+dirty' if modified), or None."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not rev:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "."], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def collect(input_files: list[str | Path], *, seed: int, options: dict, schedule: list,
            wall_time: float, command: list[str] | None = None, timings: dict | None = None) -> dict:
    """The provenance record written into material.json."""
    return {
        "inputs": {str(p): file_sha256(p) for p in dict.fromkeys(map(str, input_files))},
        "seed": seed,
        "options": options,
        "schedule": schedule,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "platform": platform.platform(),
        "command": command if command is not None else list(sys.argv),
        "wall_time_s": round(wall_time, 3),
        "timings_s": {k: round(v, 3) for k, v in (timings or {}).items()},
    }
