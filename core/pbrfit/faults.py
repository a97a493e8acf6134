"""Named points in a run, for tracing and for fault-injection tests.

The command line calls :func:`point` as a run enters each phase (``setup``, ``stage:<name>``
for every fit stage, ``final-metrics``, ``writing``, ``publish``) and after each file it
moves into the output folder (``publish-file``). Normally that does nothing. The
environment variable ``PBRFIT_FAULTS`` (a comma-separated list; a test hook, not a user
setting) changes that:

* ``trace``: print ``pbrfit-phase: <name>`` on stderr at each point (a test sends Ctrl-C
  when the phase it wants begins);
* ``kill@<name>``: the process kills itself with SIGKILL at that point (e.g.
  ``kill@publish-file``: after the first file was moved into place);
* ``sigint@<name>``: the process sends itself SIGINT at that point;
* ``sleep@<name>=<seconds>``: the process sleeps there (widens a race for a test).
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["point", "ENV"]

ENV = "PBRFIT_FAULTS"


def point(name: str) -> None:
    """Mark that the run reached ``name`` (see the module docstring)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    entries = [e.strip() for e in spec.split(",") if e.strip()]
    if "trace" in entries:
        print(f"pbrfit-phase: {name}", file=sys.stderr, flush=True)
    if f"kill@{name}" in entries:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if f"sigint@{name}" in entries:
        os.kill(os.getpid(), signal.SIGINT)
    for entry in entries:
        if entry.startswith(f"sleep@{name}="):
            time.sleep(float(entry.split("=", 1)[1]))
