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
) -> tuple[np.ndarray, np.ndarray]:
    """Points and labels for one instance.

    Positive points (label 1) are drawn uniformly from the mask's pixels; negative
    points (label 0) from pixels inside ``box`` (``[x0, y0, x1, y1]``) but outside the
    mask — the confusable surroundings — falling back to anywhere outside the mask.
    When a kind has no pixel to draw from (an empty mask, a mask filling the image)
    its slots hold padding points (label :data:`PAD_LABEL`) so shapes stay fixed.

    :return: ``points (P, 2)`` float32 ``(x, y)`` and ``labels (P,)`` int64, with
        ``P = num_positive + num_negative``.
    """
    total = num_positive + num_negative
    points = np.zeros((total, 2), dtype=np.float32)
    labels = np.full(total, PAD_LABEL, dtype=np.int64)
    ys, xs = np.nonzero(mask)
    if len(xs) and num_positive:
        pick = rng.choice(len(xs), size=num_positive, replace=len(xs) < num_positive)
        points[:num_positive] = np.stack([xs[pick], ys[pick]], axis=1)
        labels[:num_positive] = 1
    if num_negative:
        outside = mask == 0
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in np.round(box))
            near = np.zeros_like(outside)
            near[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
            if (outside & near).any():
                outside = outside & near
        ny, nx = np.nonzero(outside)
        if len(nx):
            pick = rng.choice(len(nx), size=num_negative, replace=len(nx) < num_negative)
            points[num_positive:] = np.stack([nx[pick], ny[pick]], axis=1)
            labels[num_positive:] = 0
    return points, labels
