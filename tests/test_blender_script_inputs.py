"""The headless Blender script on hostile inputs: one line on stderr, a non-zero exit status,
nothing written (issue 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hostile import snapshot

pytestmark = pytest.mark.cycles  # renders with real Cycles / runs the bpy module

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "blender_fit.py"


@pytest.fixture(scope="module")
def default_blend(tmp_path_factory) -> Path:
    """Blender's default scene (Camera, Cube with a material, Light), saved."""
    path = tmp_path_factory.mktemp("blend") / "default.blend"
    code = f"import bpy; bpy.ops.wm.save_as_mainfile(filepath={str(path)!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and path.is_file(), r.stderr
    return path


def _case(tmp: Path, blend: Path, case: str):
    """(arguments, needle)."""
    if case == "corrupt":
        (tmp / "c.blend").write_bytes(os.urandom(3000))
        return [tmp / "c.blend", "--object", "Cube"], "not a .blend file"
    if case == "truncated":
        (tmp / "t.blend").write_bytes(blend.read_bytes()[:20000])
        return [tmp / "t.blend", "--object", "Cube"], "cannot open it"
    if case == "missing":
        return [tmp / "gone.blend", "--object", "Cube"], "no such .blend file"
    if case == "a_folder":
        return [tmp, "--object", "Cube"], "is not a file"
    if case == "missing_object":
        return [blend, "--object", "Part"], "no object 'Part'"
    if case == "empty_out":
        return [blend, "--object", "Cube", "--out", ""], "--out is empty"
    if case == "out_is_a_file":
        (tmp / "afile").write_text("x")
        return [blend, "--object", "Cube", "--out", tmp / "afile"], "not a folder"
    if case == "save_is_a_folder":
        return [blend, "--object", "Cube", "--save", tmp], "is a folder"
    if case == "bad_preset":
        return [blend, "--object", "Cube", "--preset", "chrome"], "chrome"
    if case == "bad_iterations":
        return [blend, "--object", "Cube", "--iterations", "-5"], "--iterations"
    if case == "no_reference_photos":  # the add-on's own error, after Blender opened the file
        return [blend, "--object", "Cube", "--out", tmp / "out", "--save", tmp / "saved.blend"], "error:"
    raise AssertionError(case)


CASES = ["corrupt", "truncated", "missing", "a_folder", "missing_object", "empty_out", "out_is_a_file",
         "save_is_a_folder", "bad_preset", "bad_iterations", "no_reference_photos"]


@pytest.mark.parametrize("case", CASES)
def test_blender_script_bad_input_is_one_line_and_writes_nothing(tmp_path, default_blend, case):
    args, needle = _case(tmp_path, default_blend, case)
    before, blend_before = snapshot(tmp_path), default_blend.read_bytes()
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                           [str(ROOT / "core"), os.environ.get("PYTHONPATH", "")])))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert snapshot(tmp_path) == before and default_blend.read_bytes() == blend_before
