"""Progress as people and pipelines see it: a bar on a terminal, log lines elsewhere, JSON lines
for scripts (``--progress json``: stdout is one JSON stream, ending in a done, error or
cancelled event)."""

from __future__ import annotations

import io
import json
import math

import pytest
from hostile import cli, tiny_job

from pbrfit.fit import Progress
from pbrfit.progress import JsonLines, LogLines, Silent, TerminalBar, describe, make_reporter


def _p(iteration, phase="fit", stage="colour", loss=0.5, de=3.0, val=None, elapsed=1.0, remaining=None, total=10):
    return Progress(iteration, total, stage, loss, de, val, elapsed, phase=phase, remaining=remaining)


def test_describe_says_where_the_run_is_and_skips_what_is_not_known():
    assert describe(_p(0, "setup", "setup", math.nan, math.nan)) == "setup 0/10, 1 s"
    assert describe(_p(4, val=2.5, remaining=12.4)) == \
        "colour 4/10, loss 0.5, ΔE2000 train 3.00, validate 2.50, 1 s, ~12 s left"


def test_reporters_for_each_mode():
    tty, pipe = io.StringIO(), io.StringIO()
    tty.isatty = lambda: True
    assert isinstance(make_reporter("auto", tty), TerminalBar)
    assert isinstance(make_reporter("auto", pipe), LogLines)  # a log or a CI stream: no carriage returns
    assert isinstance(make_reporter("json"), JsonLines) and make_reporter("json").machine
    assert isinstance(make_reporter("none"), Silent) and not make_reporter("lines").machine


def test_log_lines_every_few_seconds_and_at_each_phase():
    out = io.StringIO()
    r = LogLines(out, every=3600.0)
    for i, (phase, stage) in enumerate([("setup", "setup"), ("fit", "colour"), ("fit", "colour"),
                                        ("fit", "gloss"), ("final metrics", "final metrics")]):
        r.progress(_p(i, phase, stage))
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["pbrfit: setup 0/10", "pbrfit: colour 1/10", "pbrfit: gloss 3/10",
                                                  "pbrfit: final metrics 4/10"]
    assert "\r" not in out.getvalue()


def test_json_lines_are_strict_json_with_nulls_for_unknowns():
    out = io.StringIO()
    r = JsonLines(out)
    r.progress(_p(0, "setup", "setup", math.nan, math.inf))
    r.progress(_p(12, val=2.0, remaining=3.21))
    r.done({"out": "/x", "metrics": {}})
    r.failed("error", "bad", 2)
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert events[0]["loss"] is None and events[0]["de2000_train"] is None and events[0]["phase"] == "setup"
    assert events[1] == {"event": "progress", "phase": "fit", "stage": "colour", "iteration": 10, "total": 10,
                         "loss": 0.5, "de2000_train": 3.0, "de2000_validate": 2.0, "elapsed_s": 1.0,
                         "remaining_s": 3.2}  # an iteration past the total is shown at the total
    assert events[2]["event"] == "done" and events[3] == {"event": "error", "message": "bad", "exit_code": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_job(tmp_path_factory.mktemp("progress"))


FIT = ["--preset", "plastic", "--iterations", "4", "--samples", "4", "--backend", "raster"]


def test_cli_json_progress_is_one_json_stream_on_stdout(tiny, tmp_path):
    r = cli("fit", tiny, "--out", tmp_path / "out", *FIT, "--progress", "json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(ln) for ln in r.stdout.splitlines()]  # every line is JSON: no summary mixed in
    progress = [e for e in events if e["event"] == "progress"]
    assert events[-1]["event"] == "done" and len(progress) == len(events) - 1
    assert {e["total"] for e in progress} == {progress[-1]["total"]}
    assert [e["iteration"] for e in progress] == sorted(e["iteration"] for e in progress)
    assert progress[-1]["iteration"] == progress[-1]["total"] and progress[-1]["phase"] == "final metrics"
    done = events[-1]
    assert done["out"] == str((tmp_path / "out").absolute()) and done["metrics"]["train"]["de2000_mean"] > 0
    assert "plausibility" in done and r.stderr.strip() == ""


def test_cli_json_progress_reports_an_input_error_as_an_event(tiny, tmp_path):
    r = cli("fit", tiny, "--out", "", *FIT, "--progress", "json")
    assert r.returncode == 2
    (event,) = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert event["event"] == "error" and event["exit_code"] == 2 and "--out" in event["message"]
    assert len(r.stderr.strip().splitlines()) == 1  # and the one line for people, on stderr


def test_cli_progress_in_a_pipe_is_log_lines(tiny, tmp_path):
    r = cli("fit", tiny, "--out", tmp_path / "out", *FIT)  # stderr is a pipe here, not a terminal
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("pbrfit: ") for ln in lines) and "\r" not in r.stderr
    assert lines[0].startswith("pbrfit: setup") and lines[-1].startswith("pbrfit: final metrics")
    assert "ΔE2000 mean" in r.stdout  # the human summary stays on stdout
