"""The images of ``teacherkit label``, read (and made into the box teacher's inputs) in
DataLoader workers while the main process runs the models.

One item of the loader is one batch of the run (``--batch-size`` paths of this process's
list, in order), so a worker reads a whole batch and knows each image's place in it: the
box teacher's inputs it builds are those the main process would build (same image ids),
and the output does not depend on ``--workers``. Each worker holds at most the loader's
prefetch of batches (``prefetch_factor`` per worker): memory stays O(batch).

A file that cannot be labelled (unreadable, a decompression bomb, a link out of
``--images``) becomes an item with its reason, never an exception: the run goes on
without it and the reason is recorded.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.errors import DataError
from teacherkit.workers import stop_workers

log = logging.getLogger("teacherkit.label")

#: Batches each worker prepares ahead of the one the models run on.
PREFETCH_BATCHES = 2


@dataclass
class LoadedImage:
    """One image of a batch: its pixels (kept for SAM), or why it cannot be labelled, and
    the box teacher's inputs when a worker built them."""

    path: Path
    pixels: np.ndarray | None = None
    reason: str | None = None
    prepared: dict[str, Any] | None = None


def default_workers() -> int:
    """Two reader processes, or one where this process may use only one CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


def read_pixels(path: Path, refused: set[Path]) -> tuple[np.ndarray | None, str | None]:
    """An image's pixels, or why it cannot be labelled (the run goes on without it)."""
    from teacherkit.data.image_files import ALLOW_HINT, bomb_reason, is_decompression_bomb
    from teacherkit.data.samples import read_image

    if path in refused:
        return None, f"a link to a file outside --images; refused ({ALLOW_HINT})"
    try:
        return read_image(path), None
    except DataError as exc:
        return None, str(exc)
    except Exception as exc:  # any decoder failure of one file must not stop the other images
        if is_decompression_bomb(exc):
            return None, f"{path}: {bomb_reason(exc)}"
        return None, f"{path}: cannot read image: {type(exc).__name__}: {exc}"


def picklable(preprocessor: Any) -> bool:
    """Whether ``preprocessor`` can be sent to a worker process (a plugin's may hold
    something that cannot; then the main process preprocesses)."""
    try:
        pickle.dumps(preprocessor)
    except Exception:
        return False
    return True


class BatchReader:
    """Map-style dataset: item ``k`` is batch ``k`` of ``files``, read and preprocessed."""

    def __init__(self, files: Sequence[Path], refused: set[Path], batch_size: int, preprocessor: Any = None) -> None:
        self.files = list(files)
        self.refused = refused
        self.batch_size = batch_size
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def __getitem__(self, index: int) -> list[LoadedImage]:
        from teacherkit.inference.experiment import empty_sample

        chunk = self.files[index * self.batch_size : (index + 1) * self.batch_size]
        items = [LoadedImage(path, *read_pixels(path, self.refused)) for path in chunk]
        if self.preprocessor is not None:
            readable = [item for item in items if item.pixels is not None]
            # image ids are places among the readable images of the batch, as predict_images numbers them
            for image_id, item in enumerate(readable):
                item.prepared = self.preprocessor(empty_sample(item.pixels, image_id), train=False)
        return items


def _as_is(batch: list[LoadedImage]) -> list[LoadedImage]:
    return batch


def _start_worker(worker_id: int) -> None:
    """A reader ignores Ctrl-C/SIGTERM sent to the process group (the main process keeps
    what is done and stops it), and refuses decompression bombs as the main process does."""
    from teacherkit.data.image_files import refuse_decompression_bombs
    from teacherkit.workers import ignore_stop_signals

    ignore_stop_signals(worker_id)
    refuse_decompression_bombs()


def image_batches(files: Sequence[Path], refused: set[Path], batch_size: int, *, workers: int,
                  preprocessor: Any = None) -> Iterator[list[LoadedImage]]:
    """The batches of ``files`` in order, read by ``workers`` processes (0: here).
    ``preprocessor``: the box teacher's, run where the images are read when it can be
    sent to a worker (else the caller preprocesses). Close the generator to stop the
    workers early."""
    from torch.utils.data import DataLoader

    if workers and preprocessor is not None and not picklable(preprocessor):
        log.info("the box teacher's preprocessor cannot be sent to a worker; it runs in the main process")
        preprocessor = None
    reader = BatchReader(files, refused, batch_size, preprocessor)
    if not len(reader):
        return
    extra: dict[str, Any] = {"prefetch_factor": PREFETCH_BATCHES, "worker_init_fn": _start_worker} if workers else {}
    loader = DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
                        persistent_workers=False, **extra)
    batches = iter(loader)
    try:
        yield from batches
    finally:
        # now, not when the iterator is collected: Ctrl-C while waiting for a batch leaves it
        # in the traceback a notebook keeps
        stop_workers(batches)
        del batches
