"""SAM preprocessing: one :class:`teacherkit.types.Sample` to model inputs, and
collation of several into a batch.

An image is resized so its longest side is ``image_size`` (SAM's rounding) and
zero-padded bottom/right to a square, as uint8: SAM's normalisation waits until the
batch is on the device (:func:`finish_pixels`, called by the teacher), so workers ship a
quarter of float32's bytes. Masks follow into the same frame as
soft (area-averaged) uint8 targets; prompts are scaled by the same factors. Per
image, training keeps at most ``max_instances`` instances with non-empty masks (a
seeded sample); evaluation keeps every instance, prompted by its exact box.

Determinism: the sample's seed is ``sample["extra"]["seed"]`` when the trainer
supplies one (it changes per epoch), else a hash of ``config.seed`` and the image id.
It alone decides the instances, box jitter and points, so results do not depend on
worker count or order. In ``mixed`` mode the batch's prompt kind is drawn from the
sum of its samples' seeds.

Runs in DataLoader workers: the class is a plain picklable dataclass and does no
GPU work. Metadata stays plain python; tensors are only built in :meth:`collate`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from teacherkit.device_pixels import channel_constants, padding_mask
from teacherkit.errors import DataError
from teacherkit_sam.masks import mask_box_xyxy, mask_extents, masks_to_input_frame, resized_shape
from teacherkit_sam.prompts import PAD_LABEL, jitter_box, make_rng, sample_points, select_instances

SAM_MEAN = (0.485, 0.456, 0.406)
SAM_STD = (0.229, 0.224, 0.225)


@dataclass
class SamPreprocessor:
    """Callable preprocessor of the SAM teacher (see module docstring)."""

    image_size: int = 1024
    mean: tuple[float, float, float] = SAM_MEAN
    std: tuple[float, float, float] = SAM_STD
    prompt: str = "box"  # "box" | "points" | "mixed"
    box_jitter: float = 0.1
    box_jitter_max: float = 20.0
    num_points: int = 1
    num_negative_points: int = 0
    max_instances: int = 16
    seed: int = 0
    #: hash each image for the embedding cache (``cache_key``); off when the teacher caches
    #: nothing (a trained encoder), where hashing 3 MB per image is a worker's time spent for no one
    cache_keys: bool = True
    #: which cached embeddings the teacher holds (:class:`teacherkit_sam.cache.HeldKeys`), set when
    #: it records views: a recorded view whose embedding is held comes without pixels
    #: (``teacherkit.data.view_records``); ``None``: every sample is read with its pixels
    held: Any = None

    @property
    def preprocessing_id(self) -> str:
        """Everything about preprocessing that changes the pixels the encoder sees."""
        return f"sam-pre-v1|{self.image_size}|{self.mean}|{self.std}"

    # -- views without pixels (teacherkit.data.view_records) ----------------------------------
    def view_key(self, sample: dict[str, Any]) -> str | None:
        """The key of an augmented sample's pixels (its embedding's cache key) when views are
        recorded, else ``None``."""
        return self.cache_key(np.asarray(sample["image"])) if self.held is not None else None

    def holds_view(self, key: str) -> bool:
        """Whether the teacher's cache holds the embedding of ``key``, so the view's pixels can stay unread."""
        return self.held is not None and bool(self.held(key))

    # -- one sample ---------------------------------------------------------------------
    @staticmethod
    def _checked_inputs(sample: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray, list[int], list[int]]:
        """The sample's image (``None`` for a recorded view: ``image_shape`` gives its
        size), masks, xywh boxes, annotation and category ids, checked to agree; a
        :class:`DataError` naming the image otherwise."""
        image = sample["image"]
        if image is not None:
            image = np.asarray(image)
        shape = tuple(image.shape if image is not None else sample["image_shape"])
        where = sample.get("file_name") or f"image {sample.get('image_id')}"
        if len(shape) != 3 or shape[2] != 3:
            raise DataError(f"{where}: expected an (H, W, 3) RGB image, got shape {shape}")
        height, width = shape[:2]
        masks = sample.get("masks")
        if masks is None:
            raise DataError(f"{where}: the SAM teacher learns from masks but this sample has none")
        masks = np.asarray(masks, dtype=np.uint8)
        if masks.ndim != 3 or masks.shape[1:] != (height, width):
            raise DataError(f"{where}: masks of shape {masks.shape} do not match the image ({height}, {width})")
        n = masks.shape[0]
        boxes_xywh = np.asarray(sample.get("boxes", np.zeros((n, 4))), dtype=np.float32).reshape(-1, 4)
        ann_ids = [int(v) for v in np.asarray(sample.get("annotation_ids", np.arange(n))).reshape(-1)]
        cat_ids = [int(v) for v in np.asarray(sample.get("category_ids", np.zeros(n))).reshape(-1)]
        if not (len(boxes_xywh) == len(ann_ids) == len(cat_ids) == n):
            raise DataError(f"{where}: boxes, annotation ids, category ids and masks disagree in count")
        return image, masks, boxes_xywh, ann_ids, cat_ids

    def __call__(self, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
        image, masks, boxes_xywh, ann_ids, cat_ids = self._checked_inputs(sample)
        height, width = masks.shape[1:]
        n = masks.shape[0]
        seed = self.sample_seed(sample)
        rng = make_rng(seed)
        # each mask's pixel extent: emptiness, boxes, where to look for points and which
        # part of the mask to resize all come from it (no whole-image search per instance)
        extents = mask_extents(masks)
        non_empty = extents[:, 1] > extents[:, 0]
        # an empty mask gives no point to prompt and nothing to learn, so training skips it;
        # evaluation still answers for every ground-truth instance
        keep = select_instances(non_empty, self.max_instances, rng) if train else np.arange(n)

        h, w = resized_shape(height, width, self.image_size)
        sx, sy = w / width, h / height
        boxes = np.zeros((len(keep), 4), dtype=np.float32)
        points_per = self.num_points + self.num_negative_points
        points = np.zeros((len(keep), points_per, 2), dtype=np.float32)
        labels = np.full((len(keep), points_per), PAD_LABEL, dtype=np.int64)
        for row, index in enumerate(keep):
            box = self._instance_box(boxes_xywh[index], masks[index], (height, width), extents[index])
            if train:
                # SAM's cap is 20 px at a 1024 input; scale it to the original frame
                cap = self.box_jitter_max * self.image_size / 1024 / max(sx, sy)
                box = jitter_box(box, self.box_jitter, cap, (height, width), rng)
                pts, lab = sample_points(
                    masks[index], box, self.num_points, self.num_negative_points, rng, extent=extents[index]
                )
                points[row], labels[row] = pts * np.array([sx, sy], dtype=np.float32), lab
            boxes[row] = box * np.array([sx, sy, sx, sy], dtype=np.float32)

        # a recorded view (no pixels: the teacher holds its embedding) or one just recorded carries its key
        key = sample.get("view_key")
        if key is None and image is not None and self.cache_keys:
            key = self.cache_key(image)
        pixels = self._pixels(image, (h, w)) if image is not None else None
        return {
            "pixel_values": pixels,
            "boxes": boxes,
            "points": points,
            "point_labels": labels,
            "targets": masks_to_input_frame(masks, (h, w), self.image_size, indices=keep, extents=extents),
            "image_id": int(sample.get("image_id", -1)),
            "annotation_ids": [ann_ids[i] for i in keep],
            "category_ids": [cat_ids[i] for i in keep],
            "orig_size": (int(height), int(width)),
            "resized_size": (int(h), int(w)),
            "cache_key": key,
            "seed": int(seed),
            "train": bool(train),
        }

    def sample_seed(self, sample: dict[str, Any]) -> int:
        extra = sample.get("extra") or {}
        if "seed" in extra:
            return int(extra["seed"])
        digest = hashlib.blake2b(f"{self.seed}|{sample.get('image_id')}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def cache_key(self, image: np.ndarray) -> str:
        """Key of the encoder input: the image's content plus the preprocessing."""
        h = hashlib.blake2b(digest_size=20)
        h.update(self.preprocessing_id.encode())
        h.update(str(image.shape).encode())
        h.update(np.ascontiguousarray(image).data)
        return h.hexdigest()

    @staticmethod
    def _instance_box(
        box_xywh: np.ndarray, mask: np.ndarray, bounds: tuple[int, int], extent: np.ndarray | None = None
    ) -> np.ndarray:
        x, y, w, h = (float(v) for v in box_xywh)
        if w >= 1 and h >= 1:
            return np.array([x, y, x + w, y + h], dtype=np.float32)
        tight = mask_box_xyxy(mask, extent)
        if tight is not None:
            return tight
        # nothing to go on (an empty mask with a degenerate box): a one-pixel box where it says
        height, width = bounds
        x0, y0 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
        return np.array([x0, y0, x0 + 1, y0 + 1], dtype=np.float32)

    def _pixels(self, image: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
        """The image resized (bilinear, on uint8) into the top-left of a zero ``(3, size,
        size)`` uint8 square. An image of another dtype is rounded and clipped to 0..255
        first (samples are read as uint8; the resize needed uint8 already)."""
        from PIL import Image

        h, w = resized
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        if (h, w) != image.shape[:2]:
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))
        out = np.zeros((3, self.image_size, self.image_size), dtype=np.uint8)
        out[:, :h, :w] = image.transpose(2, 0, 1)
        return out

    def finish(self, pixel_values: Any, image_sizes: Any, dtype: Any = None) -> Any:
        """:func:`finish_pixels` with this preprocessor's mean and std."""
        return finish_pixels(pixel_values, image_sizes, self.mean, self.std, dtype)

    # -- a batch ------------------------------------------------------------------------
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack items; pad instances to the batch's largest count (at least one) with
        ``instance_valid`` marking real ones, so every image shares one decoder call.
        ``pixel_values`` stay uint8 ``(B, 3, size, size)`` (see :func:`finish_pixels`).
        A recorded view's item has no pixels: ``pixel_values`` then holds only the
        rows ``pixel_rows`` lists (``None`` when every row has them).
        ``instance_index`` lists the real ones' flat positions and ``image_sizes`` each
        image's (height, width) inside the padded square: the loss reads both on the
        device without waiting on it, and never needs a per-pixel region mask."""
        import torch

        if not items:
            raise ValueError("cannot collate an empty list of samples")
        size = self.image_size
        k = max(1, max(len(it["boxes"]) for it in items))
        p = self.num_points + self.num_negative_points
        b = len(items)
        boxes = torch.zeros(b, k, 4)
        boxes[..., 2:] = 1.0  # a harmless 1-px box for padding slots
        points = torch.zeros(b, k, p, 2)
        labels = torch.full((b, k, p), PAD_LABEL, dtype=torch.long)
        targets = torch.zeros(b, k, size, size, dtype=torch.uint8)
        valid = torch.zeros(b, k, dtype=torch.bool)
        image_sizes = torch.zeros(b, 2, dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["boxes"])
            boxes[i, :n] = torch.from_numpy(it["boxes"])
            points[i, :n] = torch.from_numpy(it["points"])
            labels[i, :n] = torch.from_numpy(it["point_labels"])
            targets[i, :n] = torch.from_numpy(it["targets"])
            valid[i, :n] = True
            image_sizes[i] = torch.tensor(it["resized_size"])
        train = all(it["train"] for it in items)
        kind = "box"
        if train and self.prompt == "points":
            kind = "points"
        elif train and self.prompt == "mixed":
            kind = random.Random(sum(it["seed"] for it in items)).choice(["box", "points"])
        pixel_values, pixel_rows = _stack_pixels(items, size)
        return {
            "pixel_values": pixel_values,
            "pixel_rows": pixel_rows,
            "input_boxes": boxes,
            "input_points": points,
            "input_labels": labels,
            "target_masks": targets,
            "instance_valid": valid,
            "instance_index": torch.nonzero(valid.reshape(-1)).reshape(-1),
            "image_sizes": image_sizes,
            "prompt_kind": kind,
            # one point is ambiguous (part or whole?): SAM then predicts three masks and learns from the best
            "multimask": kind == "points" and p == 1,
            "image_ids": [it["image_id"] for it in items],
            "annotation_ids": [it["annotation_ids"] for it in items],
            "category_ids": [it["category_ids"] for it in items],
            "orig_sizes": [it["orig_size"] for it in items],
            "resized_sizes": [it["resized_size"] for it in items],
            "cache_keys": [it["cache_key"] for it in items],
        }


def _stack_pixels(items: Sequence[dict[str, Any]], size: int) -> tuple[Any, list[int] | None]:
    """The items' uint8 pixels stacked, and which rows have them: ``None`` when all do; recorded
    views come without pixels (their embeddings are cached)."""
    import torch

    present = [i for i, it in enumerate(items) if it["pixel_values"] is not None]
    if not present:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), []
    stacked = torch.from_numpy(np.stack([items[i]["pixel_values"] for i in present]))
    return stacked, None if len(present) == len(items) else present


def finish_pixels(pixel_values: Any, image_sizes: Any, mean: Any, std: Any, dtype: Any = None) -> Any:
    """SAM's normalised encoder input from collated uint8 ``pixel_values`` ``(B, 3, S, S)``,
    computed where they are (the device, after the copy).

    ``(x - 255 mean) / (255 std)`` in float32 (the former worker-side arithmetic, so the
    same bits), zero outside each image's ``(h, w)`` of ``image_sizes`` ``(B, 2)`` (the
    padding was 0 after normalisation), then cast to ``dtype`` (the encoder's; ``None``
    keeps float32). Floating-point ``pixel_values`` are taken as already normalised and
    returned as they are.
    """
    import torch

    if pixel_values.is_floating_point():
        return pixel_values
    device = pixel_values.device
    # 255 mean and 255 std computed in float32 on the host, as the workers did
    offset, scale = channel_constants(tuple(tuple(float(x) for x in np.asarray(v, np.float32) * 255)
                                            for v in (mean, std)), device)
    outside = ~padding_mask(image_sizes, pixel_values.shape[-2], pixel_values.shape[-1], device)
    normalised = pixel_values.to(torch.float32).sub_(offset).div_(scale).masked_fill_(outside[:, None], 0.0)
    return normalised if dtype is None else normalised.to(dtype)
