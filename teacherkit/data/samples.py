"""The sample dataset that training, evaluation and inference all read images through.

Images are read lazily (one file per ``__getitem__``), EXIF orientation applied, then the
optional augmentation and the teacher's preprocessor run, all in DataLoader workers.
Randomness comes from explicit seeds derived from (run seed, epoch, index), so a sample
looks the same whichever worker loads it and after a resume.

This module sits in ``data/`` (below training, evaluation and inference) so that scoring
or labelling never has to import the training package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.data.image_files import bomb_reason, resolve_image_path
from teacherkit.data.info import DatasetInfo
from teacherkit.data.view_records import pixel_free
from teacherkit.errors import DataError
from teacherkit.types import Sample

#: Annotation kinds the core itself knows how to turn into instances.
BUILTIN_KINDS = ("boxes", "masks")


def sample_seed(run_seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed unique to (run seed, epoch, index)."""
    seq = np.random.SeedSequence([run_seed & 0xFFFFFFFF, epoch, index])
    return int(seq.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 pixels with EXIF orientation applied (what a camera user saw)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # an image over Pillow's pixel limit is refused, never decoded (decompression bomb)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                return np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: {bomb_reason(exc)}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from exc


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


def carries_kind(ann: Any, kind: str) -> bool:
    """Whether an annotation holds data of a plugin's ``kind`` (the annotation field of
    that name, ``keypoints`` say, is present and not empty)."""
    return bool(getattr(ann, kind, None))


def keypoint_array(rows: list[list[float] | None]) -> np.ndarray:
    """``(N, K, 3)`` float32 ``(x, y, visibility)`` per instance; ``K`` is the longest list,
    shorter or missing lists are padded with visibility 0 (COCO's "not labelled")."""
    k = max((len(r) // 3 for r in rows if r), default=0)
    out = np.zeros((len(rows), k, 3), np.float32)
    for i, row in enumerate(rows):
        if row:
            values = np.asarray(row[: 3 * (len(row) // 3)], np.float32).reshape(-1, 3)
            out[i, : len(values)] = values
    return out


def augmentation_uses_masks(augment: Any) -> bool:
    """Whether an augmentation reads the samples' masks: its ``uses_masks`` attribute when
    it has one (an augmentation that only changes pixel values leaves boxes valid without
    them; one that moves pixels recomputes boxes from masks), else ``True``."""
    return bool(getattr(augment, "uses_masks", True))


class _Instances:
    """Per-instance columns collected while reading one image's annotations."""

    def __init__(self) -> None:
        self.boxes: list[list[float]] = []
        self.labels: list[int] = []
        self.cat_ids: list[int] = []
        self.ann_ids: list[int] = []
        self.crowd: list[int] = []
        self.masks: list[np.ndarray] = []
        self.keypoints: list[list[float] | None] = []

    def add(self, ann: Any, box: list[float], label: int, mask: np.ndarray | None) -> None:
        self.boxes.append(box)
        self.labels.append(label)
        self.cat_ids.append(ann.category_id)
        self.ann_ids.append(ann.id)
        self.crowd.append(int(ann.iscrowd or 0))
        if mask is not None:
            self.masks.append(mask)
        self.keypoints.append(list(ann.keypoints) if ann.keypoints else None)


class SampleDataset:
    """One item per image: a :class:`~teacherkit.types.Sample`, augmented when training,
    then preprocessed by the teacher's preprocessor. Training, evaluation and inference
    all use it.

    :param coco: a loaded :class:`teacherkit.data.coco.CocoDataset`.
    :param images_dir: folder ``file_name`` is relative to.
    :param info: class mapping of the *training* data (validation uses the same mapping).
    :param learns_from: the teacher's annotation kind. ``"boxes"`` and ``"masks"`` keep
        instances that have one (a box teacher uses the mask's box when ``bbox`` is
        missing); a plugin's kind (``"keypoints"``) keeps instances that carry it, with or
        without a box (a box-less instance has the box ``[0, 0, 0, 0]``), and instances
        with a box as before.
    :param with_masks: decode masks into the sample. For a teacher that does not learn
        from masks they only serve the augmentation, so an augmentation whose
        ``uses_masks`` attribute is false (it moves no pixels, so boxes need no mask to
        follow; see :func:`augmentation_uses_masks`) turns them off while training.
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
        augment_views: int | None = None,
        view_records: Any = None,
    ) -> None:
        self.coco = coco
        self.images_dir = Path(images_dir)
        self.info = info
        self.preprocessor = preprocessor
        self.learns_from = learns_from
        self.train = train
        self.augment = augment if train else None
        self.with_masks = with_masks and (learns_from == "masks" or self.augment is None
                                          or augmentation_uses_masks(self.augment))
        self.seed = seed
        # K: epoch e augments with the seed of epoch e % K, so each image has K views in all
        # (a teacher that caches what its frozen encoder makes of the pixels asks for it)
        self.augment_views = augment_views
        # with K views and a preprocessor that can do without pixels: the views' geometry, written
        # in epochs < K, read back in later ones (teacherkit.data.view_records)
        usable = self.augment is not None and augment_views and pixel_free(preprocessor)
        self.view_records = view_records if usable else None
        self.epoch = 0
        self.images = list(coco.images)
        self._anns = {img.id: coco.annotations_for(img.id) for img in self.images}

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _instance(self, ann: Any, height: int, width: int) -> tuple[list[float], np.ndarray | None] | None:
        """The box and (when wanted) mask of one annotation, or ``None`` to leave it out."""
        from teacherkit.data.masks import mask_to_bbox, segmentation_to_mask

        mask = None
        # decoded only when a mask is wanted or must stand in for the box: the annotation
        # keeps JSON bytes, and decoding is most of what reading a sample's geometry costs
        segmentation = ann.segmentation if self.with_masks or ann.bbox is None else None
        if segmentation:
            source = getattr(self.coco, "path", None) or "dataset"
            mask = segmentation_to_mask(segmentation, height, width, where=f"{source} annotation {ann.id}")
        if self.learns_from == "masks" and mask is None:
            return None
        if ann.iscrowd and self.learns_from in BUILTIN_KINDS:
            return None  # crowd regions are not single instances; COCO practice ignores them in training
        box = list(ann.bbox) if ann.bbox is not None else (mask_to_bbox(mask) if mask is not None else None)
        if box is None or box[2] <= 0 or box[3] <= 0:
            if self.learns_from in BUILTIN_KINDS or not carries_kind(ann, self.learns_from):
                return None
            box = [0.0, 0.0, 0.0, 0.0]  # the plugin's kind is the instance; it has no box
        if self.with_masks and mask is None:
            mask = np.zeros((height, width), np.uint8)
        return box, (mask if self.with_masks else None)

    def raw_sample(self, index: int) -> Sample:
        img = self.images[index]
        pixels = read_image(resolve_image_path(self.images_dir, img.file_name, image_id=img.id))
        height, width = pixels.shape[:2]
        found = _Instances()
        for ann in self._anns[img.id]:
            if ann.category_id not in self.info.class_mapping:
                continue
            instance = self._instance(ann, height, width)
            if instance is not None:
                found.add(ann, instance[0], self.info.class_mapping[ann.category_id], instance[1])
        masks = None
        if self.with_masks:
            masks = np.stack(found.masks).astype(np.uint8) if found.masks else np.zeros((0, height, width), np.uint8)
        flat_keypoints = [v for row in found.keypoints if row for v in row]
        return {
            "image": pixels,
            "image_id": int(img.id),
            "file_name": img.file_name,
            "orig_size": (height, width),
            "boxes": np.asarray(found.boxes, dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray(found.labels, dtype=np.int64),
            "category_ids": np.asarray(found.cat_ids, dtype=np.int64),
            "annotation_ids": np.asarray(found.ann_ids, dtype=np.int64),
            "iscrowd": np.asarray(found.crowd, dtype=np.int64),
            "masks": masks,
            "keypoints": keypoint_array(found.keypoints),
            # "keypoints" in extra: the flat list of every kept instance, as plugins read it before
            # Sample had a keypoints field
            "extra": {"seed": sample_seed(self.seed, self.epoch, index), "keypoints": flat_keypoints},
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.view_records is not None:
            return self.preprocessor(self._view(index), train=self.train)
        sample = self.raw_sample(index)
        if self.augment is not None:
            seed = sample["extra"]["seed"]
            if self.augment_views:
                seed = sample_seed(self.seed, self.epoch % self.augment_views, index)
            sample = self.augment(sample, seed)
        return self.preprocessor(sample, train=self.train)

    def _view(self, index: int) -> Sample:
        """The augmented sample of this epoch's view of ``index``: from its record, without
        pixels, when a past epoch recorded it and the teacher still holds its pixels' key;
        else read and augmented (and recorded when the preprocessor keys it). Either way the
        sample carries this epoch's seed, so prompts and the like still change every epoch."""
        views = self.augment_views
        view = self.epoch % views
        if self.epoch >= views:
            recorded = self.view_records.get(index, view)
            if recorded is not None and self.preprocessor.holds_view(recorded["view_key"]):
                recorded["extra"] = {**recorded.get("extra", {}), "seed": sample_seed(self.seed, self.epoch, index)}
                return recorded
        sample = self.augment(self.raw_sample(index), sample_seed(self.seed, view, index))
        key = self.preprocessor.view_key(sample)
        if key is not None:
            if self.epoch < views or not self.view_records.path(index, view).exists():
                self.view_records.put(index, view, sample, key)
            sample["view_key"] = key  # the preprocessor need not hash the pixels again
        return sample
