"""Errors a user can act on, and the exit codes of every command.

The CLI (:func:`teacherkit.cli.run`) prints an error's message on one line (traceback only
with ``--verbose``) and exits with :func:`exit_code_for`. Operating-system errors (a
folder that cannot be written, a full disk, a path through a file) are mapped here, in
one place, so that every command reports them alike.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: Exit codes (docs/cli.md lists the same).
EXIT_OK = 0
EXIT_PROBLEMS = 1  # the command ran and found problems (validate found errors)
EXIT_USAGE = 2  # bad input, flag, config, or an output that cannot be written
EXIT_BUG = 1  # an unexpected exception (a bug): the one-line message asks for --verbose
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM


class TeacherkitError(Exception):
    """Base of errors caused by input, configuration or environment, not by a bug."""

    exit_code = EXIT_USAGE


class DataError(TeacherkitError):
    """A dataset file cannot be read or used; the message names the file and place."""

    exit_code = EXIT_USAGE


class OutputExistsError(TeacherkitError):
    """An output exists and no flag allows replacing it."""

    exit_code = EXIT_USAGE


class OutputError(TeacherkitError):
    """An output cannot be written there (a folder where a file is expected, a parent that
    is a file, no permission, a full disk); the message names the path and the flag."""

    exit_code = EXIT_USAGE


#: Why an OS error happened, in words a user acts on; other errnos use ``strerror``.
_OS_REASONS = {
    errno.ENOSPC: "no space left on the device; free some space and run again",
    errno.EDQUOT: "disk quota exceeded; free some space and run again",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def describe_os_error(exc: OSError) -> str:
    """``<path>: <reason>`` for an OS error, one line."""
    reason = _OS_REASONS.get(exc.errno or -1) or exc.strerror or str(exc) or type(exc).__name__
    where = exc.filename if exc.filename is not None else None
    return f"{where}: {reason}" if where is not None else reason


def exit_code_for(exc: BaseException) -> int:
    """The exit code a command ends with when ``exc`` stops it: a user's error (bad input,
    an output that cannot be written, any OS error) is :data:`EXIT_USAGE`; Ctrl-C is
    :data:`EXIT_INTERRUPTED`; anything else is a bug (:data:`EXIT_BUG`)."""
    if isinstance(exc, TeacherkitError):
        return exc.exit_code
    if isinstance(exc, OSError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_BUG


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work, an output file that could not be written: ``path`` is a
    folder, a parent of it is a file, or the nearest existing folder is not writable.

    :raises OutputError: naming ``flag`` and ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder, expected a file path")
    _check_parent_writable(path, flag)


def check_output_dir(path: Path, flag: str) -> None:
    """Like :func:`check_output_file` for an output folder: ``path`` must be a folder or
    absent, and creatable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, expected a folder")
    _check_parent_writable(path, flag)


def _check_parent_writable(path: Path, flag: str) -> None:
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link would only fail later, at mkdir
            raise OutputError(f"{flag} {path}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: cannot write in {parent} (permission denied)")
