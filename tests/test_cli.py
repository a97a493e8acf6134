"""The command line end to end: outputs, exit codes, one-line errors, cancel, atomicity."""

import json
import os
import signal
import subprocess
import sys
import time

import MaterialX as mx
import pytest
from pxr import Usd, UsdShade
from synthetic import render_references, write_job

PBRFIT = [sys.executable, "-m", "pbrfit.cli"]


def run(*args, **kw):
    return subprocess.run([*PBRFIT, *map(str, args)], capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("cli"), size=40, cameras=2, validate_env="sky_val.exr")
    render_references(job, {"base_color": [0.2, 0.4, 0.6], "roughness": 0.4}, seed=5)
    return job


@pytest.fixture(scope="module")
def fitted(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "result"
    r = run("fit", job, "--out", out, "--preset", "plastic", "--iterations", "6", "--samples", "8",
            "--path-iterations", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    return out, r


def test_fit_writes_the_four_outputs(fitted):
    out, r = fitted
    assert sorted(p.name for p in out.iterdir()) == ["material.json", "material.mtlx", "material.usda", "report.html"]
    doc = json.loads((out / "material.json").read_text())
    assert set(doc["parameters"]) >= {"base_color", "roughness", "thin_film_thickness", "coat_tint"}
    assert set(doc["metrics"]) == {"train", "validate"}
    for split in doc["metrics"].values():
        for m in split["views"].values():
            assert set(m) >= {"de2000_mean", "de2000_p95", "ssim", "l1"}
    prov = doc["provenance"]
    assert prov["seed"] == 0 and len(prov["inputs"]) >= 4 and all(len(h) == 64 for h in prov["inputs"].values())
    assert prov["versions"]["torch"] and prov["schedule"] and prov["wall_time_s"] > 0
    timings = prov["timings_s"]
    assert {"setup", "final metrics"} <= set(timings) and sum(timings.values()) <= prov["wall_time_s"] + 0.01
    assert "ΔE2000" in r.stdout and "validate" in r.stdout
    # MaterialX validates, the USD material re-reads
    doc_mx = mx.createDocument()
    mx.readFromXmlFile(doc_mx, str(out / "material.mtlx"))
    libs = mx.createDocument()
    mx.loadLibraries(mx.getDefaultDataLibraryFolders(), mx.getDefaultDataSearchPath(), libs)
    doc_mx.setDataLibrary(libs)
    ok, msg = doc_mx.validate()
    assert ok, msg
    stage = Usd.Stage.Open(str(out / "material.usda"))
    mats = [p for p in stage.Traverse() if p.IsA(UsdShade.Material)]
    assert len(mats) == 1
    html = (out / "report.html").read_text()
    assert "Cam0" in html and "Cam1" in html


def test_validate_command(job, fitted):
    out, _ = fitted
    r = run("validate", job, "--material", out / "material.json")
    assert r.returncode == 0, r.stderr
    means = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(means) == {"train", "validate"} and means["train"]["de2000_mean"] >= 0


@pytest.mark.parametrize("mutate, needle", [
    (lambda t: t.replace('scene = "scene.usda"', 'scene = "missing.usda"'), "missing.usda"),
    (lambda t: t.replace('target = "/World/Part"', 'target = "/World/Nope"'), "/World/Nope"),
    (lambda t: t.replace('camera = "/World/Cam1"', 'camera = "/World/Part"'), "/World/Part"),
    (lambda t: t.replace("refs/cam1.exr", "refs/none.exr"), "none.exr"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(job, tmp_path, mutate, needle):
    bad = job.parent / f"bad_{abs(hash(needle))}.toml"
    bad.write_text(mutate(job.read_text()))
    out = tmp_path / "out"
    r = run("fit", bad, "--out", out, "--quiet")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_unknown_parameter_option_is_exit_2(job, tmp_path):
    r = run("fit", job, "--out", tmp_path / "o", "--fit", "roughnes")
    assert r.returncode == 2 and "roughnes" in r.stderr and not (tmp_path / "o").exists()


def test_ctrl_c_cancels_and_leaves_existing_output_untouched(job, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    previous = '{"format": "pbrfit.material/1", "note": "previous result"}'
    (out / "material.json").write_text(previous)
    p = subprocess.Popen([*PBRFIT, "fit", str(job), "--out", str(out), "--iterations", "500", "--samples", "8"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait until the progress (log lines: stderr is a pipe) shows the fit iterating, then interrupt
    deadline = time.monotonic() + 300
    seen = ""
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        seen += line
        if line.startswith("pbrfit: colour") or not line:
            break
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "cancelled" in (seen + err)
    assert (out / "material.json").read_text() == previous
    assert sorted(os.listdir(out)) == ["material.json"]
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".out.staging")]


def test_out_directory_parents_are_created_only_on_success(fitted, job, tmp_path):
    from pbrfit.atomic import OutputDir

    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with OutputDir(target) as staging:
            (staging / "x.txt").write_text("x")
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    with OutputDir(target) as staging:
        (staging / "x.txt").write_text("x")
    assert (target / "x.txt").read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["a"]


def test_cuda_without_a_device_is_a_clear_error(job, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = run("fit", job, "--out", tmp_path / "o", "--device", "cuda", "--quiet")
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_backends_from_the_command_line(job, fitted, tmp_path):
    """The default fit (auto) ran a path stage after the raster stages; --backend path runs
    only the refinement, --backend raster none, and the choice is in the provenance."""
    out, _ = fitted
    stages = [s["stage"] for s in json.loads((out / "material.json").read_text())["provenance"]["schedule"]]
    assert stages[-1] == "path" and "colour" in stages
    r = run("fit", job, "--out", tmp_path / "p", "--preset", "plastic", "--backend", "path",
            "--path-iterations", "5", "--path-spp", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    sched = json.loads((tmp_path / "p" / "material.json").read_text())["provenance"]["schedule"]
    assert [s["stage"] for s in sched] == ["path"] and sched[0]["iterations"] == 5
    r = run("fit", job, "--out", tmp_path / "r", "--preset", "plastic", "--backend", "raster", "--iterations", "4",
            "--samples", "8", "--quiet")
    assert r.returncode == 0, r.stderr
    sched = json.loads((tmp_path / "r" / "material.json").read_text())["provenance"]["schedule"]
    assert "path" not in [s["stage"] for s in sched]


def test_auto_puts_texture_fits_on_cuda_and_scalar_fits_on_the_cpu(monkeypatch):
    """--device auto: CUDA (when present) for fits with texture maps, the CPU for scalar fits,
    which ran slower on a GPU than on 2 CPU cores (BENCHMARKS.md "GPU"); asked for, cuda is cuda."""
    import torch

    from pbrfit.errors import InputError
    from pbrfit.options import resolve
    from pbrfit.textures import TextureSettings

    maps = TextureSettings(maps=("base_color",), resolution=64)
    for present in (True, False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda present=present: present)
        assert resolve(None, {}).device == "cpu"
        assert resolve(None, {"device": "auto"}, textures=maps).device == ("cuda" if present else "cpu")
        assert resolve(None, {"device": "cpu"}, textures=maps).device == "cpu"
        if present:
            assert resolve(None, {"device": "cuda"}).device == "cuda"
        else:
            with pytest.raises(InputError, match="no CUDA device"):
                resolve(None, {"device": "cuda"})
