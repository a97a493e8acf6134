"""Errors a user can act on.

Every problem with the user's inputs (a missing file, an unknown prim, a NaN in an image,
a degenerate mesh, ...) is raised as :class:`InputError` with a one-line message that names
the file or prim and says what to do. The CLI prints that line and exits with status 2;
host adapters show it in their UI. Anything else escaping the engine is a bug.
"""


class PbrfitError(Exception):
    """Base class of the errors pbrfit raises on purpose."""

    exit_code = 1


class InputError(PbrfitError):
    """Bad user input. The message is one line: what is wrong, where, and how to fix it."""

    exit_code = 2


class FitCancelled(PbrfitError):
    """The user cancelled a running fit. Nothing was written."""

    exit_code = 130


class WriteError(PbrfitError):
    """The outputs could not be written (a full disk, an I/O error) after the inputs were
    accepted. The message is one line; nothing was written (exit status 1)."""

    exit_code = 1
