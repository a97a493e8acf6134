"""Shared test setup: fixture builders live in tests/fixtures and are importable by name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
