"""A mask as one polygon, for students that learn outlines (YOLO segmentation labels).

The outline is traced by marching squares (contourpy, already installed with matplotlib) at
level 0.5 on the mask, so it runs between the pixels inside and outside: shifted by half a
pixel, it lies on the pixel edges in COCO's continuous coordinates (pixel ``i`` spans
``[i, i+1]``), cutting each corner pixel diagonally. A single-pixel mask is a small diamond,
not a degenerate polygon.

One object must stay one label line, so only the largest closed outline is kept: holes are
filled and smaller disconnected parts are left out (the caller counts such masks).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def largest_outline(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The largest closed outline of a binary mask as ``(N, 2)`` x, y points in continuous
    pixel coordinates (collinear points removed), and how many outlines the mask has (holes
    and parts included); ``(None, 0)`` for an empty mask."""
    import contourpy

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None, 0
    x0, y0 = int(xs.min()), int(ys.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    # a zero border closes the outlines of parts touching the crop's edge
    padded = np.pad(crop.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type=contourpy.LineType.Separate).lines(0.5)
    loops = [line for line in lines if len(line) >= 4]  # closed: first point repeated
    if not loops:
        return None, 0
    best = max(loops, key=_area)
    # -1 for the border, +0.5 from pixel-centre indices to continuous coordinates
    points = best[:-1] + np.array([x0 - 0.5, y0 - 0.5])
    return _without_collinear(points), len(loops)


def _area(loop: np.ndarray) -> float:
    x, y = loop[:, 0], loop[:, 1]
    return abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))) / 2


def _without_collinear(points: np.ndarray) -> np.ndarray:
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - \
        (points[:, 1] - before[:, 1]) * (after[:, 0] - points[:, 0])
    kept = points[np.abs(cross) > 1e-9]
    return kept if len(kept) >= 3 else points


def polygon_line(segmentation: Any, cls: int, width: int, height: int, *, where: str) -> tuple[str | None, bool]:
    """``class x1 y1 x2 y2 ...`` (normalised) of a COCO segmentation, and whether the mask
    had more than one outline (holes or parts dropped); ``None`` for an empty mask.

    :raises DataError: the segmentation cannot be decoded for its image (naming ``where``).
    """
    from teacherkit.data.masks import segmentation_to_mask

    mask = segmentation_to_mask(segmentation, height, width, where=where)
    points, outlines = largest_outline(mask)
    if points is None:
        return None, False
    normalised = points / np.array([width, height], dtype=np.float64)
    values = " ".join(f"{v:.6f}" for v in np.clip(normalised, 0.0, 1.0).ravel())
    return f"{cls} {values}", outlines > 1
