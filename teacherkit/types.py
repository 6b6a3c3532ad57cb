"""The raw sample passed from the dataset through augmentation to a preprocessor."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np


class Sample(TypedDict, total=False):
    """One image and its annotations, in original pixels, before any model transform.

    ``boxes`` are COCO ``[x, y, w, h]`` in pixels (float32, shape ``(N, 4)``);
    ``labels`` are contiguous class indices (``DatasetInfo.class_mapping``) aligned
    with ``category_ids`` and ``annotation_ids``; ``masks`` is ``(N, H, W)`` uint8 or
    ``None`` when the dataset has no masks. Augmentation must keep every per-instance
    array aligned and may drop instances.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    image_id: int
    file_name: str
    orig_size: tuple[int, int]  # (height, width) of the image file as read
    boxes: np.ndarray
    labels: np.ndarray
    category_ids: np.ndarray
    annotation_ids: np.ndarray
    iscrowd: np.ndarray
    masks: np.ndarray | None
    extra: dict[str, Any]
