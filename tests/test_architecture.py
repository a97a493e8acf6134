"""The engine stays host-free: core/ never imports bpy or omni (nor Kit's carb)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

from source_imports import imported_roots

import pbrfit

CORE = Path(pbrfit.__file__).resolve().parent
FORBIDDEN = {"bpy", "bmesh", "mathutils", "omni", "carb"}


def test_no_host_imports_in_core_source():
    offenders = {str(p.relative_to(CORE)): sorted(imported_roots(p) & FORBIDDEN)
                 for p in CORE.rglob("*.py") if imported_roots(p) & FORBIDDEN}
    assert not offenders, f"core/ imports host modules: {offenders}"


def test_importing_every_engine_module_loads_no_host_module():
    names = [m.name for m in pkgutil.walk_packages([str(CORE)], "pbrfit.")]
    code = ("import importlib, sys\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(names) > 10
