"""The machine a benchmark ran on, in one line (for BENCHMARKS.md and the results' JSON)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["describe"]


def describe() -> str:
    """``"2 cores (AMD EPYC ...), 23 GiB, no GPU; Linux 6.1, Python 3.11.7"``."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:
        gpu = "GPU unknown"
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = "memory unknown"
    return (f"{os.cpu_count()} cores ({cpu}), {mem}, {gpu}; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")
