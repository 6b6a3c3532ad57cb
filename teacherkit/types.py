"""The raw sample passed from the dataset through augmentation to a preprocessor."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np


class Sample(TypedDict, total=False):
    """One image and its annotations, in original pixels, before any model transform.

    ``boxes`` are COCO ``[x, y, w, h]`` in pixels (float32, shape ``(N, 4)``);
    ``labels`` are contiguous class indices (``DatasetInfo.class_mapping``) aligned
    with ``category_ids`` and ``annotation_ids``; ``masks`` is ``(N, H, W)`` uint8 or
    ``None`` when the dataset has no masks. ``keypoints`` is ``(N, K, 3)`` float32
    ``(x, y, visibility)`` in pixels, visibility 0 where an instance has none (``K`` is 0
    when no instance has keypoints). An instance a plugin's kind keeps without a box (a
    keypoint-only annotation) has the box ``[0, 0, 0, 0]``. Augmentation must keep every
    per-instance array aligned and may drop instances.
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
    keypoints: np.ndarray
    extra: dict[str, Any]
