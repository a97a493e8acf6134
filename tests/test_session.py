"""The engine's background fit session, as both hosts drive it: poll, cancel, and every way a
fit ends coming back as a state and one line (no exception escapes the thread)."""

from __future__ import annotations

import time

import pytest
from synthetic import render_references, write_job

from pbrfit.errors import FitCancelled, InputError
from pbrfit.fit import FitOptions
from pbrfit.job import load_job
from pbrfit.session import FitSession


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    job = write_job(tmp_path_factory.mktemp("session"), size=24, cameras=2)
    render_references(job, {"base_color": [0.6, 0.3, 0.2], "roughness": 0.4}, seed=3)
    return load_job(job).scene


def _options(**kw):
    return FitOptions(**{"parameters": ["base_color"], "iterations": 6, "backend": "raster", **kw})


def _drive(session, cancel_after_first=False, timeout=300):
    seen, t0 = [], time.monotonic()
    while not session.finished:
        assert time.monotonic() - t0 < timeout
        reports = session.poll()
        seen += reports
        if reports and cancel_after_first:
            session.cancel()
        time.sleep(0.01)
    return seen + session.poll()


def test_a_fit_reports_progress_and_ends_done(scene):
    session = FitSession(scene, _options()).start()
    assert session.running
    seen = _drive(session)
    assert session.state == "done" and session.message == "" and session.error is None
    assert seen and seen[-1] is session.latest and seen[-1].iteration <= seen[-1].total
    assert session.outcome().material["base_color"] != [0.8, 0.8, 0.8]
    with pytest.raises(RuntimeError, match="already done"):
        session.start()


def test_cancel_ends_cancelled_with_nothing_kept(scene):
    session = FitSession(scene, _options(iterations=200)).start()
    _drive(session, cancel_after_first=True)
    assert session.state == "cancelled" and session.result is None
    assert session.message == "fit cancelled; nothing was written"
    with pytest.raises(FitCancelled):
        session.outcome()


def test_input_errors_and_bugs_end_failed_with_one_line(scene):
    bad = FitSession(scene, _options(parameters=["base_color"], loss={"nonsense": 1.0})).start()
    _drive(bad)
    assert bad.state == "failed" and isinstance(bad.error, InputError) and "nonsense" in bad.message
    assert "\n" not in bad.message and bad.details == ""
    crash = FitSession(None, _options()).start()  # no scene: a bug, not an input error
    _drive(crash)
    assert crash.state == "failed" and crash.message.startswith("fit failed: ") and "\n" not in crash.message
    assert "Traceback" in crash.details
