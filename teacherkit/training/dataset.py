"""What training adds around the sample dataset: replay mixing, the resumable sampler and
the epoch-keyed view persistent DataLoader workers read through.

The dataset itself (:class:`teacherkit.data.samples.SampleDataset`), ``read_image`` and
``move_to_device`` live in :mod:`teacherkit.data.samples`, which evaluation and inference
use too; they are re-exported here for existing callers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.data.info import category_key
from teacherkit.data.samples import SampleDataset, move_to_device, read_image, sample_seed
from teacherkit.errors import DataError
from teacherkit.types import Sample

__all__ = ["CocoTrainDataset", "EpochKeyed", "EpochSampler", "REPLAY_STREAM", "ReplayMix", "SampleDataset",
           "batches_per_epoch", "move_to_device", "read_image", "remap_replay", "replay_category_map", "replay_count",
           "sample_seed"]


#: The old name, kept while callers move to :class:`teacherkit.data.samples.SampleDataset`.
CocoTrainDataset = SampleDataset


#: Seed stream of the replay draws, so they never coincide with a training sample's seed.
REPLAY_STREAM = 0x5245504C  # "REPL"


def replay_category_map(replay: Any, replay_path: Path, train_categories: list[Any],
                        train_path: Path) -> dict[int, int]:
    """Replay category id → training category id, matched by name (case and spacing
    ignored, as ``teacherkit validate`` compares names: they become text prompts).

    Every category the replay file annotates must be a training category: replay can only
    rehearse classes the teachers train on. Declared but unused categories are ignored.

    :raises DataError: naming the replay file, the category and the training file.
    """
    by_name: dict[str, int] = {}
    for cat in train_categories:
        by_name.setdefault(category_key(cat.name), cat.id)
    used = {ann.category_id for ann in replay.annotations}
    mapping: dict[int, int] = {}
    for cat in replay.categories:
        if category_key(cat.name) in by_name:
            mapping[cat.id] = by_name[category_key(cat.name)]
        elif cat.id in used:
            names = ", ".join(repr(c.name) for c in train_categories)
            raise DataError(
                f"{replay_path}: replay category {cat.name!r} (id {cat.id}) is not a category of the training "
                f"file {train_path} (its categories: {names}); replay can only rehearse classes the teachers "
                f"train on, so rename the category or drop its annotations"
            )
    return mapping


def remap_replay(replay: Any, replay_path: Path, train_categories: list[Any], train_path: Path) -> Any:
    """The replay dataset with the training file's categories and category ids (see
    :func:`replay_category_map`); annotations of unknown or unused categories are dropped."""
    import msgspec

    from teacherkit.data.coco import CocoDataset

    if not replay.images:
        raise DataError(f"{replay_path}: the replay file has no images")
    mapping = replay_category_map(replay, replay_path, train_categories, train_path)
    annotations = [msgspec.structs.replace(ann, category_id=mapping[ann.category_id])
                   for ann in replay.annotations if ann.category_id in mapping]
    return CocoDataset(replay.images, annotations, train_categories, path=replay_path)


def replay_count(num_train: int, fraction: float) -> int:
    """Replay images per epoch: ``fraction`` of the training images, at least one."""
    return max(1, round(num_train * fraction))


class ReplayMix:
    """The training set plus ``per_epoch`` replay images, one dataset the sampler shuffles.

    Indices ``0 .. len(train) - 1`` are the training images; the rest are replay images,
    drawn each epoch from ``(seed, epoch)`` without replacement (every replay image once
    before any repeats when ``per_epoch`` exceeds the replay file). The length is the same
    every epoch, so sampling, resuming and sharding work as for the training set alone.
    """

    def __init__(self, train_set: Any, replay_set: Any, *, per_epoch: int, seed: int) -> None:
        if len(replay_set) == 0:
            raise DataError("replay: the replay dataset is empty")
        self.train_set = train_set
        self.replay_set = replay_set
        self.per_epoch = int(per_epoch)
        self.seed = seed
        self.epoch = 0
        self.preprocessor = train_set.preprocessor
        self.chosen = self.replay_indices(0)

    def replay_indices(self, epoch: int) -> list[int]:
        """Indices into the replay set used in ``epoch`` (deterministic in seed and epoch)."""
        n = len(self.replay_set)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, REPLAY_STREAM])
        rounds = math.ceil(self.per_epoch / n)
        order = np.concatenate([rng.permutation(n) for _ in range(rounds)])[: self.per_epoch]
        return [int(i) for i in order]

    def __len__(self) -> int:
        return len(self.train_set) + self.per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.train_set.set_epoch(epoch)
        self.replay_set.set_epoch(epoch)
        self.chosen = self.replay_indices(epoch)

    def source(self, index: int) -> tuple[Any, int]:
        """The dataset and the index in it that ``index`` stands for."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        n = len(self.train_set)
        return (self.train_set, index) if index < n else (self.replay_set, self.chosen[index - n])

    def raw_sample(self, index: int) -> Sample:
        dataset, i = self.source(index)
        return dataset.raw_sample(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        dataset, i = self.source(index)
        return dataset[i]


class EpochSampler:
    """A deterministic, resumable, rank-sharded order of indices.

    Each epoch shuffles with ``(seed, epoch)`` (or keeps order), pads to a multiple of
    ``world_size`` by repeating the first indices (as DistributedSampler does), takes this
    rank's share, and can start part-way (``start``, in samples of this rank) so a resumed
    run sees exactly the samples the interrupted one had not.

    ``keyed`` yields ``(epoch, index)`` instead of ``index``, for a dataset read through
    :class:`EpochKeyed`: the epoch then travels with each index to whichever process loads
    it (a persistent DataLoader worker never sees ``set_epoch`` of the main process).
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                 keyed: bool = False) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.keyed = keyed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def indices(self) -> list[int]:
        order = np.arange(self.length)
        if self.shuffle:
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch]).permutation(self.length)
        per_rank = math.ceil(self.length / self.world_size) if self.length else 0
        total = per_rank * self.world_size
        if total > self.length and self.length:
            order = np.concatenate([order, order[: total - self.length]])
        return [int(i) for i in order[self.rank : total : self.world_size]]

    def __iter__(self) -> Iterator[Any]:
        chosen = self.indices()[self.start :]
        if self.keyed:
            return iter([(self.epoch, i) for i in chosen])
        return iter(chosen)

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)


class EpochKeyed:
    """``dataset`` read by ``(epoch, index)`` keys (:class:`EpochSampler` with ``keyed``).

    A persistent DataLoader worker holds its own copy of the dataset from the moment it
    starts, so the epoch the main process sets never reaches it. Here the key carries the
    epoch, and the copy that loads the sample moves to that epoch first: augmentation
    seeds, :class:`ReplayMix`'s replay picks and ``augment_views`` then follow the epoch
    exactly as with a loader built anew each epoch. ``set_epoch`` runs once per epoch per
    copy (the replay draw is a permutation per epoch, not per sample).

    In a worker, the process-wide generators (``random``, numpy's, torch's) are seeded
    from ``(seed, epoch, index)`` before each sample: a preprocessor that draws from them
    then gets the same numbers whichever worker loads the sample, however many epochs that
    worker has served, and in a run resumed part-way. In the main process (no workers)
    they are left alone: they are the training stream a checkpoint saves and restores.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.preprocessor = dataset.preprocessor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        if _in_worker():
            _seed_process_generators(getattr(self.dataset, "seed", 0), epoch, index)
        return self.dataset[index]


#: Seed stream of a worker's process-wide generators, apart from the samples' own seeds.
WORKER_STREAM = 0x574B5253  # "WKRS"


def _in_worker() -> bool:
    from torch.utils.data import get_worker_info

    return get_worker_info() is not None


def _seed_process_generators(seed: int, epoch: int, index: int) -> None:
    import random

    import torch

    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index, WORKER_STREAM]).generate_state(2, np.uint32)
    random.seed(int(state[0]))
    np.random.seed(int(state[0]))
    torch.manual_seed((int(state[0]) << 32) | int(state[1]))


def batches_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size) if num_samples else 0
