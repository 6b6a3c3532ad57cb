"""Where a command writes when ``--output`` is not given: ``runs/<command>/exp``, then
``exp2``, ``exp3``, ... (the first number no folder has yet, never an existing folder).

The folder is created here, with ``mkdir(exist_ok=False)``: two commands started at the
same moment cannot both get it; the one that loses the race takes the next number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The first run of a command; later ones add a number from 2.
STEM = "exp"
_NUMBERED = re.compile(rf"{STEM}(\d*)")


def _taken_numbers(parent: Path) -> set[int]:
    """Numbers of the ``exp<N>`` entries of ``parent`` (``exp`` itself is 1); files count too,
    since a folder cannot be made where they are."""
    taken: set[int] = set()
    if not parent.is_dir():
        return taken
    for entry in parent.iterdir():
        match = _NUMBERED.fullmatch(entry.name)
        if match:
            taken.add(int(match.group(1)) if match.group(1) else 1)
    return taken


def run_dir_name(number: int) -> str:
    """``exp`` for 1, ``exp<number>`` after it."""
    return STEM if number == 1 else f"{STEM}{number}"


def next_run_dir(command: str, root: str | Path = "runs", *, attempts: int = 1000) -> Path:
    """Create and return the next free ``<root>/<command>/exp<N>`` folder.

    The number is one past the highest already there (a deleted ``exp2`` is not reused
    while ``exp3`` exists, so the newest run always has the highest number).

    :raises ValueError: ``command`` is not a plain name (it becomes a folder name).
    :raises FileExistsError: ``attempts`` folders were taken by other processes in a row.
    """
    if not command or Path(command).name != command or command in (".", ".."):
        raise ValueError(f"run folder command {command!r}: a plain name is needed (it becomes a folder)")
    parent = Path(root) / command
    parent.mkdir(parents=True, exist_ok=True)
    number = max(_taken_numbers(parent), default=0) + 1
    for _ in range(attempts):
        candidate = parent / run_dir_name(number)
        try:
            candidate.mkdir(exist_ok=False)
        except FileExistsError:  # another run took it between the listing and now
            number += 1
            continue
        return candidate
    raise FileExistsError(f"{parent}: no free run folder after {attempts} tries")


def several_processes() -> bool:
    """True under ``torchrun`` / ``accelerate launch`` with more than one process: each one
    would take its own run folder, so a shared ``--output`` is needed there."""
    import os

    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


@contextmanager
def output_or_run_dir(output: Path | None, command: str, *, file_name: str | None = None,
                      root: str | Path = "runs") -> Iterator[Path]:
    """``output`` when given; else a new ``runs/<command>/exp<N>`` folder (``/file_name``
    inside it for commands that write one file). A new folder that the command leaves empty
    (it refused or failed before writing) is removed again, so failures do not use up numbers.

    :raises TeacherkitError: ``output`` is omitted under several processes.
    """
    if output is not None:
        yield Path(output)
        return
    if several_processes():
        from teacherkit.errors import TeacherkitError

        raise TeacherkitError(f"--output is needed when '{command}' runs in several processes "
                              "(each would otherwise take a run folder of its own)")
    folder = next_run_dir(command, root)
    try:
        yield folder / file_name if file_name else folder
    finally:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
