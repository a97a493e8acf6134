"""Build the pbrfit Blender extension: one zip per platform, every dependency inside.

Usage::

    python scripts/build_blender_extension.py [--platform all|windows-x64|macos-arm64|linux-x64 ...]
                                              [--python 3.11,3.13] [--out dist/] [--no-wheels]
                                              [--find-links DIR_OR_URL]

What a zip holds, for its platform:

* the add-on (``blender_addon/pbrfit_blender``) with its ``blender_manifest.toml``;
* ``wheels/``: pbrfit itself (built from ``core/``) and every runtime dependency named in
  ``core/pyproject.toml`` with its own dependencies, as binary wheels for each Python that
  the covered Blender releases bundle (:data:`BLENDER_PYTHONS`). numpy is left out: every
  Blender bundles it. torch is the tested release (``wheelhouse.BUNDLED_TORCH``), a CPU build: on
  Windows and macOS that is PyPI's torch; for Linux, PyPI's torch is the CUDA build
  (several GB with its libraries), so the CPU wheel comes from PyTorch's CPU index (or a
  ``--find-links`` folder holding it) and the build refuses anything else. The set is
  resolved for each target by uv (see ``wheelhouse.py``: pip would evaluate markers for
  this machine instead).

Blender installs the wheels that match its own Python into the extension's private
site-packages (Blender 4.2 LTS and later skip the others), so nothing is installed into
the system and nothing is downloaded at run time. The CPU ray engine is Embree (the
``embreex`` wheel carries the library): no system library is needed.

The manifest's ``platforms``, ``wheels``, ``version`` and Blender version range are
written here; the zips are then made and checked by **Blender's own extension tools**
(``blender_ext.py build --split-platforms`` and ``validate``, shipped in the bpy module:
run this with the project's ``.venv``, or pass ``--blender-ext``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wheelhouse import (
    PLATFORMS,
    pbrfit_version,
    pbrfit_wheel,
    pure_pins,
    requirement_name,
    runtime_requirements,
    wheelhouse,
)

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon" / "pbrfit_blender"

__all__ = ["BLENDER_PYTHONS", "blender_range", "blender_ext_tool", "build", "main"]

#: Python bundled by Blender -> (the Blender releases bundling it, [first, first not covered),
#: the numpy they bundle). 4.2 LTS to 5.0 bundle Python 3.11 with numpy 1.x; 5.1 to 5.3
#: bundle 3.13 with numpy 2.x. A later Blender needs a rebuild (and a check): its Python may
#: differ. The numpy range steers the other wheels (OpenImageIO 3.2 needs numpy 2).
BLENDER_PYTHONS: dict[str, tuple[str, str, str]] = {
    "3.11": ("4.2.0", "5.1.0", "numpy>=1.24,<2"),
    "3.13": ("5.1.0", "5.4.0", "numpy>=2.2,<3"),
}

#: left out of the zips: Blender bundles it, and its build must match Blender's own
BLENDER_BUNDLED = {"numpy"}


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def blender_range(pythons: list[str]) -> tuple[str, str]:
    """(blender_version_min, blender_version_max) covered by wheels for ``pythons``; they
    must be adjacent Blender ranges (no gap in between)."""
    ranges = sorted((BLENDER_PYTHONS[p][:2] for p in pythons), key=lambda r: _version_key(r[0]))
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        if hi != lo:
            raise SystemExit(f"error: Python {', '.join(pythons)} leave a gap in the Blender releases covered")
    return ranges[0][0], ranges[-1][1]


def _dependency_wheels(platform: str, python: str, dest: Path, find_links: list[str],
                       constraints: list[str]) -> list[Path]:
    """The runtime dependencies' wheels for one platform and Blender Python, resolved against
    the numpy that Blender bundles (which is then left out) and within ``constraints``."""
    requirements = runtime_requirements(exclude=BLENDER_BUNDLED) + [BLENDER_PYTHONS[python][2]]
    wheels = wheelhouse(platform, python, requirements, dest, find_links, constraints)
    return [w for w in wheels if requirement_name(w.name.split("-")[0]) not in BLENDER_BUNDLED]


def _manifest(wheels: list[str], platforms: list[str], pythons: list[str]) -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    lo, hi = blender_range(pythons) if wheels else (min(v[0] for v in BLENDER_PYTHONS.values()), None)
    text = re.sub(r'^version\s*=.*$', f'version = "{pbrfit_version()}"', text, flags=re.M)
    text = re.sub(r'^blender_version_min\s*=.*$', f'blender_version_min = "{lo}"', text, flags=re.M)
    text = re.sub(r'^#?\s*(blender_version_max|platforms|wheels)\s*=.*$\n?', "", text, flags=re.M)
    lines = [f'blender_version_max = "{hi}"'] if hi else []
    if wheels:
        lines.append("platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]")
        lines.append("wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in sorted(wheels)) + "]")
    head, sep, tail = text.partition("[permissions]")
    return head.rstrip() + "\n" + "\n".join(lines) + "\n\n" + sep + tail


def blender_ext_tool(explicit: str | None = None) -> Path:
    """Blender's extension command-line tool (``bl_pkg/cli/blender_ext.py``)."""
    if explicit:
        return Path(explicit)
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.submodule_search_locations:
        found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    raise SystemExit("error: Blender's extension tool was not found: run with the project's .venv "
                     "(which has the bpy module) or pass --blender-ext <blender>/<version>/scripts/addons_core/"
                     "bl_pkg/cli/blender_ext.py")


