"""Instance masks packed eight to a byte, so a pipeline warps them in one pass.

albumentations warps an ``(N, H, W)`` mask stack one mask at a time; on 1024-px images
with a handful of instances that costs more than warping the image. Binary masks fit in
one bit each, and nearest-neighbour resampling copies pixel values unchanged, so
instance ``i`` travels as bit ``i % 8`` of channel ``i // 8`` of a single
``(H, W, ceil(N / 8))`` uint8 mask. The pipeline forces nearest-neighbour mask
interpolation on every transform, which is what keeps the bits exact.

Boxes are read straight from the packed planes (an OR over rows and columns), which is
far cheaper than unpacking first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_binary(masks: np.ndarray) -> np.ndarray:
    """``masks`` as 0/1 uint8 (any non-zero pixel is foreground), without a copy when
    it already is."""
    if masks.dtype == np.bool_:
        return masks.view(np.uint8)
    if masks.dtype == np.uint8 and (masks.size == 0 or masks.max() <= 1):
        return masks
    return (masks != 0).astype(np.uint8)


def pack(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` 0/1 masks → ``(H, W, ceil(N / 8))`` uint8 bit planes."""
    n, height, width = masks.shape
    planes = np.zeros(((n + 7) // 8, height, width), np.uint8)
    shifted = np.empty((height, width), np.uint8)
    for i in range(n):
        np.left_shift(masks[i], i % 8, out=shifted)
        np.bitwise_or(planes[i // 8], shifted, out=planes[i // 8])
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def unpack(packed: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """The masks of instances ``indices`` from ``(H, W, C)`` bit planes, as
    ``(len(indices), H, W)`` 0/1 uint8."""
    packed = packed.reshape(packed.shape[0], packed.shape[1], -1)
    planes: dict[int, np.ndarray] = {}
    out = np.empty((len(indices), packed.shape[0], packed.shape[1]), np.uint8)
    for k, i in enumerate(indices):
        plane = planes.get(i // 8)
        if plane is None:
            plane = planes[i // 8] = np.ascontiguousarray(packed[..., i // 8])
        np.right_shift(plane, i % 8, out=out[k])
        np.bitwise_and(out[k], 1, out=out[k])
    return out


def packed_boxes(packed: np.ndarray, n: int) -> np.ndarray:
    """Tight COCO ``[x, y, w, h]`` boxes of the ``n`` masks in ``packed``; zeros for an
    empty mask."""
    packed = packed.reshape(packed.shape[0], packed.shape[1], -1)
    # reduce each 2-D plane: a reduction over (H, W, 1) runs an inner loop of length 1
    planes = [np.ascontiguousarray(packed[..., c]) for c in range(packed.shape[2])]
    rows = np.stack([np.bitwise_or.reduce(p, axis=1) for p in planes], axis=1)  # (H, C): bits present per row
    cols = np.stack([np.bitwise_or.reduce(p, axis=0) for p in planes], axis=1)  # (W, C)
    return _boxes(rows, cols, n, lambda lines, i: (lines[:, i // 8] >> (i % 8)) & 1)


def pixel_counts(masks: np.ndarray) -> np.ndarray:
    """Foreground pixels of each of ``(N, H, W)`` masks."""
    return np.array([np.count_nonzero(m) for m in masks], dtype=np.int64)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight COCO ``[x, y, w, h]`` boxes of ``(N, H, W)`` masks; zeros for an empty mask."""
    rows = masks.any(axis=2).T  # (H, N)
    cols = masks.any(axis=1).T  # (W, N)
    return _boxes(rows, cols, len(masks), lambda lines, i: lines[:, i])


def _boxes(rows: np.ndarray, cols: np.ndarray, n: int, bit) -> np.ndarray:
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        ys = np.flatnonzero(bit(rows, i))
        xs = np.flatnonzero(bit(cols, i))
        if len(xs) and len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0])
    return boxes
