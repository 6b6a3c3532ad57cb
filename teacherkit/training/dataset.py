"""The torch Dataset and sampler the trainer uses.

Images are read lazily (one file per ``__getitem__``), EXIF orientation applied, then the
optional augmentation and the teacher's preprocessor run, all in DataLoader workers.
Randomness comes from explicit seeds derived from (run seed, epoch, index), so a sample
looks the same whichever worker loads it and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.data.info import DatasetInfo
from teacherkit.errors import DataError
from teacherkit.types import Sample


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed unique to (run seed, epoch, index)."""
    seq = np.random.SeedSequence([run_seed & 0xFFFFFFFF, epoch, index])
    return int(seq.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 pixels with EXIF orientation applied (what a camera user saw)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from exc


class CocoTrainDataset:
    """One item per image: a :class:`~teacherkit.types.Sample`, augmented when training,
    then preprocessed by the teacher's preprocessor.

    :param coco: a loaded :class:`teacherkit.data.coco.CocoDataset`.
    :param images_dir: folder ``file_name`` is relative to.
    :param info: class mapping of the *training* data (validation uses the same mapping).
    :param learns_from: the teacher's annotation kind; instances lacking it are dropped
        (a box teacher uses the mask's box when ``bbox`` is missing).
    :param with_masks: decode masks into the sample.
    """

    def __init__(
        self,
        coco: Any,
        images_dir: Path,
        info: DatasetInfo,
        preprocessor: Any,
        *,
        learns_from: str,
        train: bool,
        augment: Any = None,
        with_masks: bool = False,
        seed: int = 0,
    ) -> None:
        self.coco = coco
        self.images_dir = Path(images_dir)
        self.info = info
        self.preprocessor = preprocessor
        self.learns_from = learns_from
        self.train = train
        self.augment = augment if train else None
        self.with_masks = with_masks
        self.seed = seed
        self.epoch = 0
        self.images = list(coco.images)
        self._anns = {img.id: coco.annotations_for(img.id) for img in self.images}

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw_sample(self, index: int) -> Sample:
        from teacherkit.data.masks import mask_to_bbox, segmentation_to_mask

        img = self.images[index]
        pixels = read_image(self.images_dir / img.file_name)
        height, width = pixels.shape[:2]
        boxes, labels, cat_ids, ann_ids, crowd, masks, keypoints = [], [], [], [], [], [], []
        for ann in self._anns[img.id]:
            if ann.category_id not in self.info.class_mapping:
                continue
            has_seg = bool(ann.segmentation)
            mask = None
            if has_seg and (self.with_masks or ann.bbox is None):
                mask = segmentation_to_mask(ann.segmentation, height, width)
            if self.learns_from == "masks" and mask is None:
                continue
            if ann.iscrowd and self.learns_from in ("boxes", "masks"):
                continue  # crowd regions are not single instances; COCO practice ignores them in training
            box = list(ann.bbox) if ann.bbox is not None else (mask_to_bbox(mask) if mask is not None else None)
            if box is None or box[2] <= 0 or box[3] <= 0:
                continue
            boxes.append(box)
            labels.append(self.info.class_mapping[ann.category_id])
            cat_ids.append(ann.category_id)
            ann_ids.append(ann.id)
            crowd.append(int(ann.iscrowd or 0))
            if self.with_masks:
                masks.append(mask if mask is not None else np.zeros((height, width), np.uint8))
            if ann.keypoints:
                keypoints.extend(ann.keypoints)
        sample: Sample = {
            "image": pixels,
            "image_id": int(img.id),
            "file_name": img.file_name,
            "orig_size": (height, width),
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, dtype=np.int64),
            "category_ids": np.asarray(cat_ids, dtype=np.int64),
            "annotation_ids": np.asarray(ann_ids, dtype=np.int64),
            "iscrowd": np.asarray(crowd, dtype=np.int64),
            "masks": np.stack(masks).astype(np.uint8) if masks else (
                np.zeros((0, height, width), np.uint8) if self.with_masks else None),
            "extra": {"seed": sample_seed(self.seed, self.epoch, index), "keypoints": keypoints},
        }
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.raw_sample(index)
        if self.augment is not None:
            sample = self.augment(sample, sample["extra"]["seed"])
        return self.preprocessor(sample, train=self.train)


#: Seed stream of the replay draws, so they never coincide with a training sample's seed.
REPLAY_STREAM = 0x5245504C  # "REPL"


def _name_key(name: str) -> str:
    return " ".join(str(name).split()).casefold()


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
        by_name.setdefault(_name_key(cat.name), cat.id)
    used = {ann.category_id for ann in replay.annotations}
    mapping: dict[int, int] = {}
    for cat in replay.categories:
        if _name_key(cat.name) in by_name:
            mapping[cat.id] = by_name[_name_key(cat.name)]
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

    def is_replay(self, index: int) -> bool:
        return index >= len(self.train_set)

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
    """

    def __init__(self, length: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
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

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)


def batches_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size) if num_samples else 0


def move_to_device(value: Any, device: Any) -> Any:
    """Tensors anywhere inside dicts/lists/tuples moved to ``device``; the rest untouched."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {k: move_to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [move_to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(move_to_device(v, device) for v in value)
    return value

