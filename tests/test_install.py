"""pbrfit installed the way its users install it, outside the project's .venv.

* **Blender**: the extension zip built by scripts/build_blender_extension.py (linux-x64,
  this Python), validated by Blender's own validator, installed with Blender's extension
  installer into a clean ``BLENDER_USER_RESOURCES``, in a Python that has only the PyPI bpy
  module (what a stock Blender has: bpy and numpy). A fit runs through the add-on's
  operator; the Principled BSDF changes, and the saved .blend re-opens with the values.
* **pip**: the pbrfit wheel installed into an empty virtualenv (torch first, as PyTorch's
  instructions say), then ``pbrfit --version`` and a fit of the bundled example.

These are slow (a fresh virtualenv each, about 250 MB of wheels): ``make test`` runs
them with the rest (marker ``install``; ``pytest -m "not install"`` leaves them out).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.install


def _clean_env(**extra) -> dict:
    """The environment of a user's process: nothing of the project's .venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DRJIT_LIBLLVM_PATH", "PBRFIT_RAY_ENGINE")}
    env["PYTHONNOUSERSITE"] = "1"
    env.update(extra)
    return env


def _run(cmd, timeout=900, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _venv(path: Path, *packages: str) -> Path:
    _run([sys.executable, "-m", "venv", str(path)], env=_clean_env())
    py = path / "bin" / "python"
    if packages:
        _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages], env=_clean_env())
    return py


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, str(ROOT / "scripts" / "build_blender_extension.py"), "--platform", "linux-x64",
          "--python", PYTHON_TAG, "--out", str(out)], cwd=ROOT)
    (zip_path,) = out.glob("pbrfit-*-linux_x64.zip")
    return zip_path


#: Blender releases the extension is installed into: the oldest supported (4.2 LTS, latest
#: point release) and the project's own bpy
BLENDERS = ["4.2.23", importlib.metadata.version("bpy")]


@pytest.fixture(scope="module", params=BLENDERS, ids=[f"blender-{v}" for v in BLENDERS])
def bpy_only_python(request, tmp_path_factory) -> Path:
    """A Python with the PyPI bpy module of one Blender release and its numpy, nothing else."""
    return _venv(tmp_path_factory.mktemp("bpy_only") / "venv", f"bpy=={request.param}", "numpy<2")


