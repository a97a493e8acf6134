"""Atomic file output: a reader sees the old file or the new one, never half of one.

Every file pbrfit writes goes through :func:`atomic_write` (a temporary file in the same
directory, flushed and fsynced, then ``os.replace``). A fit's output directory is produced
with :class:`OutputDir`: files are staged in a hidden sibling directory and moved into
place only when the whole job succeeded, so an error or a cancel leaves ``DIR`` untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_path", "OutputDir"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` (text modes in UTF-8); on success it replaces
    ``path`` (see :func:`atomic_path`).

    Raises:
        InputError: the directory does not exist or is not writable.
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str = "output") -> Iterator[Path]:
    """Yield a temp path next to ``path`` (same suffix); on success move it onto ``path``.

    The caller writes the whole file to the yielded path inside the ``with`` block.

    Raises:
        InputError: the directory does not exist or cannot be written, or ``path`` is a
            directory.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file name for the {what}")
    if not parent.is_dir():
        raise InputError(f"{path}: directory {parent} does not exist; create it or choose another {what} path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=parent)
    except OSError as e:
        raise InputError(f"{path}: cannot write in {parent} ({e.strerror}); choose another {what} path") from None
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; outputs are ordinary files
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.replace(tmp_path, path)
        except OSError as e:
            raise InputError(f"{path}: cannot replace the {what} ({e.strerror}); check permissions") from None
    finally:
        try:
            tmp_path.unlink()
        except FileNotFoundError:
            pass


class OutputDir:
    """Stage a job's outputs and publish them together.

    Usage::

        with OutputDir("out") as staging:
            write(staging / "material.json")
        # now out/material.json exists; had anything raised, out/ would be as it was.

    Files already in ``DIR`` that the job does not produce are left alone; files it does
    produce are replaced one by one with ``os.replace`` (each atomic).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._staging: Path | None = None

    def __enter__(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output {self.path} exists and is not a directory; choose another --out")
        # stage in the nearest existing ancestor (same file system, so moves are renames);
        # missing parents of DIR are only created when the job succeeds
        anchor = self.path.resolve().parent
        while not anchor.is_dir():
            if anchor.exists() or anchor.parent == anchor:
                raise InputError(f"cannot write to {self.path}: {anchor} is not a directory; choose another --out")
            anchor = anchor.parent
        try:
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.staging.", dir=anchor))
        except OSError as e:
            raise InputError(f"cannot write to {self.path}: {e.strerror} in {anchor}; choose another --out") from None
        return self._staging

    def __exit__(self, exc_type, exc, tb) -> bool:
        staging, self._staging = self._staging, None
        try:
            if exc_type is None:
                self.path.mkdir(parents=True, exist_ok=True)
                for item in sorted(staging.rglob("*")):
                    if item.is_file():
                        target = self.path / item.relative_to(staging)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(item, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return False
