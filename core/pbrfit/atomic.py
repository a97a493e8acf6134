"""Atomic file output: a reader sees the old file or the new one, never half of one.

Every file pbrfit writes goes through :func:`atomic_write` (a temporary file in the same
directory, flushed and fsynced, then ``os.replace``). A fit's output directory is produced
with :class:`OutputDir`: files are staged in a hidden folder on the destination's own file
system (inside ``DIR`` when it exists, else beside it) and moved into place only when the
whole job succeeded, so an error or a cancel leaves ``DIR`` untouched, and a ``DIR`` on
another file system than its parent (a mounted volume) works.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
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


def _one_line_os_error(e: OSError) -> str:
    return e.strerror or str(e)


def _stat_target(path: Path, option: str) -> bool:
    """Whether ``path`` exists (as a directory); InputError for every other state."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise InputError(f"{option} {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                             "fix the link or choose another folder") from None
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{option} {path}: symbolic link loop (too many levels of symbolic links); "
                             "fix the link or choose another folder") from None
        if e.errno == errno.ENOTDIR:
            raise InputError(f"{option} {path}: a part of the path is a file, not a folder; "
                             "choose another folder") from None
        raise InputError(f"{option} {path}: {_one_line_os_error(e)}; choose another folder") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{option} {path} exists and is not a folder; choose another {option}")
    return True


#: names of staging folders: ``.<dir name>.staging.<pid>.<random>``
_STAGING = re.compile(r"^\.(?P<name>.*)\.staging\.(?P<pid>\d+)\.[^.]+$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # (on Windows os.kill(pid, 0) would end that process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or no permission to ask
        return True
    return True


def _remove_stale_staging(folder: Path) -> None:
    """Staging folders of runs that were killed (their process is gone) are removed."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _STAGING.match(entry.name)
            if m and entry.is_dir(follow_symlinks=False) and not _pid_alive(int(m["pid"])):
                shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (flock; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock on folders
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class OutputDir:
    """Stage a job's outputs and publish them together.

    Usage::

        with OutputDir("out") as staging:
            write(staging / "material.json")
        # now out/material.json exists; had anything raised, out/ would be as it was.

    or, to check the folder before long work and publish later::

        out = OutputDir("out", option="--out")
        staging = out.open()          # InputError now if "out" cannot be written
        ...                           # write into staging
        out.publish(last=("material.json",))   # or out.discard()

    The staging folder lives on the destination's file system, so publishing is a rename:
    inside ``DIR`` when it exists (``DIR/.<name>.staging.<pid>.<random>``), else in its
    nearest existing ancestor. A new ``DIR`` appears whole (one rename of the staging
    folder). Into an existing ``DIR`` the files are moved one by one with ``os.replace``
    (each atomic) under an exclusive lock on ``DIR``, the names in ``last`` last: two runs
    publishing into one folder do not interleave (the last to publish wins, with all its
    files). Files already in ``DIR`` that the job does not produce are left alone. Staging
    folders of killed runs are removed when a later run publishes there.

    Args:
        path: the output folder.
        option: how the user named it (for messages), e.g. ``"--out"``.
        min_free: bytes that must be free on its file system when it is opened.
    """

    def __init__(self, path: str | os.PathLike, *, option: str = "output folder", min_free: int = 0):
        self.option = option
        if not str(path).strip():
            raise InputError(f"{option} is empty (an unset shell variable?); give the output folder")
        self.path = Path(os.path.abspath(Path(path).expanduser()))
        self.min_free = int(min_free)
        self._staging: Path | None = None

    def check(self) -> Path:
        """Check that the folder can be written (without writing); returns the folder the
        staging will live in.

        Raises:
            InputError: naming the folder and the reason (a file in the way, a symlink
                loop, no permission, a read-only or full file system).
        """
        if _stat_target(self.path, self.option):
            anchor = Path(os.path.realpath(self.path))
        else:
            anchor = self.path.parent
            while not _stat_target(anchor, self.option):
                if anchor.parent == anchor:
                    raise InputError(f"cannot write to {self.path}: no existing folder above it")
                anchor = anchor.parent
            anchor = Path(os.path.realpath(anchor))
        if not os.access(anchor, os.W_OK | os.X_OK):
            raise InputError(f"cannot write to {self.path}: {anchor} is read-only or not writable by you; "
                             f"choose another {self.option}")
        if self.min_free:
            with contextlib.suppress(OSError, AttributeError):
                fs = os.statvfs(anchor)
                free = fs.f_bavail * fs.f_frsize
                if free < self.min_free:
                    raise InputError(f"cannot write to {self.path}: only {free / 1e6:.1f} MB free on its file "
                                     f"system, the outputs need about {self.min_free / 1e6:.1f} MB; free some "
                                     f"space or choose another {self.option}")
        return anchor

    def open(self) -> Path:
        """Create the staging folder (the real test that the folder is writable)."""
        anchor = self.check()
        _remove_stale_staging(anchor)
        try:
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.staging.{os.getpid()}.", dir=anchor))
        except OSError as e:
            raise InputError(f"cannot write to {self.path}: {_one_line_os_error(e)} in {anchor}; "
                             f"choose another {self.option}") from None
        return self._staging

    @property
    def staging(self) -> Path | None:
        return self._staging

    def discard(self) -> None:
        """Remove the staging folder (nothing is published)."""
        staging, self._staging = self._staging, None
        if staging is not None:
            for _ in range(3):  # a writer may still be adding a file: try again
                shutil.rmtree(staging, ignore_errors=True)
                if not staging.exists():
                    break

    def publish(self, last: tuple[str, ...] = ()) -> None:
        """Move the staged files into the folder (see the class docstring).

        Raises:
            WriteError: a file system error (the message says what was published).
        """
        from . import faults
        from .errors import WriteError

        staging = self._staging
        if staging is None:
            raise RuntimeError("OutputDir.publish without open()")
        files = sorted((p for p in staging.rglob("*") if p.is_file()),
                       key=lambda p: (p.name in last, last.index(p.name) if p.name in last else 0, str(p)))
        done = 0
        try:
            for f in files:
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if not os.path.lexists(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private
                try:
                    os.rename(staging, self.path)  # the whole folder appears at once
                    self._staging = None
                    _fsync_dir(self.path.parent)
                    faults.point("publish-file")
                    return
                except OSError as e:
                    if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    os.chmod(staging, 0o700)  # another run created it meanwhile: publish file by file
            with _locked(self.path):
                for f in files:
                    target = self.path / f.relative_to(staging)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(f, target)
                    done += 1
                    faults.point("publish-file")
                _fsync_dir(self.path)
                _remove_stale_staging(self.path)
        except OSError as e:
            state = (f"{done} of {len(files)} files were replaced, each whole; run again" if done
                     else "nothing was written")
            raise WriteError(f"cannot write the outputs into {self.path}: {_one_line_os_error(e)}; {state}") from None
        finally:
            self.discard()

    def __enter__(self) -> Path:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.publish()
        else:
            self.discard()
        return False
