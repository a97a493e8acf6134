"""Build the pbrfit Blender extension zip (Blender 4.2+ extension format).

Usage::

    python scripts/build_blender_extension.py [--out dist/] [--platform linux-x64]
                                              [--python 3.11] [--no-wheels]

The zip holds ``blender_addon/pbrfit_blender/`` at its root (``blender_manifest.toml``,
``__init__.py``, ...), plus ``wheels/`` with:

* a pbrfit wheel built from core/ (``pip wheel --no-deps core``);
* the engine's dependencies (numpy<2, torch 2.13 CPU, usd-core, materialx, OpenImageIO,
  tqdm and their own dependencies) downloaded with ``pip download --only-binary=:all:``
  for the target platform and Blender's Python version (Blender 4.2-5.0 bundle 3.11).

The manifest's ``wheels`` and ``platforms`` lists are rewritten in the zip for what was
bundled (one platform per zip, as Blender's own ``extension build --split-platforms``
does). ``--no-wheels`` (or no network) builds the add-on alone: the panel then says which
dependency is missing, and the user installs them into Blender's Python.

numpy is pinned to the 1.x line Blender bundles; torch's CPU build comes from the PyTorch
CPU index (``--extra-index-url https://download.pytorch.org/whl/cpu``) so that no CUDA
libraries are downloaded.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon" / "pbrfit_blender"

__all__ = ["PLATFORM_TAGS", "DEPENDENCIES", "build", "main"]

#: Blender platform name -> pip --platform tags (manylinux / macOS / Windows wheels)
PLATFORM_TAGS: dict[str, list[str]] = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64", "macosx_14_0_arm64"],
}

#: what the engine needs at run time (numpy is Blender's own major version)
DEPENDENCIES = ["numpy>=1.26,<2", "torch==2.13.0", "usd-core", "materialx", "OpenImageIO", "tqdm"]

_EXCLUDE = re.compile(r"(__pycache__|\.pyc$|\.zip$)")


def _version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def _wheels(platform: str, python: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dest), str(ROOT / "core")],
                   check=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python, "--implementation", "cp",
           "--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    for tag in PLATFORM_TAGS[platform]:
        cmd += ["--platform", tag]
    subprocess.run(cmd + DEPENDENCIES, check=True)
    return sorted(dest.glob("*.whl"))


def _manifest(wheels: list[Path], platform: str | None) -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    text = re.sub(r"^#?\s*wheels\s*=.*$", "", text, flags=re.M)
    text = re.sub(r"^platforms\s*=.*$", "", text, flags=re.M)
    lines = []
    if platform:
        lines.append(f'platforms = ["{platform}"]')
    if wheels:
        lines.append("wheels = [\n" + "".join(f'  "./wheels/{w.name}",\n' for w in wheels) + "]")
    head, sep, tail = text.partition("[permissions]")
    return head.rstrip() + "\n\n" + "\n".join(lines) + "\n\n" + sep + tail


def build(out_dir: Path, platform: str, python: str, with_wheels: bool) -> Path:
    """Write ``pbrfit-<version>[-<platform>].zip`` into ``out_dir``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pbrfit_ext.") as tmp:
        wheels = _wheels(platform, python, Path(tmp) / "wheels") if with_wheels else []
        name = f"pbrfit-{_version()}" + (f"-{platform.replace('-', '_')}" if wheels else "") + ".zip"
        target = out_dir / name
        partial = target.with_suffix(".zip.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(ADDON.rglob("*")):
                rel = path.relative_to(ADDON).as_posix()
                if path.is_file() and not _EXCLUDE.search(rel) and rel != "blender_manifest.toml":
                    zf.write(path, rel)
            zf.writestr("blender_manifest.toml", _manifest(wheels, platform if wheels else None))
            for w in wheels:
                zf.write(w, f"wheels/{w.name}", compress_type=zipfile.ZIP_STORED)
        partial.replace(target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist"), help="output folder (default dist/)")
    ap.add_argument("--platform", default="linux-x64", choices=sorted(PLATFORM_TAGS))
    ap.add_argument("--python", default="3.11", help="Blender's Python version (default 3.11)")
    ap.add_argument("--no-wheels", action="store_true", help="build without bundled dependencies")
    args = ap.parse_args(argv)
    try:
        path = build(Path(args.out), args.platform, args.python, not args.no_wheels)
    except subprocess.CalledProcessError as e:
        print(f"error: pip failed ({e}); offline? build with --no-wheels", file=sys.stderr)
        return 1
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
