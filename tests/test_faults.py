"""Fault injection: Ctrl-C in every phase, SIGKILL while writing then a rerun, a full disk,
outputs on another file system, concurrent fits on one output folder.

The CLI marks its phases when ``PBRFIT_FAULTS=trace`` (:mod:`pbrfit.faults`): these tests
send SIGINT from outside when a phase begins (as a user's Ctrl-C would arrive), and measure
how long the process takes to end. Mounting a tmpfs needs privileges: those tests are
skipped where ``mount`` is not allowed. Every job is tiny (32-96 px, a few iterations).
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hostile import PBRFIT, TINY_FIT, cli, consistent, snapshot, tiny_job

#: Ctrl-C must end the process within this many seconds (issue 10 asks for about 1 s; the
#: margin is for a loaded 2-core CI machine: the cancel itself takes at most 0.5 s + 0.05 s)
CANCEL_WITHIN = 2.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_job(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """64 px views: path-traced final metrics and the report take a few seconds."""
    return tiny_job(tmp_path_factory.mktemp("larger"), cameras=2, size=64)


@pytest.fixture(scope="module")
def previous(tiny, tmp_path_factory):
    """An earlier result (another seed) for runs to replace."""
    out = tmp_path_factory.mktemp("previous") / "out"
    r = cli("fit", tiny, "--out", out, *TINY_FIT, "--seed", "7", "--backend", "raster")
    assert r.returncode == 0, r.stderr
    return out


class Traced:
    """The CLI in a subprocess with its phases traced on stderr."""

    def __init__(self, *args, env=None):
        full_env = dict(os.environ, **{"PBRFIT_FAULTS": "trace", **(env or {})})
        self.proc = subprocess.Popen([*PBRFIT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=full_env)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, phase: str, timeout: float = 240) -> bool:
        """Block until the phase begins; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                return False
            if line.strip() == f"pbrfit-phase: {phase}":
                return True
        raise TimeoutError(phase)

    def finish(self, timeout=600) -> tuple[int, str, str]:
        rc = self.proc.wait(timeout=timeout)
        out = self.proc.stdout.read()
        self._reader.join(timeout=30)
        return rc, out, "".join(self.stderr)


def _user_lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("pbrfit-phase:")]


def _no_staging_left(*folders: Path) -> None:
    for folder in folders:
        if folder.exists():
            left = [p.name for p in folder.iterdir() if ".staging." in p.name]
            assert not left, left


# --- Ctrl-C in every phase ------------------------------------------------------------------

# (phase, delay after it begins, which job, extra options)
SIGINT_PHASES = {
    "setup": ("setup", 0.3, "tiny", []),
    "colour stage": ("stage:colour", 0.2, "tiny", ["--iterations", "400"]),
    "gloss stage": ("stage:gloss", 0.2, "tiny", ["--iterations", "400"]),
    "layers stage": ("stage:layers", 0.2, "tiny", ["--preset", "coated_paint", "--iterations", "400"]),
    "path stage": ("stage:path", 0.2, "tiny", ["--path-iterations", "400"]),
    "final metrics": ("final-metrics", 0.2, "larger", ["--path-iterations", "1"]),
    "writing": ("writing", 0.0, "larger", ["--path-iterations", "1"]),
}


@pytest.mark.timing
@pytest.mark.parametrize("case", list(SIGINT_PHASES))
def test_ctrl_c_in_every_phase_cancels_promptly_and_writes_nothing(request, previous, tmp_path, case):
    phase, delay, which, extra = SIGINT_PHASES[case]
    job = request.getfixturevalue(which)
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = snapshot(out)
    run = Traced("fit", job, "--out", out, "--preset", "plastic", "--iterations", "4", "--samples", "4",
                 "--path-spp", "2", "--path-iterations", "2", *extra, "--quiet")
    assert run.wait_for(phase), "".join(run.stderr)
    time.sleep(delay)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    rc, stdout, err = run.finish()
    took = time.monotonic() - sent
    print(f"Ctrl-C in {phase}: exit {rc} after {took:.2f} s")
    assert rc == 130, err
    assert _user_lines(err) == ["pbrfit: cancelled; nothing was written"], err
    assert took < CANCEL_WITHIN, f"Ctrl-C in {phase} took {took:.2f} s"
    assert snapshot(out) == before and "ΔE2000" not in stdout
    _no_staging_left(out, tmp_path)


@pytest.mark.timing
def test_ctrl_c_inside_a_long_native_call_still_ends_the_run(tiny, previous, tmp_path):
    """The work does not look at the cancel for 60 s (as inside a long native call): the
    main thread ends the process after the grace period, removing the staging folder."""
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = snapshot(out)
    run = Traced("fit", tiny, "--out", out, *TINY_FIT, "--backend", "raster",
                 env={"PBRFIT_FAULTS": "trace,sleep@writing=60"})
    assert run.wait_for("writing")
    time.sleep(0.2)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    rc, _, err = run.finish()
    assert rc == 130 and time.monotonic() - sent < CANCEL_WITHIN, err
    assert _user_lines(err) == ["pbrfit: cancelled; nothing was written"], err
    assert snapshot(out) == before
    _no_staging_left(out, tmp_path)


@pytest.mark.timing
def test_ctrl_c_while_validate_renders_its_metrics(larger, previous, tmp_path):
    out = tmp_path / "out"
    run = Traced("validate", larger, "--material", previous / "material.json", "--out", out)
    assert run.wait_for("final-metrics")
    time.sleep(0.3)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    rc, _, err = run.finish()
    assert rc == 130 and time.monotonic() - sent < CANCEL_WITHIN, err
    assert not out.exists()
    _no_staging_left(tmp_path)