def test_extension_passes_blenders_validator_and_bundles_every_dependency(extension_zip):
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_blender_extension import blender_ext_tool

    proc = subprocess.run([sys.executable, str(blender_ext_tool()), "validate", str(extension_zip)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(extension_zip) as zf:
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        wheels = {n.split("/")[-1].split("-")[0].lower() for n in zf.namelist() if n.endswith(".whl")}
    from pbrfit import __version__

    assert manifest["version"] == __version__ and manifest["platforms"] == ["linux-x64"]
    assert manifest["blender_version_min"] == "4.2.0" and manifest["blender_version_max"] == "5.1.0"
    assert len(manifest["permissions"]["files"]) <= 64
    core = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = {spec.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("-", "_") for spec in core}
    assert needed - {"numpy"} <= wheels, needed - wheels  # numpy is Blender's own
    assert "numpy" not in wheels and "mitsuba" not in wheels and "drjit" not in wheels
    assert any("+cpu" in n for n in manifest["wheels"] if "/torch-" in n)  # no CUDA libraries on Linux


def test_extension_fits_in_a_blender_with_nothing_else_installed(extension_zip, bpy_only_python, tmp_path):
    """Install the zip as Blender's Install from Disk does, fit through the operator, save,
    re-open: only bpy and the extension's own wheels are importable in these processes."""
    user = tmp_path / "blender_user"
    env = _clean_env(BLENDER_USER_RESOURCES=str(user))
    prelude = f"""
        import json, sys
        sys.path.insert(0, {str(FIXTURES)!r})
        import bpy
        def out(**kw):
            print("RESULT=" + json.dumps(kw), flush=True)
    """

    def blender(code: str) -> dict:
        script = textwrap.dedent(prelude) + textwrap.dedent(code)
        proc = _run([str(bpy_only_python), "-c", script], env=env, cwd=tmp_path, timeout=900)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")]
        assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(lines[-1][len("RESULT="):])

    installed = blender(f"""
        r = bpy.ops.extensions.package_install_files(filepath={str(extension_zip)!r}, repo="user_default",
                                                     enable_on_install=True)
        bpy.ops.wm.save_userpref()  # Blender saves preferences itself; the bpy module does not
        import pbrfit, torch
        try:
            import mitsuba
            has_mitsuba = True
        except ImportError:
            has_mitsuba = False
        out(result=sorted(r), enabled="bl_ext.user_default.pbrfit" in bpy.context.preferences.addons,
            pbrfit=pbrfit.__file__, torch=torch.__version__, mitsuba=has_mitsuba)
    """)
    assert installed["result"] == ["FINISHED"] and installed["enabled"]
    assert installed["pbrfit"].startswith(str(user)) and installed["torch"].endswith("+cpu")
    assert not installed["mitsuba"]

    truth = {"base_color": [0.7, 0.25, 0.1], "roughness": 0.35}
    start = {"base_color": [0.5, 0.5, 0.5], "roughness": 0.6}
    fitted = blender(f"""
        import blender_addon_scene as S
        part, cams = S.build({truth!r}, cameras=((0, -6, 1.5), (5, 3, 0.5)), installed=True)
        for i, c in enumerate(cams):
            S.set_background(c, bpy.data.images.load(S.render(c, {str(tmp_path)!r} + f"/ref{{i}}.exr")))
        from bl_ext.user_default.pbrfit.extract import find_principled, read_principled
        from bl_ext.user_default.pbrfit.writeback import set_principled
        set_principled(find_principled(part.active_material), {start!r})
        bpy.ops.pbrfit.fit(object_name="Part", parameters="base_color,roughness", iterations=10,
                           output_dir={str(tmp_path / "out")!r}, synchronous=True)
        values = read_principled(find_principled(part.active_material))
        bpy.ops.wm.save_as_mainfile(filepath={str(tmp_path / "fitted.blend")!r})
        from pbrfit.raycast import default_engine
        out(values=values, status=bpy.context.scene.pbrfit.status, error=bpy.context.scene.pbrfit.error,
            engine=default_engine("cpu"))
    """)
    assert fitted["error"] == "" and fitted["engine"] == "embree"
    v = fitted["values"]
    # moved from the start toward the truth (a short fit at 32 px)
    err = [abs(a - b) for a, b in zip(v["base_color"], truth["base_color"])]
    err0 = [abs(a - b) for a, b in zip(start["base_color"], truth["base_color"])]
    assert max(err) < 0.15 and sum(err) < 0.5 * sum(err0), v
    assert abs(v["roughness"] - truth["roughness"]) < abs(start["roughness"] - truth["roughness"])
    doc = json.loads((tmp_path / "out" / "material.json").read_text())
    assert doc["parameters"]["base_color"] == pytest.approx(v["base_color"], abs=1e-6)
    assert (tmp_path / "out" / "report.html").is_file()

    reopened = blender(f"""
        bpy.ops.wm.open_mainfile(filepath={str(tmp_path / "fitted.blend")!r})
        import blender_addon_scene as S
        S.register(installed=True)
        from bl_ext.user_default.pbrfit.extract import find_principled, read_principled
        out(values=read_principled(find_principled(bpy.data.objects["Part"].active_material)))
    """)
    assert reopened["values"].keys() == v.keys()
    for name, value in v.items():
        assert reopened["values"][name] == pytest.approx(value, abs=1e-6), name


def test_pip_install_into_an_empty_virtualenv_gives_a_working_cli(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
          str(ROOT / "core")], env=_clean_env())
    (wheel,) = wheels.glob("pbrfit-*.whl")
    # torch first, the build the user wants (here: the CPU build), then pbrfit with its dependencies
    py = _venv(tmp_path / "venv", f"torch=={importlib.metadata.version('torch').split('+')[0]}")
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], env=_clean_env())
    cli = tmp_path / "venv" / "bin" / "pbrfit"
    from pbrfit import __version__

    version = _run([str(cli), "--version"], env=_clean_env())
    assert version.stdout.strip() == f"pbrfit {__version__}"
    out = tmp_path / "out"
    fit = _run([str(cli), "fit", str(ROOT / "examples" / "demo" / "job.toml"), "--out", str(out),
                "--backend", "raster", "--iterations", "6", "--quiet"], env=_clean_env(), cwd=tmp_path)
    doc = json.loads((out / "material.json").read_text())
    assert doc["metrics"]["validate"]["mean"]["de2000_mean"] < 6, fit.stdout
    assert {"material.json", "material.mtlx", "material.usda", "report.html"} <= {p.name for p in out.iterdir()}
    env_check = _run([str(py), "-c", "import importlib.util, numpy, pbrfit; print(numpy.__version__, "
                      "importlib.util.find_spec('mitsuba') is None, pbrfit.__file__)"], env=_clean_env())
    numpy_version, no_mitsuba, location = env_check.stdout.split()
    assert no_mitsuba == "True" and location.startswith(str(tmp_path))
    assert int(numpy_version.split(".")[0]) >= 2  # the newest numpy: pbrfit is not tied to Blender's 1.x
    # the extras, as a user adds them: OpenCV for `pbrfit calibrate` (on real board photos) and
    # rawpy for camera RAW photos (a DNG read through LibRaw)
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[calibrate,raw]"],
         env=_clean_env())
    board = ROOT / "tests" / "data" / "real_photos" / "charuco"
    calibrated = _run([str(cli), "calibrate", str(board), "--board", "5x7", "--square", "40mm", "--marker", "20mm",
                       "--dictionary", "6X6_250", "--out", str(tmp_path / "cameras.usda")], env=_clean_env())
    assert "calibrated 4 of 4 photos" in calibrated.stdout, calibrated.stdout
    sys.path.insert(0, str(FIXTURES))
    from dng import write_dng

    write_dng(tmp_path / "grey.dng", np.full((32, 48, 3), 0.25))
    developed = _run([str(py), "-c", f"from pbrfit.raw import read_raw; print(read_raw({str(tmp_path / 'grey.dng')!r})"
                      "[4:-4, 4:-4].mean())"], env=_clean_env())
    assert abs(float(developed.stdout) - 0.25) < 0.01, developed.stdout


