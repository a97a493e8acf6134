"""Opening USD stages with every layer they need, and reading files inside USDZ packages.

:func:`open_stage` refuses (InputError, one line) what USD itself would only warn about
and go on without: a missing sublayer, reference or payload. USD's own warnings about
anything else are passed through as USD would print them. Files inside a USDZ package
(``/x/pkg.usdz[hdri/env.exr]`` as USD resolves them) are copied out once per process for
the image readers (:func:`extract_packaged`) and removed when the process ends or a run is
cancelled (:func:`remove_extracted`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from pxr import Ar, Tf, Usd

from .errors import InputError

__all__ = ["open_stage", "is_package_path", "extract_packaged", "remove_extracted"]


def is_package_path(path: str) -> bool:
    """A file inside a USDZ package, as USD resolves it: ``/x/pkg.usdz[hdri/env.exr]``."""
    return path.endswith("]") and "[" in path


_extracted: dict[str, Path] = {}


def remove_extracted() -> None:
    """Remove the files copied out of USDZ packages (also done when the process exits)."""
    for path in list(_extracted.values()):
        shutil.rmtree(path.parent, ignore_errors=True)
    _extracted.clear()


atexit.register(remove_extracted)


def extract_packaged(resolved: str, where: str) -> Path:
    """A file inside a USDZ package, copied out (once per process) so that image readers
    can open it; the copies are removed when the process ends."""
    if resolved in _extracted and _extracted[resolved].is_file():
        return _extracted[resolved]
    asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved))
    if asset is None:
        raise InputError(f"{where}: texture {resolved} is not in its USDZ package; repackage the stage "
                         "with the texture, or set environment = \"...\" on each view in the job")
    data = asset.Read(asset.GetSize(), 0)
    folder = Path(tempfile.mkdtemp(prefix="pbrfit-usdz-"))
    name = resolved[resolved.rindex("[") + 1:-1].replace("\\", "/").rsplit("/", 1)[-1]
    out = folder / name
    out.write_bytes(bytes(data))
    _extracted[resolved] = out
    return out


@contextlib.contextmanager
def _captured_stderr():
    """Capture what native code writes to file descriptor 2 (USD prints its warnings there);
    yields a list that holds the text afterwards."""
    captured: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def _composition_problems(stage: Usd.Stage) -> list[str]:
    """Layers and assets the stage names but could not load (a missing sublayer, reference
    or payload), one phrase each."""
    problems = []
    getter = getattr(stage, "GetCompositionErrors", None)
    for error in (getter() if getter else []):
        kind = str(getattr(error, "errorType", ""))
        if any(k in kind for k in ("InvalidSublayerPath", "InvalidAssetPath", "MutedAssetPath",
                                   "InvalidExternalTargetPath")):
            text = " ".join(str(error).split())
            problems.append(re.sub(r";? ?skipping\.?$", "", text).rstrip(". "))
    return problems


def open_stage(path) -> Usd.Stage:
    """Open a stage file with every layer it needs.

    Raises:
        InputError: a missing or unreadable file, or a sublayer, reference or payload that
            cannot be loaded (USD itself would only print a warning and go on without it).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"stage {path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"stage {path} is not a file; give a .usd, .usda, .usdc or .usdz file")
    try:
        with _captured_stderr() as warnings:
            stage = Usd.Stage.Open(str(path), Usd.Stage.LoadAll)
    except Tf.ErrorException as e:
        msg = " ".join(str(e).split())
        # USD's message wraps the parser's "file:line:column: what" in C++ function names.
        found = re.search(r"'(\S+:\d+:\d+: .*?)\s*'\s*(?:Error in|$)", msg)
        msg = found.group(1).strip() if found else msg[:300]
        raise InputError(f"cannot open stage {path}: {msg}; is it a valid USD file?") from None
    if stage is None:
        raise InputError(f"cannot open stage {path}; is it a valid USD file?")
    problems = _composition_problems(stage)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"stage {path}: {problems[0].rstrip('.')}{more}; fix the path or remove it from the stage")
    if warnings and warnings[0].strip():
        sys.stderr.write(warnings[0])  # nothing pbrfit refuses: USD's own warnings, as USD would print them
    # USD keeps layers that are still open elsewhere in this process (e.g. by an earlier
    # StageContents) and would hand back their old contents: re-read the ones that changed
    # on disk. Layers with unsaved edits (a host's live session) are left as they are.
    for layer in stage.GetUsedLayers():
        if not layer.anonymous and not layer.dirty:
            layer.Reload()
    return stage
