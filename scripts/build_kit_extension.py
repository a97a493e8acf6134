"""Build the pbrfit Omniverse Kit extension folder, ready for Kit's extension search paths.

Usage::

    python scripts/build_kit_extension.py [--out dist/kit]
    python scripts/build_kit_extension.py --offline --platform windows-x64 --python 3.12 [--out ...]

The result, ``<out>/pbrfit.material_fit/``, is ``omniverse_ext/pbrfit.material_fit`` plus:

* ``engine/pbrfit/``: the engine package (pure Python), on Kit's ``sys.path`` through the
  ``[[python.module]] path = "engine"`` entry. It ships inside the extension, so the
  extension and the engine always have the same version, and no ``pip install`` of pbrfit
  (which would pull usd-core into Kit, which has its own pxr) is needed.
* ``pip_archive/``: empty, or with ``--offline`` every wheel of the engine's dependencies
  (``[python.pipapi] requirements``, which exclude usd-core) for one platform and Kit's
  Python (Kit 107: 3.11; Kit 109 and 110: 3.12); the built extension.toml then sets
  ``use_online_index = false`` and Kit installs them without network access.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from wheelhouse import PLATFORMS, pbrfit_version, wheelhouse

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = ROOT / "omniverse_ext" / "pbrfit.material_fit"
ENGINE = ROOT / "core" / "pbrfit"

__all__ = ["KIT_PYTHONS", "pipapi_requirements", "build", "main"]

#: Kit's Python -> the Kit releases that run it
KIT_PYTHONS = {"3.11": "Kit 107", "3.12": "Kit 109 and 110"}

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "engine", "pip_archive")


def pipapi_requirements() -> list[str]:
    """The ``[python.pipapi] requirements`` of the extension's config/extension.toml."""
    config = tomllib.loads((EXTENSION / "config" / "extension.toml").read_text())
    return list(config["python"]["pipapi"]["requirements"])


def build(out_dir: Path, *, offline: bool = False, platform: str | None = None, python: str | None = None,
          find_links: list[str] = ()) -> Path:
    """Write ``<out_dir>/pbrfit.material_fit`` (replacing an older build); returns it."""
    config = (EXTENSION / "config" / "extension.toml").read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', config, re.M).group(1)
    if version != pbrfit_version():
        raise SystemExit(f"error: extension.toml says version {version}, the engine is {pbrfit_version()}: "
                         "make them equal")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / EXTENSION.name
    with tempfile.TemporaryDirectory(prefix="pbrfit_kit.", dir=out_dir) as tmp:
        staged = Path(tmp) / EXTENSION.name
        shutil.copytree(EXTENSION, staged, ignore=_IGNORE)
        shutil.copytree(ENGINE, staged / "engine" / "pbrfit", ignore=_IGNORE)
        archive = staged / "pip_archive"
        archive.mkdir()
        if offline:
            wheelhouse(platform, python, pipapi_requirements(), archive, list(find_links))
            text = (staged / "config" / "extension.toml").read_text()
            text = re.sub(r"^use_online_index\s*=.*$", "use_online_index = false", text, flags=re.M)
            (staged / "config" / "extension.toml").write_text(text)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist" / "kit"), help="output folder (default dist/kit)")
    ap.add_argument("--offline", action="store_true",
                    help="bundle every dependency's wheel in pip_archive/ (needs --platform and --python)")
    ap.add_argument("--platform", choices=sorted(PLATFORMS), help="with --offline: the Kit machine's platform")
    ap.add_argument("--python", choices=sorted(KIT_PYTHONS),
                    help="with --offline: Kit's Python ("
                         + "; ".join(f"{p}: {k}" for p, k in KIT_PYTHONS.items()) + ")")
    ap.add_argument("--find-links", action="append", default=[], metavar="DIR_OR_URL",
                    help="extra place to find wheels (e.g. a folder with torch's Linux CPU wheels)")
    args = ap.parse_args(argv)
    if args.offline and not (args.platform and args.python):
        ap.error("--offline needs --platform and --python")
    path = build(Path(args.out), offline=args.offline, platform=args.platform, python=args.python,
                 find_links=args.find_links)
    wheels = len(list((path / "pip_archive").glob("*.whl")))
    print(f"wrote {path} ({wheels} wheels in pip_archive); add {path.parent} to Kit's extension search paths")
    return 0


if __name__ == "__main__":
    sys.exit(main())
