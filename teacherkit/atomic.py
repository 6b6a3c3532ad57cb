"""Atomic writes: readers see the old file or folder or the new one, never a part.

The one owner of "write it aside, then swap it in" for files and folders. Everything
this module creates gets the modes an ordinary ``open``/``mkdir`` would give under the
process umask (0644 / 0755 under umask 022): ``tempfile`` creates 0600 / 0700, which
would leave outputs readable only by their owner.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

OLD_SUFFIX = ".old"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """A file that replaces ``path`` when the block ends without an error, so readers see
    the old file or the new one, never a part: a temp file in the same folder, fsync, rename,
    fsync the folder. On an error the temp file is removed and ``path`` is untouched.

    :param mode: ``"wb"`` or ``"w"`` (text, UTF-8), for writing a stream piece by piece."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: object, *, indent: int | None = None) -> None:
    import json

    atomic_write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_temp_dir(final_dir: Path) -> Path:
    """A new empty sibling of ``final_dir`` to write into, with ordinary folder modes."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


@contextlib.contextmanager
def atomic_dir(final_dir: Path) -> Iterator[Path]:
    """Write a folder atomically::

        with atomic_dir(out / "adapter") as tmp:
            model.save_pretrained(tmp)

    The body writes into a fresh sibling folder; on success it replaces ``final_dir`` in
    one rename (:func:`atomic_replace_dir`); on any failure, the partial folder is removed
    and ``final_dir`` is left as it was."""
    tmp = make_temp_dir(final_dir)
    try:
        yield tmp
        atomic_replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written ``tmp_dir`` (a sibling of ``final_dir``) into place.

    The old ``final_dir`` is renamed aside (``<name>.old``) first and deleted only after the
    new one is in place, so at every moment one complete folder exists under a known name;
    :func:`recover_dir` puts ``.old`` back when a crash fell between the two renames.
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    for root, _dirs, files in os.walk(tmp_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
    recover_dir(final_dir)
    old = final_dir.with_name(final_dir.name + OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)  # final_dir exists (recover_dir saw to that): .old is stale
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(final_dir: Path) -> bool:
    """Undo a swap a crash interrupted: when ``final_dir`` is missing but ``<name>.old``
    (the complete previous version) exists, rename it back. Returns whether it did."""
    final_dir = Path(final_dir)
    old = final_dir.with_name(final_dir.name + OLD_SUFFIX)
    if not final_dir.exists() and old.is_dir():
        os.replace(old, final_dir)
        fsync_dir(final_dir.parent)
        return True
    return False
