"""Wheels of pbrfit and its runtime dependencies for another platform and Python.

Used by the host packagers (``build_blender_extension.py``, ``build_kit_extension.py``):
a host bundles pbrfit's dependencies as wheels for each platform and Python it supports.

Why not ``pip download --platform``: pip evaluates environment markers against the machine
it runs on, not the target, so a Windows download from Linux pulls torch's Linux-only CUDA
packages and misses tqdm's Windows-only colorama. The dependency set is therefore resolved
for the target by uv (``uv pip compile --python-platform``, a real resolver that evaluates
markers for the target), and each pinned wheel is then fetched with
``pip download --no-deps``.

The one list of runtime dependencies is ``core/pyproject.toml``'s ``[project] dependencies``.
torch is pinned to :data:`BUNDLED_TORCH` (the release the tests ran with) and must be a CPU
build: PyPI's torch is one on Windows and macOS; on Linux PyPI's is the CUDA build (several
GB with its libraries), so the CPU wheel comes from PyTorch's CPU index or a ``find_links``
folder, and anything else is refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"

__all__ = ["Platform", "PLATFORMS", "BUNDLED_TORCH", "TORCH_CPU_INDEX", "requirement_name",
           "runtime_requirements", "pbrfit_version", "pbrfit_wheel", "pure_pins", "resolve", "download", "wheelhouse"]

#: the torch the host packages bundle: the release the tests ran with
BUNDLED_TORCH = "torch==2.13.0"
#: where the Linux CPU build of torch lives (PyPI's Linux torch is the CUDA build)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@dataclass(frozen=True)
class Platform:
    """A target platform, named as Blender names it.

    Attributes:
        pip_tags: ``pip download --platform`` tags of the wheels that run there.
        uv_platform: ``uv pip compile --python-platform`` value.
        macos: minimum macOS version (torch 2.13's arm64 wheels need 14), else None.
    """

    pip_tags: tuple[str, ...]
    uv_platform: str
    macos: str | None = None

    @property
    def is_linux(self) -> bool:
        return "linux" in self.uv_platform


PLATFORMS: dict[str, Platform] = {
    "windows-x64": Platform(("win_amd64",), "x86_64-pc-windows-msvc"),
    "macos-arm64": Platform(("macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64"),
                            "aarch64-apple-darwin", macos="14.0"),
    "linux-x64": Platform(("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                           "manylinux2014_x86_64"), "x86_64-manylinux_2_28"),
}


def requirement_name(spec: str) -> str:
    """The normalized distribution name of a requirement (``usd-core>=24.8`` -> ``usd_core``)."""
    return re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower().replace("-", "_").replace(".", "_")


def runtime_requirements(exclude: set[str] = frozenset()) -> list[str]:
    """pbrfit's runtime dependencies from core/pyproject.toml, torch pinned to
    :data:`BUNDLED_TORCH`, without the distributions named in ``exclude``."""
    deps = tomllib.loads((CORE / "pyproject.toml").read_text())["project"]["dependencies"]
    skip = {requirement_name(n) for n in exclude}
    return [BUNDLED_TORCH if requirement_name(d) == "torch" else d for d in deps if requirement_name(d) not in skip]


def pbrfit_version() -> str:
    text = (CORE / "pbrfit" / "__init__.py").read_text()
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M).group(1)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def pbrfit_wheel(dest: Path) -> Path:
    """Build pbrfit's own wheel (pure Python) from core/ into ``dest``."""
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(CORE))
    return next(dest.glob(f"pbrfit-{pbrfit_version()}-*.whl"))


def pure_pins(wheels: list[Path]) -> list[str]:
    """``name==version`` of the pure-Python wheels among ``wheels`` (``*-none-any``): a
    package holding wheels for several Pythons must pick one version of these for all, as
    they install into one folder."""
    return [f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in wheels if w.name.endswith("-none-any.whl")]