def test_kit_extension_installs_its_dependencies_as_kit_does(tmp_path):
    """The built Kit extension in a Python that has only usd-core (standing in for Kit's own
    pxr): its [python.pipapi] requirements installed the way omni.kit.pipapi does (pip into a
    folder of its own, archiveDirs as --find-links), then its own checks run: the engine
    imports from the extension's engine/ folder and a small fit finds the true colour.
    Kit itself cannot be installed here; this is the closest honest stand-in."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_kit_extension import build, pipapi_requirements

    ext = build(tmp_path / "kit")
    assert (ext / "engine" / "pbrfit" / "__init__.py").is_file() and (ext / "pip_archive").is_dir()
    py = _venv(tmp_path / "kit_python", f"usd-core=={importlib.metadata.version('usd-core')}")
    target = tmp_path / "pipapi"
    # torch: the CPU build already on this machine (pip would otherwise fetch a CUDA build of several GB)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(f"torch=={importlib.metadata.version('torch').split('+')[0]}\n")
    _run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(target),
          "--find-links", str(ext / "pip_archive"), "-c", str(constraints), *pipapi_requirements()],
         env=_clean_env())
    installed = {p.name.lower() for p in target.iterdir()}
    assert "pxr" not in installed and not any(n.startswith("usd_core") for n in installed)
    code = ("from pbrfit_material_fit.tests import checks; import pbrfit, pxr; "
            "checks.check_engine_runs_here(); r = checks.check_fit_recovers_the_colour(); "
            "print(pbrfit.__file__, pxr.__file__, r.material['base_color'])")
    proc = _run([str(py), "-c", code], env=_clean_env(PYTHONPATH=os.pathsep.join(
        [str(ext), str(ext / "engine"), str(target)])), cwd=tmp_path)
    engine, pxr_file = proc.stdout.split()[:2]
    assert engine.startswith(str(ext / "engine")) and pxr_file.startswith(str(tmp_path / "kit_python"))
