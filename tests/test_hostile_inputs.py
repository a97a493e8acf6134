"""Hostile inputs through the command line (issue 10): every value gets the job file's checks,
``--out`` never clobbers what pbrfit did not write, the write-back is checked before the fit,
the lighting and the material are checked, the time budget bounds the whole run.

Checks that stop before any fit run ``pbrfit.cli.main`` in this process (fast); fits run the
CLI in a subprocess on a tiny job."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hostile import TINY_FIT, cli, consistent, quick_job, snapshot, tiny_job

from pbrfit.cli import main
from pbrfit.images import write_exr


def _main(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_job(tmp_path_factory.mktemp("tiny"))


# --- one validation for the command line and the job file -----------------------------------

OPTION_CASES = {
    # name: (command-line arguments, [fit] table text or None, needle in both messages)
    "time_budget_zero": (["--time-budget", "0"], "time_budget = 0", "> 0"),
    "time_budget_negative": (["--time-budget", "-5"], "time_budget = -5.0", "> 0"),
    "time_budget_nan": (["--time-budget", "nan"], "time_budget = nan", "finite"),
    "time_budget_inf": (["--time-budget", "inf"], "time_budget = inf", "finite"),
    "loss_negative": (["--loss", "de2000=-1"], "loss = { de2000 = -1.0 }", "de2000"),
    "loss_nan": (["--loss", "de2000=nan"], "loss = { de2000 = nan }", "finite"),
    "loss_inf": (["--loss", "l1=inf"], "loss = { l1 = inf }", "finite"),
    "loss_all_zero": (["--loss", "l1=0"], "loss = { l1 = 0.0 }", "positive weight"),
    "loss_unknown": (["--loss", "lpips=1"], "loss = { lpips = 1.0 }", "lpips"),
    "samples_negative": (["--samples", "-4"], "samples = -4", "1 to 4096"),
    "samples_zero": (["--samples", "0"], "samples = 0", "1 to 4096"),
    "seed_overflows": (["--seed", "99999999999999999999"], "seed = 9999999999999", "4294967295"),
    "seed_negative": (["--seed", "-1"], "seed = -1", "0 to 4294967295"),
    "iterations_zero": (["--iterations", "0"], "iterations = 0", "1 to 100000"),
    "path_iterations_negative": (["--path-iterations", "-1"], "path_iterations = -1", "0 to 100000"),
    "path_spp_zero": (["--path-spp", "0"], "path_spp = 0", "1 to 4096"),
    "nothing_left_to_fit": (["--fit", "roughness", "--freeze", "roughness"],
                            'parameters = ["roughness"]\nfreeze = ["roughness"]', "nothing left to fit"),
    "preset_unknown": (["--preset", "chrome"], 'preset = "chrome"', "chrome"),
    "backend_unknown": (["--backend", "cycles"], 'backend = "cycles"', "cycles"),
    "optimizer_unknown": (["--optimizer", "sgd"], 'optimizer = "sgd"', "sgd"),
    "threads_zero": (["--threads", "0"], None, "1 to 1024"),
    "fit_empty": (["--fit", ""], "parameters = []", "no parameter"),
}


@pytest.mark.parametrize("case, route", [(c, r) for c in OPTION_CASES for r in ("command line", "job file")
                                          if r == "command line" or OPTION_CASES[c][1] is not None])
def test_an_option_gets_the_same_checks_on_both_routes(tmp_path, capsys, case, route):
    args, table, needle = OPTION_CASES[case]
    job = quick_job(tmp_path, fit=table + "\n" if route == "job file" else "")
    out = tmp_path / "out"
    rc, _, err = _main(capsys, "fit", job, "--out", out, *(args if route == "command line" else []))
    line = _one_line(err)
    assert rc == 2 and needle in line, line
    if route == "command line":
        assert any(a in line for a in args if a.startswith("--")), line
    else:
        assert str(job) in line and "[fit]" in line, line
    assert not out.exists()


# --- --out ------------------------------------------------------------------------------------

def _out_case(tmp: Path, case: str):
    """(the --out argument, the folder to watch, needle); files the test must not see change."""
    (tmp / "keep").mkdir()
    (tmp / "keep" / "material.usda").write_text("#usda 1.0\n(doc = \"the user's own material\")\n")
    (tmp / "keep" / "notes.txt").write_text("mine")
    if case == "empty":
        return "", "empty"
    if case == "blank":
        return "  ", "empty"
    if case == "dot_with_foreign_outputs":
        return ".", "did not write"
    if case == "foreign_outputs":
        return tmp / "keep", "did not write"
    if case == "symlink_loop":
        os.symlink(tmp / "loop_b", tmp / "loop_a")
        os.symlink(tmp / "loop_a", tmp / "loop_b")
        return tmp / "loop_a", "symbolic link loop"
    if case == "dangling_symlink":
        os.symlink(tmp / "nowhere", tmp / "dangling")
        return tmp / "dangling", "does not exist"
    if case == "a_file":
        (tmp / "afile").write_text("x")
        return tmp / "afile", "not a folder"
    if case == "below_a_file":
        (tmp / "afile").write_text("x")
        return tmp / "afile" / "out", "is a file"
    raise AssertionError(case)


OUT_CASES = ["empty", "blank", "dot_with_foreign_outputs", "foreign_outputs", "symlink_loop", "dangling_symlink",
             "a_file", "below_a_file"]


@pytest.mark.parametrize("command", ["fit", "validate"])
@pytest.mark.parametrize("case", OUT_CASES)
def test_out_that_would_lose_data_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, case,
                                                                         command):
    job = quick_job(tmp_path / "job")
    out, needle = _out_case(tmp_path, case)
    monkeypatch.chdir(tmp_path / "keep")  # `--out ""` / `--out .` point here
    before = snapshot(tmp_path)
    extra = ["--material", _material(tmp_path)] if command == "validate" else []
    before = snapshot(tmp_path)
    rc, stdout, err = _main(capsys, command, job, "--out", out, *extra)
    line = _one_line(err)
    assert rc == 2 and needle in line and "--out" in line, line
    assert snapshot(tmp_path) == before


def _material(tmp: Path, **values) -> Path:
    from pbrfit.params import default_material

    path = tmp / "given.json"
    path.write_text(json.dumps({"format": "pbrfit.material/1", "parameters": dict(default_material(), **values)}))
    return path


def test_out_that_would_replace_an_input_is_refused(tmp_path, capsys):
    """validate --material DIR/material.json --out DIR would overwrite the fitted material."""
    job = quick_job(tmp_path / "job")
    out = tmp_path / "result"
    out.mkdir()
    material = _material(out)
    material.rename(out / "material.json")
    before = snapshot(tmp_path)
    rc, _, err = _main(capsys, "validate", job, "--material", out / "material.json", "--out", out)
    line = _one_line(err)
    assert rc == 2 and "would replace material.json" in line, line
    assert snapshot(tmp_path) == before


# --- write-back: every precondition before the fit --------------------------------------------

def _edit_layer_case(tmp: Path, case: str):
    if case == "missing_folder":
        return tmp / "nope" / "edit.usda", "does not exist"
    if case == "not_usd":
        (tmp / "edit.usda").write_text("this is not USD")
        return tmp / "edit.usda", "not a readable USD layer"
    if case == "a_folder":
        (tmp / "edit.usda").mkdir()
        return tmp / "edit.usda", "is a directory"
    if case == "wrong_suffix":
        return tmp / "edit.txt", ".usda"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_folder", "not_usd", "a_folder", "wrong_suffix"])
def test_write_back_that_cannot_be_written_fails_before_the_fit(tmp_path, capsys, monkeypatch, case):
    job = quick_job(tmp_path / "job")
    layer, needle = _edit_layer_case(tmp_path, case)
    out = tmp_path / "out"
    monkeypatch.setenv("PBRFIT_FAULTS", "trace")
    before = snapshot(tmp_path)
    rc, _, err = _main(capsys, "fit", job, "--out", out, "--write-back", "--edit-layer", layer, "--quiet")
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("pbrfit-phase:")]
    assert rc == 2 and len(lines) == 1 and needle in lines[0] and "edit layer" in lines[0], err
    assert "pbrfit-phase: stage:" not in err  # the fit never started
    assert snapshot(tmp_path) == before and not out.exists()


# --- lighting and materials through the commands -------------------------------------------

@pytest.mark.parametrize("command", ["fit", "validate"])
@pytest.mark.parametrize("env, needle", [(np.zeros((8, 16, 3), np.float32), "black"),
                                         (-np.ones((8, 16, 3), np.float32), "negative"),
                                         (np.full((8, 16, 3), 1e-30, np.float32), "black")],
                         ids=["black", "negative", "near_zero"])
def test_unusable_lighting_names_the_hdri(tmp_path, capsys, command, env, needle):
    job = quick_job(tmp_path / "job", env=env)
    extra = ["--material", _material(tmp_path)] if command == "validate" else []
    rc, stdout, err = _main(capsys, command, job, "--out", tmp_path / "out", *extra)
    line = _one_line(err)
    assert rc == 2 and needle in line and str(tmp_path / "job" / "env.exr") in line, line
    assert "ΔE2000" not in stdout and not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, needle", [({"roughness": 5.0}, "roughness = 5"),
                                            ({"base_color": [-0.5, 0.2, 0.2]}, "base_color"),
                                            ({"thin_film_thickness": 1e9}, "thin_film_thickness")],
                         ids=["roughness_5", "negative_colour", "film_1e9"])
def test_validate_refuses_an_out_of_range_material(tmp_path, capsys, values, needle):
    job = quick_job(tmp_path / "job")
    rc, stdout, err = _main(capsys, "validate", job, "--material", _material(tmp_path, **values),
                            "--out", tmp_path / "out")
    line = _one_line(err)
    assert rc == 2 and needle in line and "outside its range" in line, line
    assert not (tmp_path / "out").exists()


# --- a real (tiny) fit ------------------------------------------------------------------------

def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"material.json holds {name}: not valid JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_budget_that_ends_the_fit_before_it_changed_anything_says_so(tiny, tmp_path):
    out = tmp_path / "out"
    r = cli("fit", tiny, "--out", out, *TINY_FIT, "--time-budget", "0.01")
    assert r.returncode == 0, r.stderr
    assert "ended the fit before it changed the starting material" in r.stdout, r.stdout
    doc = _strict_json((out / "material.json").read_text())
    assert doc["stopped"] == "time budget"
    messages = [n["message"] for n in doc["notes"]]
    assert any("before it changed the starting material" in m for m in messages), messages
    assert any("more than its time budget" in m for m in messages), messages  # setup alone is longer
    assert any("before it changed" in f["message"] for f in doc["plausibility"])
    assert doc["provenance"]["notes"] == doc["notes"]
    for name in doc["fitted"]:
        np.testing.assert_allclose(doc["parameters"][name], doc["initial"][name], atol=2e-3)


@pytest.mark.timing
def test_the_time_budget_bounds_the_whole_run(tiny, tmp_path):
    """Without a budget this fit runs for minutes (10000 iterations, then path-traced final
    metrics); with --time-budget 10 the whole command, start to exit, stays near 10 s."""
    budget = 10.0
    started = time.monotonic()
    r = cli("fit", tiny, "--out", tmp_path / "out", "--preset", "plastic", "--iterations", "10000",
            "--path-iterations", "10000", "--samples", "8", "--quiet", "--time-budget", budget)
    wall = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "material.json").read_text())
    assert doc["stopped"] == "time budget"
    assert wall < budget + 6.0, (wall, r.stdout)  # interpreter start-up, and a loaded 2-core machine


def test_large_reference_note_reaches_the_outputs(tmp_path):
    """A 1280x1280 reference is fitted at 512x512 and material.json says so; the summary names
    the folder it wrote (given relative, printed absolute), the outputs agree and
    material.json is strict JSON."""
    job = tiny_job(tmp_path / "job", cameras=1, size=32)
    from pbrfit.images import read_image

    rgb, alpha = read_image(tmp_path / "job" / "refs" / "cam0.exr")
    big = np.concatenate([rgb, alpha[..., None]], -1).repeat(40, axis=0).repeat(40, axis=1)  # 1280 px
    write_exr(tmp_path / "job" / "refs" / "cam0.exr", big)
    r = cli("fit", job, "--out", "rel/out", "--preset", "plastic", "--iterations", "2", "--samples", "4",
            "--backend", "raster", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "rel" / "out"
    assert f"into {out}" in r.stdout, r.stdout
    doc = _strict_json((out / "material.json").read_text())
    consistent(out)
    assert any("1280x1280" in n["message"] and "512x512" in n["message"] for n in doc["notes"]), doc["notes"]
    assert "1280x1280" in r.stdout
