"""The straightforward SAM preprocessing that the fast one replaced: every mask resized
whole, points searched in the whole image. The equivalence tests
(``test_sam_preprocess_equivalence.py``) hold the fast path to it at small sizes, and
``bench/sam_preprocess.py`` times both and checks them at 1024 px (it loads this file by
path: the oracle has one home, next to the tests that guard it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from teacherkit_sam.masks import resized_shape
from teacherkit_sam.preprocess import SAM_MEAN, SAM_STD, SamPreprocessor, finish_pixels
from teacherkit_sam.prompts import PAD_LABEL, jitter_box, make_rng, select_instances


def reference_targets(masks: np.ndarray, resized: tuple[int, int], size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    out = np.zeros((masks.shape[0], size, size), dtype=np.uint8)
    if masks.shape[0] == 0:
        return out
    h, w = resized
    src = torch.from_numpy(masks.astype(np.float32)).unsqueeze(1)
    if (h, w) != tuple(masks.shape[1:]):
        src = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    out[:, :h, :w] = (src[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return out


def reference_points(mask, box, num_positive, num_negative, rng):
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


def reference_box(box_xywh, mask, bounds):
    x, y, w, h = (float(v) for v in box_xywh)
    if w >= 1 and h >= 1:
        return np.array([x, y, x + w, y + h], dtype=np.float32)
    ys, xs = np.nonzero(mask)
    if len(xs):
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    height, width = bounds
    x0, y0 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    return np.array([x0, y0, x0 + 1, y0 + 1], dtype=np.float32)


def reference_pixels(pre: SamPreprocessor, image: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = resized
    if (h, w) != image.shape[:2]:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))
    mean = np.array(pre.mean, dtype=np.float32) * 255
    std = np.array(pre.std, dtype=np.float32) * 255
    out = np.zeros((3, pre.image_size, pre.image_size), dtype=np.float32)
    out[:, :h, :w] = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)
    return out


def reference_call(pre: SamPreprocessor, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
    """``SamPreprocessor.__call__`` as it was before the crop-wise rewrite (no validation)."""
    image = np.asarray(sample["image"])
    height, width = image.shape[:2]
    masks = np.asarray(sample["masks"], dtype=np.uint8)
    n = masks.shape[0]
    boxes_xywh = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
    seed = pre.sample_seed(sample)
    rng = make_rng(seed)
    non_empty = masks.reshape(n, -1).any(axis=1) if n else np.zeros(0, dtype=bool)
    keep = select_instances(non_empty, pre.max_instances, rng) if train else np.arange(n)
    h, w = resized_shape(height, width, pre.image_size)
    sx, sy = w / width, h / height
    per = pre.num_points + pre.num_negative_points
    boxes = np.zeros((len(keep), 4), dtype=np.float32)
    points = np.zeros((len(keep), per, 2), dtype=np.float32)
    labels = np.full((len(keep), per), PAD_LABEL, dtype=np.int64)
    for row, index in enumerate(keep):
        box = reference_box(boxes_xywh[index], masks[index], (height, width))
        if train:
            cap = pre.box_jitter_max * pre.image_size / 1024 / max(sx, sy)
            box = jitter_box(box, pre.box_jitter, cap, (height, width), rng)
            pts, lab = reference_points(masks[index], box, pre.num_points, pre.num_negative_points, rng)
            points[row], labels[row] = pts * np.array([sx, sy], dtype=np.float32), lab
        boxes[row] = box * np.array([sx, sy, sx, sy], dtype=np.float32)
    return {
        "pixel_values": reference_pixels(pre, image, (h, w)),
        "boxes": boxes,
        "points": points,
        "point_labels": labels,
        "targets": reference_targets(masks[keep], (h, w), pre.image_size),
        "annotation_ids": [int(v) for v in np.asarray(sample["annotation_ids"])[keep]],
        "resized_size": (h, w),
        "seed": int(seed),
    }


def targets_mismatch(fast: np.ndarray, reference: np.ndarray) -> str | None:
    """Why ``fast`` targets are not equivalent to the reference's, or ``None``. Allowed: at
    most 1 apart anywhere, on almost no pixels (in practice identical: the fast path
    computes torch's own float32 values); never a faint target lost or gained."""
    if fast.shape != reference.shape or fast.dtype != np.uint8:
        return f"shape/dtype {fast.shape} {fast.dtype} vs {reference.shape} {reference.dtype}"
    diff = np.abs(fast.astype(np.int16) - reference.astype(np.int16))
    differing, allowed = np.count_nonzero(diff), max(2, reference.size // 100_000)
    if diff.max(initial=0) > 1 or differing > allowed:
        return f"targets differ by up to {diff.max(initial=0)} on {differing} pixels (allowed: 1 on {allowed})"
    present = [(f.max(initial=0) > 0, r.max(initial=0) > 0) for f, r in zip(fast, reference)]
    lost = [i for i, (f, r) in enumerate(present) if f != r]
    return f"instances {lost} empty on one side only" if lost else None


def preprocessing_mismatches(fast: dict[str, Any], reference: dict[str, Any], *, mean: Any = SAM_MEAN,
                             std: Any = SAM_STD) -> list[str]:
    """Where one preprocessed sample differs from the reference's: prompts exactly (same
    seed, so the same instances, jitter and points), pixels to 1e-5 once the fast path's
    uint8 pixels are normalised as the teacher does on the device, targets as
    :func:`targets_mismatch` allows."""
    import torch

    out = [key for key in ("boxes", "points", "point_labels") if not np.array_equal(fast[key], reference[key])]
    shipped = torch.from_numpy(fast["pixel_values"][None])
    fast_pixels = finish_pixels(shipped, [fast["resized_size"]], mean, std)[0].numpy()
    pixels = np.abs(fast_pixels - reference["pixel_values"]).max(initial=0)
    if pixels > 1e-5:
        out.append(f"pixel_values differ by {pixels:g}")
    targets = targets_mismatch(np.asarray(fast["targets"]), reference["targets"])
    if targets:
        out.append(targets)
    out += [key for key in ("annotation_ids", "resized_size", "seed")
            if list(np.ravel(fast[key])) != list(np.ravel(reference[key]))]
    return out


def edge_case_masks(height: int, width: int, seed: int) -> np.ndarray:
    """Seven masks that stress resizing: one pixel, border-touching, ragged, empty,
    an ellipse, the whole frame, the last row."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((7, height, width), np.uint8)
    masks[0, rng.integers(height), rng.integers(width)] = 1  # one pixel: a faint target when shrunk
    masks[1, : max(1, height // 3), : max(1, width // 4)] = 1  # touching the top-left border
    corner = masks[2, height // 2 :, width - max(1, width // 5) :]
    corner[...] = rng.random(corner.shape) < 0.6  # ragged, touching the bottom-right border
    # masks[3] stays empty
    yy, xx = np.mgrid[:height, :width]
    masks[4] = ((yy - 0.4 * height) / (0.3 * height + 1)) ** 2 + ((xx - 0.6 * width) / (0.2 * width + 1)) ** 2 < 1
    masks[5] = 1  # the whole image (resized whole, not crop-wise)
    masks[6, height - 1, :] = 1  # the last row, full width
    return masks
