"""The shard files of ``teacherkit label``: one JSON record per image, appended and fsynced
per batch by the process that labelled it.

A 1-process run writes ``<output>.partial.jsonl``; under several processes rank 0 writes
that file and rank ``r`` writes ``<output>.partial-<r>.jsonl``. Nothing here holds the
records themselves: a shard is read line by line and only the byte offset of each record
is kept, so the merge reads one record at a time (memory O(images) small integers, not
O(images) detections and masks).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from teacherkit.errors import DataError, OutputError, describe_os_error

log = logging.getLogger("teacherkit.label")


@dataclass
class PartialLog:
    """What a shard file holds: the good records before the first bad line."""

    records: dict[str, int]  # file_name -> byte offset of its line
    good_bytes: int  # the file is truncated to this length before appending
    bad_line: int | None = None  # 1-based number of the first unreadable line
    dropped_lines: int = 0  # lines from bad_line on


def partial_path(output: Path, rank: int = 0) -> Path:
    """The shard file of process ``rank`` (rank 0's is also the one file of a 1-process run)."""
    output = Path(output)
    suffix = ".partial.jsonl" if rank == 0 else f".partial-{rank}.jsonl"
    return output.with_name(output.name + suffix)


def _ranked_shards(output: Path) -> list[tuple[int, Path]]:
    output = Path(output)
    pattern = re.compile(re.escape(output.name) + r"\.partial-([1-9]\d*)\.jsonl")
    ranked = []
    if output.parent.is_dir():
        for entry in output.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match:
                ranked.append((int(match.group(1)), entry))
    first = partial_path(output)
    return ([(0, first)] if first.exists() else []) + sorted(ranked)


def shard_paths(output: Path) -> list[Path]:
    """Every shard file of ``output`` on disk, by rank (a run may be resumed with another
    number of processes, so shards of ranks that no longer exist count too)."""
    return [path for _, path in _ranked_shards(output)]


def _valid_record(record: Any) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
        return False
    if "error" in record:
        return isinstance(record["error"], str)
    return (isinstance(record.get("width"), int) and isinstance(record.get("height"), int)
            and isinstance(record.get("detections"), list))


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record of one line, or ``None`` when it is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if _valid_record(record) else None


def read_partial(path: Path) -> PartialLog:
    """The records of a shard file up to its first bad line (not JSON, not a record, or
    without its newline: a write cut by a crash); nothing after it is trusted. Read line
    by line: only names and offsets are kept."""
    if not path.exists():
        return PartialLog({}, 0)
    records: dict[str, int] = {}
    offset, bad_line, dropped = 0, None, 0
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                if bad_line is not None:
                    dropped += bool(line.strip())
                    continue
                complete = line.endswith(b"\n")
                if not complete and not line.strip():
                    break  # blanks after the last newline: nothing was cut
                record = parse_record(line) if complete else None
                if record is None:
                    bad_line, dropped = number, 1
                    continue
                records[record["file_name"]] = offset
                offset += len(line)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the partial file: {describe_os_error(exc)}") from None
    return PartialLog(records, offset, bad_line, dropped)


def cut_torn_tail(path: Path) -> PartialLog:
    """The shard's good records, after cutting off a torn or unreadable tail."""
    state = read_partial(path)
    if state.bad_line is not None:
        log.warning("%s: line %d is not a complete record (cut by a crash?); %d line(s) from there are dropped "
                    "and their images labelled again", path, state.bad_line, state.dropped_lines)
        try:
            os.truncate(path, state.good_bytes)
        except OSError as exc:
            raise OutputError(f"{path}: cannot truncate the partial file: {describe_os_error(exc)}") from None
    return state


def cut_torn_tails(output: Path, rank: int, world: int) -> None:
    """Before a resumed run appends: each process cuts its own shard's torn tail; rank 0
    also cuts those of shards whose rank is gone (an earlier run had more processes)."""
    for owner, path in _ranked_shards(output):
        if owner == rank or (rank == 0 and owner >= world):
            cut_torn_tail(path)


def done_names(output: Path) -> set[str]:
    """Images some shard of ``output`` already holds a record of (any rank, any earlier
    number of processes); read after every shard's torn tail was cut."""
    done: set[str] = set()
    for path in shard_paths(output):
        done.update(read_partial(path).records)
    return done


class ShardReader:
    """Reads the record of any image from the finished shards, one at a time: an index of
    (shard, offset) per name, and a seek per record."""

    def __init__(self, output: Path, files: ExitStack) -> None:
        self.index: dict[str, tuple[int, int]] = {}
        self.handles: list[BinaryIO] = []
        for number, path in enumerate(shard_paths(output)):
            state = read_partial(path)
            if state.bad_line is not None:
                raise DataError(f"{path}: line {state.bad_line} is not a complete record; run again with "
                                "--resume to label its images again")
            self.index.update((name, (number, offset)) for name, offset in state.records.items())
            self.handles.append(files.enter_context(open(path, "rb")))  # closed with the caller's stack

    def names(self) -> set[str]:
        return set(self.index)

    def get(self, name: str) -> dict[str, Any] | None:
        where = self.index.get(name)
        if where is None:
            return None
        fh = self.handles[where[0]]
        fh.seek(where[1])
        return json.loads(fh.readline())


@contextmanager
def open_shards(output: Path, names: set[str]) -> Iterator[ShardReader]:
    """A :class:`ShardReader` over every shard of ``output``; records of images not in
    ``names`` (no longer under ``--images``) are said, and left out by the caller."""
    with ExitStack() as files:
        try:
            reader = ShardReader(output, files)
        except OSError as exc:
            raise DataError(f"{output}: cannot read the partial files: {describe_os_error(exc)}") from None
        gone = len(reader.names() - names)
        if gone:
            log.warning("%s: %d record(s) name images no longer under --images; they are left out",
                        partial_path(output), gone)
        yield reader
