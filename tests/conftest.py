"""Shared test setup: fixture builders live in tests/fixtures and are importable by name.

Markers (``make test`` runs them all; select with ``-m``):

* ``cycles``: renders with real Cycles or runs the bpy module (a test module that does so
  marks itself; a test using the ``blender_dir`` fixture is marked here). ``-m "not cycles"``
  leaves the fast unit tests.
* ``install``: installs pbrfit as users do, in fresh virtualenvs (tests/test_install.py).
* ``slow``: real command-line fits of several seconds each.
* ``timing``: asserts a wall time (a cancel, a time budget); ``make test`` runs these after the
  others, alone, the others on pytest-xdist workers.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))


@pytest.fixture(scope="session")
def blender_dir(tmp_path_factory) -> Path:
    """Stages exported by Blender's own USD exporter from scenes with known truth
    (tests/fixtures/make_blender_stage.py, run once: real bpy)."""
    import stage_builders

    return stage_builders.blender_stages(tmp_path_factory)


def pytest_collection_modifyitems(items):
    for item in items:
        if "blender_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cycles)


def pytest_configure(config):
    # ``make test`` runs the files on pytest-xdist workers (one per core): each worker's torch
    # then takes its share of the cores, not all of them (threads beyond the cores spin)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        from pbrfit.parallel import default_threads

        torch.set_num_threads(max(1, default_threads() // workers))
    config.addinivalue_line("markers", "cycles: renders with real Cycles or runs the bpy module")
    config.addinivalue_line("markers", "install: installs pbrfit as users do (fresh virtualenvs; slow)")
    config.addinivalue_line("markers", "slow: runs real subprocess fits for several seconds (kept in the default "
                                       "run; deselect with -m 'not slow' when iterating)")
    config.addinivalue_line("markers", "timing: asserts how long something takes (a cancel, a time budget): make test "
                                       "runs these alone, after the others, so that no other test shares the cores")
