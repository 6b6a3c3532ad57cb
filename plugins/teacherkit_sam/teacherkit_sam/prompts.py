"""Prompts sampled from ground truth: which instances train this step, jittered
boxes, and positive/negative points drawn from masks.

Everything takes an explicit :class:`numpy.random.Generator`, so the same seed gives
the same instances, boxes and points in any process (DataLoader workers, resumes).
Coordinates are ``(x, y)`` pixels of whatever frame the caller passes.
"""

from __future__ import annotations

import numpy as np

#: SAM's label for a padding point the prompt encoder must ignore.
PAD_LABEL = -10


def make_rng(seed: int) -> np.random.Generator:
    """A generator for one sample; ``seed`` may be any int (negative ones are folded)."""
    return np.random.default_rng(np.random.SeedSequence(abs(int(seed)) % (2**63)))


def select_instances(eligible: np.ndarray, max_instances: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_instances`` eligible instances, drawn without
    replacement and returned in ascending order (``None``: all eligible)."""
    candidates = np.flatnonzero(eligible)
    if max_instances is None or len(candidates) <= max_instances:
        return candidates
    return np.sort(rng.choice(candidates, size=max_instances, replace=False))


def jitter_box(
    box: np.ndarray, fraction: float, max_pixels: float, bounds: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Move each corner of an ``[x0, y0, x1, y1]`` box by Gaussian noise whose std-dev
    is ``fraction`` of the box side, capped at ``max_pixels`` (the SAM paper's recipe),
    then clip to the image ``bounds`` ``(h, w)`` keeping at least one pixel of size."""
    box = np.asarray(box, dtype=np.float32)
    if fraction <= 0:
        return box.copy()
    w, h = box[2] - box[0], box[3] - box[1]
    std = np.array([w, h, w, h], dtype=np.float32) * fraction
    noise = np.clip(rng.normal(0.0, 1.0, size=4).astype(np.float32) * std, -max_pixels, max_pixels)
    out = box + noise
    height, width = bounds
    out[[0, 2]] = np.clip(out[[0, 2]], 0, width)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, height)
    x0, x1 = sorted((float(out[0]), float(out[2])))
    y0, y1 = sorted((float(out[1]), float(out[3])))
    if x1 - x0 < 1:
        x1 = min(x0 + 1, width)
        x0 = x1 - 1
    if y1 - y0 < 1:
        y1 = min(y0 + 1, height)
        y0 = y1 - 1
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def sample_points(
    mask: np.ndarray,
    box: np.ndarray | None,
    num_positive: int,
    num_negative: int,
    rng: np.random.Generator,
    *,
    extent: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points and labels for one instance.

    Positive points (label 1) are drawn uniformly from the mask's pixels; negative
    points (label 0) from pixels inside ``box`` (``[x0, y0, x1, y1]``) but outside the
    mask — the confusable surroundings — falling back to anywhere outside the mask.
    When a kind has no pixel to draw from (an empty mask, a mask filling the image)
    its slots hold padding points (label :data:`PAD_LABEL`) so shapes stay fixed.

    :param extent: the mask's ``[y0, y1, x0, x1]`` pixel extent
        (:func:`teacherkit_sam.masks.mask_extents`), when the caller has it: positives are
        then searched inside it only (negatives inside ``box`` first), which gives the
        same pixels in the same (row-major) order, hence the same draws, as searching
        the whole image.
    :return: ``points (P, 2)`` float32 ``(x, y)`` and ``labels (P,)`` int64, with
        ``P = num_positive + num_negative``.
    """
    total = num_positive + num_negative
    points = np.zeros((total, 2), dtype=np.float32)
    labels = np.full(total, PAD_LABEL, dtype=np.int64)
    if num_positive:
        y0, y1, x0, x1 = (0, mask.shape[0], 0, mask.shape[1]) if extent is None else (int(v) for v in extent)
        drawn = _draw_pixels(mask[y0:y1, x0:x1], False, num_positive, rng)
        if drawn is not None:
            points[:num_positive] = np.stack([drawn[1] + x0, drawn[0] + y0], axis=1)
            labels[:num_positive] = 1
    if num_negative:
        drawn = None
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in np.round(box))
            # the slice the whole-image search masked with (negative bounds clamp to 0)
            r0, r1 = min(max(y0, 0), mask.shape[0]), min(max(y1, 0), mask.shape[0])
            c0, c1 = min(max(x0, 0), mask.shape[1]), min(max(x1, 0), mask.shape[1])
            drawn = _draw_pixels(mask[r0:r1, c0:c1], True, num_negative, rng)
        if drawn is None:
            r0 = c0 = 0
            drawn = _draw_pixels(mask, True, num_negative, rng)
        if drawn is not None:
            points[num_positive:] = np.stack([drawn[1] + c0, drawn[0] + r0], axis=1)
            labels[num_positive:] = 0
    return points, labels


def _draw_pixels(
    region: np.ndarray, background: bool, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """``count`` pixels of ``region`` drawn uniformly, with replacement only when there
    are fewer: the non-zero ones, or the zero ones when ``background``. ``None`` when
    there is none.

    Draws exactly as ``rng.choice`` over ``np.nonzero``'s (row-major) pixel list would,
    without building the list: pixels are counted per row, and only the rows of the
    drawn pixels are searched.

    :return: ``(rows, cols)`` int64 arrays in ``region``'s coordinates.
    """
    per_row = np.count_nonzero(region, axis=1) if region.size else np.zeros(len(region), np.intp)
    if background:
        per_row = region.shape[1] - per_row
    ends = np.cumsum(per_row)
    total = int(ends[-1]) if len(ends) else 0
    if total == 0:
        return None
    pick = rng.choice(total, size=count, replace=total < count)
    rows = np.searchsorted(ends, pick, side="right")
    cols = np.empty(count, dtype=np.int64)
    for i, (k, r) in enumerate(zip(pick, rows)):
        line = region[r] == 0 if background else region[r]
        cols[i] = np.flatnonzero(line)[k - (ends[r] - per_row[r])]
    return rows.astype(np.int64), cols
