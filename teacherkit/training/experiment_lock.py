"""One run at a time per experiment folder.

Two ``train`` runs on the same ``--output`` (two ``--overwrite`` at once, or a ``--resume``
while the first still trains) would delete or interleave each other's files. The run that
writes holds ``<output>/.teacherkit.lock``, created with ``O_EXCL`` so only one process can
make it; it names the holder (pid, host, start time) so the refusal can say who. A lock
whose process is gone (same host, pid not running, or running but started later: the pid was
reused) is stale and taken over; a lock from another host cannot be judged and is refused
with the advice to remove it by hand.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from teacherkit.errors import TeacherkitError

LOCK_FILE = ".teacherkit.lock"


class ExperimentLockedError(TeacherkitError):
    """Another run holds the experiment folder."""

    exit_code = 2


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), ``None`` elsewhere
    or when the process does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count from the last ')'
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder_is_gone(holder: dict[str, Any]) -> bool:
    """Whether the process named in a lock has certainly ended (only judged on this host)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return True  # not a lock we wrote: unreadable contents cannot belong to a live run of ours
    if not _pid_alive(pid):
        return True
    recorded, current = holder.get("process_start"), _process_start(pid)
    return recorded is not None and current is not None and recorded != current  # pid reused


def describe_holder(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"since {holder.get('since', '?')}")


class ExperimentLock:
    """``with ExperimentLock(folder):`` holds the folder's lock file; released on any exit
    of the block (not on SIGKILL: the next run finds the pid gone and takes the lock over).

    The folder is created when missing (the lock has to live somewhere); ``created_folder``
    says whether this lock made it, so a run that fails before writing anything can leave
    the world as it was.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.held = False
        self.created_folder = False
        self._text = ""

    def acquire(self) -> ExperimentLock:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created_folder = True
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "process_start": _process_start(os.getpid())}
        self._text = json.dumps(record) + "\n"
        for _attempt in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                seen = self._read()
                if seen is None:
                    continue  # it vanished between open and read: try again
                text, holder = seen
                if not _holder_is_gone(holder):
                    raise ExperimentLockedError(
                        f"output folder {self.folder} is in use by another teacherkit run ({describe_holder(holder)}); "
                        f"wait for it to end, or delete {self.path} if that run is gone"
                    ) from None
                self._break_stale(text)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self._text)
                fh.flush()
                os.fsync(fh.fileno())
            self.held = True
            return self
        raise ExperimentLockedError(f"output folder {self.folder}: could not take {self.path} (another run keeps "
                                    "taking it); try again")

    def _read(self) -> tuple[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        if not isinstance(holder, dict):
            holder = {}
        holder.setdefault("host", socket.gethostname())  # written half-way by a run of this machine
        return text, holder

    def _break_stale(self, stale_text: str) -> None:
        """Remove a stale lock without removing a live one that replaced it meanwhile: the
        file is renamed aside (only one process can win that rename) and checked."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another run broke it first
        try:
            if aside.read_text(encoding="utf-8", errors="replace") != stale_text:
                try:  # a live lock was renamed: put it back unless yet another one appeared
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
        finally:
            aside.unlink(missing_ok=True)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text(encoding="utf-8", errors="replace") == self._text:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