def resolve(platform: str, python: str, requirements: list[str], find_links: list[str] = (),
            constraints: list[str] = ()) -> list[str]:
    """Pins (``name==version``) of ``requirements`` and everything they need on ``platform``
    with CPython ``python``, binary wheels only (uv's resolver, markers for the target),
    within ``constraints`` (``name==version`` lines)."""
    target = PLATFORMS[platform]
    cmd = [sys.executable, "-m", "uv", "pip", "compile", "-", "--quiet", "--no-header", "--no-annotate",
           "--python-platform", target.uv_platform, "--python-version", python, "--only-binary", ":all:"]
    for link in find_links:
        cmd += ["--find-links", str(link)]
    env = dict(os.environ, **({"MACOSX_DEPLOYMENT_TARGET": target.macos} if target.macos else {}))
    with tempfile.TemporaryDirectory(prefix="pbrfit_constraints.") as tmp:
        if constraints:
            path = Path(tmp) / "constraints.txt"
            path.write_text("\n".join(constraints) + "\n")
            cmd += ["--constraint", str(path)]
        proc = subprocess.run(cmd, input="\n".join(requirements) + "\n", capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"error: resolving pbrfit's dependencies for {platform}, Python {python} failed:\n"
                         + proc.stderr.strip())
    return [ln.split(";")[0].strip() for ln in proc.stdout.splitlines() if ln.strip() and not ln.startswith("#")]


def download(platform: str, python: str, pins: list[str], dest: Path, find_links: list[str] = ()) -> list[Path]:
    """Fetch the wheel of each pin for ``platform`` / ``python`` into ``dest``; returns them."""
    cmd = ["download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), "--python-version", python,
           "--implementation", "cp", "--find-links", str(dest)]
    for tag in PLATFORMS[platform].pip_tags:
        cmd += ["--platform", tag]
    for link in find_links:
        cmd += ["--find-links", str(link)]
    _pip(*cmd, *pins)
    wanted = {requirement_name(p): p.split("==")[1] for p in pins}
    found = []
    for w in sorted(dest.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        if wanted.get(requirement_name(name)) == version:
            found.append(w)
    missing = set(wanted) - {requirement_name(w.name.split("-")[0]) for w in found}
    if missing:
        raise SystemExit(f"error: no wheel for {', '.join(sorted(missing))} on {platform}, Python {python}")
    return found


def wheelhouse(platform: str, python: str, requirements: list[str], dest: Path,
               find_links: list[str] = (), constraints: list[str] = ()) -> list[Path]:
    """Resolve ``requirements`` for ``platform`` / ``python`` (within ``constraints``) and
    download every wheel into ``dest``. On Linux the CPU build of torch is fetched first
    (PyTorch's CPU index, or ``find_links``) so that the resolution picks it; a CUDA torch
    is refused."""
    dest.mkdir(parents=True, exist_ok=True)
    links = [str(dest), *map(str, find_links)]
    target = PLATFORMS[platform]
    torch_spec = next((r for r in requirements if requirement_name(r) == "torch"), None)
    if target.is_linux and torch_spec:
        cmd = ["download", "--no-deps", "--only-binary=:all:", "--dest", str(dest), "--python-version", python,
               "--implementation", "cp", "--retries", "1", "--extra-index-url", TORCH_CPU_INDEX]
        for tag in target.pip_tags:
            cmd += ["--platform", tag]
        for link in links:
            cmd += ["--find-links", link]
        _pip(*cmd, torch_spec)
        if not any("+cpu" in w.name for w in dest.glob("torch-*.whl")):
            raise SystemExit(f"error: {platform}, Python {python}: no CPU build of {torch_spec} was found (PyPI's "
                             f"Linux torch is the CUDA build, several GB); make {TORCH_CPU_INDEX} reachable or pass "
                             f"--find-links with a folder holding torch-*+cpu-cp{python.replace('.', '')}-*.whl")
    pins = resolve(platform, python, requirements, links, constraints)
    return download(platform, python, pins, dest, links)
