"""Packaging knowledge kept in one place: the dependency list, the version, the Blender
releases each zip covers, and the resolution of dependencies for another platform."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from build_blender_extension import blender_range  # noqa: E402
from wheelhouse import BUNDLED_TORCH, requirement_name, resolve, runtime_requirements  # noqa: E402

PYPROJECT = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())


def test_the_engines_dependency_check_lists_pyprojects_dependencies():
    from pbrfit.dependencies import REQUIRED

    declared = {requirement_name(d) for d in PYPROJECT["project"]["dependencies"]}
    assert {requirement_name(d) for d in REQUIRED.values()} == declared


def test_one_version_everywhere():
    from pbrfit import __version__

    manifest = tomllib.loads((ROOT / "blender_addon" / "pbrfit_blender" / "blender_manifest.toml").read_text())
    kit = tomllib.loads((ROOT / "omniverse_ext" / "pbrfit.material_fit" / "config" / "extension.toml").read_text())
    assert manifest["version"] == kit["package"]["version"] == __version__
    assert "version" in PYPROJECT["project"]["dynamic"]  # the wheel takes pbrfit.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_blender_releases_covered_by_the_bundled_pythons():
    assert blender_range(["3.11"]) == ("4.2.0", "5.1.0")
    assert blender_range(["3.13"]) == ("5.1.0", "5.4.0")
    assert blender_range(["3.13", "3.11"]) == ("4.2.0", "5.4.0")


def test_bundled_requirements_come_from_pyproject():
    reqs = runtime_requirements(exclude={"numpy"})
    assert BUNDLED_TORCH in reqs and not any(requirement_name(r) == "numpy" for r in reqs)
    assert len(reqs) == len(PYPROJECT["project"]["dependencies"]) - 1


def test_dependencies_resolve_for_the_target_platform_not_this_machine():
    """pip evaluates markers for the machine it runs on; the resolution for Windows must not
    carry torch's Linux-only CUDA packages and must carry tqdm's Windows-only colorama."""
    pins = resolve("windows-x64", "3.11", runtime_requirements())
    names = {requirement_name(p) for p in pins}
    assert "colorama" in names and "torch" in names
    assert not any(n.startswith(("nvidia", "cuda", "triton")) for n in names), names
    linux = {requirement_name(p) for p in resolve("linux-x64", "3.11", runtime_requirements())}
    assert "colorama" not in linux


@pytest.mark.parametrize("spec, name", [("usd-core>=24.8", "usd_core"), ("OpenImageIO>=3.0", "openimageio"),
                                        ("torch==2.13.0", "torch"), ("typing_extensions", "typing_extensions")])
def test_requirement_names_are_normalized(spec, name):
    assert requirement_name(spec) == name