def build(out_dir: Path, platforms: list[str], pythons: list[str], with_wheels: bool,
          find_links: list[str] = (), blender_ext: str | None = None) -> list[Path]:
    """Build one zip per platform (or one add-on-only zip) into ``out_dir``; returns their paths."""
    tool = blender_ext_tool(blender_ext)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pbrfit_ext.") as tmp:
        src = Path(tmp) / "pbrfit"
        shutil.copytree(ADDON, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.zip"))
        names: set[str] = set()
        if with_wheels:
            (src / "wheels").mkdir()
            wheels = [pbrfit_wheel(Path(tmp) / "pbrfit_wheel")]
            pure: list[str] = []  # pure-Python wheels install into one folder: one version for all
            for platform in platforms:
                for python in sorted(pythons, key=_version_key):
                    wheels += _dependency_wheels(platform, python, Path(tmp) / f"{platform}-{python}",
                                                 list(find_links), pure)
                    pure = sorted(set(pure) | set(pure_pins(wheels)))
            for w in wheels:
                if w.name not in names:
                    shutil.copy2(w, src / "wheels" / w.name)
                    names.add(w.name)
        (src / "blender_manifest.toml").write_text(_manifest(sorted(names), platforms, pythons))
        staged = Path(tmp) / "out"
        staged.mkdir()
        cmd = [sys.executable, str(tool), "build", "--source-dir", str(src), "--output-dir", str(staged)]
        subprocess.run(cmd + (["--split-platforms"] if with_wheels else []), check=True)
        zips = []
        for z in sorted(staged.glob("*.zip")):
            subprocess.run([sys.executable, str(tool), "validate", str(z)], check=True, capture_output=True)
            target = out_dir / z.name
            shutil.move(z, target.with_suffix(".zip.part"))
            target.with_suffix(".zip.part").replace(target)
            zips.append(target)
    return zips


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default dist/)")
    ap.add_argument("--platform", action="append", choices=sorted(PLATFORMS) + ["all"],
                    help="platform to build for (repeatable; default all)")
    ap.add_argument("--python", default=",".join(BLENDER_PYTHONS),
                    help=f"Blender Python versions to bundle wheels for (default {','.join(BLENDER_PYTHONS)}; "
                         f"covers Blender {BLENDER_PYTHONS['3.11'][0]} to before {BLENDER_PYTHONS['3.13'][1]})")
    ap.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL",
                    help="extra place to find wheels (e.g. a folder with torch's Linux CPU wheels)")
    ap.add_argument("--no-wheels", action="store_true", help="the add-on alone (its panel then names what is missing)")
    ap.add_argument("--blender-ext", help="path of Blender's bl_pkg/cli/blender_ext.py (default: from bpy)")
    args = ap.parse_args(argv)
    platforms = sorted(PLATFORMS) if not args.platform or "all" in args.platform else sorted(set(args.platform))
    pythons = [p.strip() for p in args.python.split(",") if p.strip()]
    unknown = [p for p in pythons if p not in BLENDER_PYTHONS]
    if unknown or not pythons:
        ap.error(f"--python: choose from {', '.join(BLENDER_PYTHONS)}")
    try:
        zips = build(Path(args.out), platforms, pythons, not args.no_wheels, args.find_links, args.blender_ext)
    except subprocess.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] if e.stderr else []
        print(f"error: {' '.join(map(str, e.cmd[:4]))} ... failed{': ' + detail[0] if detail else ''}; "
              "offline? build with --no-wheels", file=sys.stderr)
        return 1
    for z in zips:
        print(f"wrote {z} ({z.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
