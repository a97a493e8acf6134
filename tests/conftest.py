"""Shared test setup: fixture builders live in tests/fixtures and are importable by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))


def pytest_configure(config):
    config.addinivalue_line("markers", "install: installs pbrfit as users do (fresh virtualenvs; slow)")
    config.addinivalue_line("markers", "slow: runs real subprocess fits for several seconds (kept in the default "
                                       "run; deselect with -m 'not slow' when iterating)")