# --- SIGKILL while writing, then a rerun ----------------------------------------------------

@pytest.mark.parametrize("point", ["publish-file"])
def test_killed_while_writing_then_a_rerun_leaves_a_consistent_folder(tiny, previous, tmp_path, point):
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    r = cli("fit", tiny, "--out", out, *TINY_FIT, "--backend", "raster", env={"PBRFIT_FAULTS": f"kill@{point}"})
    assert r.returncode == -signal.SIGKILL
    if point == "writing":  # nothing had been published yet (a killed run's staging folder may stay)
        assert {k: v for k, v in snapshot(out).items() if ".staging." not in k} == snapshot(previous)
    for f in ("material.json", "material.mtlx", "material.usda", "report.html"):
        (out / f).read_bytes()  # every file is whole (old or new), never missing
    r = cli("fit", tiny, "--out", out, *TINY_FIT, "--backend", "raster")
    assert r.returncode == 0, r.stderr
    consistent(out)
    _no_staging_left(out, tmp_path)


# --- file systems ---------------------------------------------------------------------------

def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "pbrfit-test", str(where)],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a tmpfs mount point below tmp_path; skipped where mounting is not allowed."""
    mounted = []

    def mount(size: str = "64m", name: str = "mnt") -> Path:
        where = tmp_path / name
        if not _mount_tmpfs(where, size):
            pytest.skip("cannot mount a tmpfs here (needs CAP_SYS_ADMIN)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        _umount(where)


@pytest.mark.parametrize("what", ["--out", "--edit-layer"])
def test_read_only_file_system_is_refused_before_the_fit(tmp_path, tmpfs, capsys, what):
    from hostile import quick_job

    from pbrfit.cli import main

    job = quick_job(tmp_path / "job")
    disk = tmpfs("1m", name="ro")
    r = subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot remount the tmpfs read-only here")
    args = ["--out", disk / "out"] if what == "--out" else ["--out", tmp_path / "out", "--write-back",
                                                            "--edit-layer", disk / "edit.usda"]
    before = snapshot(tmp_path / "job")
    rc = main(["fit", str(job), *map(str, args), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "read-only" in err and str(disk) in err, err
    assert snapshot(tmp_path / "job") == before and not (tmp_path / "out").exists()


def test_full_disk_is_refused_before_the_fit(tiny, tmp_path, tmpfs):
    disk = tmpfs("48k")
    out = disk / "out"
    started = time.monotonic()
    r = cli("fit", tiny, "--out", out, *TINY_FIT)
    assert r.returncode == 2, r.stderr
    line = _user_lines(r.stderr)
    assert len(line) == 1 and "MB free" in line[0] and str(out) in line[0], r.stderr
    assert time.monotonic() - started < 30 and list(disk.iterdir()) == []


def test_disk_filling_up_during_the_fit_is_one_line_and_nothing_written(tiny, tmp_path, tmpfs):
    disk = tmpfs("8m")
    out = disk / "out"
    run = Traced("fit", tiny, "--out", out, *TINY_FIT, "--backend", "raster", "--iterations", "30")
    assert run.wait_for("stage:colour")
    with open(disk / "filler", "wb") as f:  # leave a few kB
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    rc, stdout, err = run.finish()
    lines = _user_lines(err)
    assert rc == 1 and len(lines) == 1 and "nothing was written" in lines[0], err
    assert "No space left" in lines[0] or "disk is full" in lines[0], lines[0]
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


@pytest.mark.parametrize("layout", ["mount_point", "symlink_to_mount"])
def test_outputs_on_another_file_system(tiny, previous, tmp_path, tmpfs, layout):
    """--out on another file system than its parent (a mounted volume, a Docker bind mount)."""
    disk = tmpfs("64m")
    if layout == "mount_point":
        out = disk
        for f in previous.iterdir():  # an earlier result there: the files are replaced one by one
            shutil.copy(f, disk / f.name)
    else:
        (disk / "target").mkdir()
        out = tmp_path / "link"
        out.symlink_to(disk / "target")
    r = cli("fit", tiny, "--out", out, *TINY_FIT, "--backend", "raster")
    assert r.returncode == 0, r.stderr
    consistent(out)
    _no_staging_left(out, disk, tmp_path)


# --- concurrent fits on one output folder ---------------------------------------------------

@pytest.mark.parametrize("exists", [True], ids=["existing_folder"])
def test_concurrent_fits_on_one_folder_leave_one_complete_result(tiny, previous, tmp_path, exists):
    """Two fits (other seeds, other results) publish into one folder at the same time: one
    moves its files slowly, the other starts a moment later and quickly. Without the lock
    on the folder their files would interleave (a material.json of one run beside the
    material.mtlx of the other); with it, the folder holds one run's four files."""
    out = tmp_path / "out"
    if exists:
        shutil.copytree(previous, out)
    faults = ["sleep@publish-file=1.5", "sleep@publish=1.0,sleep@publish-file=0.05"]
    procs = [subprocess.Popen([*PBRFIT, "fit", str(tiny), "--out", str(out), *TINY_FIT, "--backend", "raster",
                               "--seed", str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PBRFIT_FAULTS=fault))
             for seed, fault in ((1, faults[0]), (2, faults[1]))]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0, 0], [err for _, err, _ in results]
    doc = consistent(out)
    assert doc["provenance"]["seed"] in (1, 2)
    _no_staging_left(out, tmp_path)
