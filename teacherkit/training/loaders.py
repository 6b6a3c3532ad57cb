"""One DataLoader per split for a whole training run, its workers started once.

Starting workers costs every epoch and every evaluation a fork, a copy-on-write walk of the
dataset and the first batches' latency; with ``persistent_workers`` they start with the
split's first pass and serve every later one. Two things follow from keeping them:

- a worker's copy of the dataset never sees ``set_epoch`` of the main process, so the
  training split is read through :class:`~teacherkit.training.dataset.EpochKeyed` with a
  keyed :class:`~teacherkit.training.dataset.EpochSampler`: the epoch travels with each
  index (the validation split has no epoch: it is never augmented);
- the workers ignore SIGINT/SIGTERM (:func:`~teacherkit.workers.ignore_stop_signals`)
  and outlive a pass, so whoever holds :class:`RunLoaders` must :meth:`~RunLoaders.close`
  it: the loop does in its ``finally`` (end, early stop, a signal, an error).

A loader is rebuilt only when its split is asked for with another dataset or another batch
size (a retry with a smaller batch after running out of memory); the old workers are shut
down first.

A user's error raised while a worker reads a sample (a ``TeacherkitError`` naming the file
and place, an ``OSError``) comes back as a value and is raised in the main process as it
was: re-raised by torch it would carry the worker's traceback in its message, which the
command line then prints.

Nothing here imports torch at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teacherkit.workers import ignore_stop_signals, stop_workers


def _worker_init(worker_id: int) -> None:
    """Every worker of a run's loaders (module level: picklable under ``spawn``)."""
    ignore_stop_signals(worker_id)


@dataclass
class _Built:
    loader: Any  # a _Loader
    dataset: Any
    batch_size: int


class _Failure:
    """A user's error raised in a worker, sent to the main process as a value."""

    def __init__(self, error: BaseException) -> None:
        import pickle

        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # a subclass that does not pickle: its message and exit code travel
            from teacherkit.errors import TeacherkitError

            message, code = str(error), getattr(error, "exit_code", None)
            error = TeacherkitError(message)
            if code is not None:
                error.exit_code = code
        self.error = error


class _Carrying:
    """The dataset a loader reads: a worker hands back a user's error as a :class:`_Failure`."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        from teacherkit.errors import TeacherkitError

        try:
            return self.dataset[key]
        except (TeacherkitError, OSError) as exc:
            from torch.utils.data import get_worker_info

            if get_worker_info() is None:
                raise
            return _Failure(exc)


class _Collate:
    """The dataset's collate, or the batch's first failure as it is."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> Any:
        for item in items:
            if isinstance(item, _Failure):
                return item
        return self.collate(items)


class _Loader:
    """A DataLoader whose batches raise, in the main process, the error a worker sent."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        for batch in self.loader:
            if isinstance(batch, _Failure):
                raise batch.error
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class RunLoaders:
    """The loaders of one teacher's run, one per split (``"train"``, ``"val"``).

    :param num_workers: worker processes per loader; 0 loads in the main process (no
        persistent workers then: there are none to keep).
    :param seed: seeds the loaders' own generator, so making an iterator never draws from
        the global torch RNG (which the training stream and ``--resume`` depend on).
    :param pin_memory: page-locked batches (on CUDA).
    """

    def __init__(self, *, num_workers: int, seed: int, pin_memory: bool) -> None:
        self.num_workers = num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self._built: dict[str, _Built] = {}

    def get(self, split: str, dataset: Any, batch_size: int, make_sampler: Callable[[], Any]) -> Any:
        """The DataLoader of ``split``: the one built before when it reads the same
        ``dataset`` with the same ``batch_size``; else a new one (the old one's workers
        shut down) with the sampler ``make_sampler()`` returns. The caller keeps moving
        that sampler (``set_epoch``) between passes."""
        built = self._built.get(split)
        if built is not None and built.dataset is dataset and built.batch_size == batch_size:
            return built.loader
        self.close(split)
        loader = self._make(dataset, batch_size, make_sampler())
        self._built[split] = _Built(loader, dataset, batch_size)
        return loader

    def _make(self, dataset: Any, batch_size: int, sampler: Any) -> Any:
        import torch
        from torch.utils.data import DataLoader

        workers = self.num_workers
        return _Loader(DataLoader(_Carrying(dataset), batch_size=batch_size, sampler=sampler,
                                  collate_fn=_Collate(dataset.preprocessor.collate), num_workers=workers,
                                  pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(self.seed),
                                  persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None))

    def close(self, split: str | None = None) -> None:
        """Shut down the workers of ``split`` (every split when ``None``) and forget its
        loader; safe to call twice, and when nothing was built."""
        for name in [split] if split is not None else list(self._built):
            built = self._built.pop(name, None)
            if built is not None:
                shutdown_workers(built.loader.loader)

    @property
    def splits(self) -> list[str]:
        """The splits whose loaders are built (their workers running, when they have any)."""
        return list(self._built)


def shutdown_workers(loader: Any) -> None:
    """Stop a DataLoader's persistent workers now (:func:`~teacherkit.workers.stop_workers`
    on the iterator it keeps)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return
    loader._iterator = None
    stop_workers(iterator)
