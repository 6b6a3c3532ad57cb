"""The fast SAM preprocessing (crop-wise mask resizing, points searched inside the mask's
extent, table-driven normalisation) against a straightforward reference: the
whole-frame implementation it replaced, kept here as private functions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import load_samples, make_sample

from teacherkit_sam.masks import mask_extents, masks_to_input_frame, resized_shape
from teacherkit_sam.preprocess import SamPreprocessor
from teacherkit_sam.prompts import PAD_LABEL, jitter_box, make_rng, sample_points, select_instances

DOMAIN_B = Path(__file__).resolve().parents[2] / "examples" / "domain_b" / "train.json"


# -- the reference: every mask resized whole, points searched in the whole image ---------------
def _reference_targets(masks: np.ndarray, resized: tuple[int, int], size: int) -> np.ndarray:
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


def _reference_points(mask, box, num_positive, num_negative, rng):
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


def _reference_box(box_xywh, mask, bounds):
    x, y, w, h = (float(v) for v in box_xywh)
    if w >= 1 and h >= 1:
        return np.array([x, y, x + w, y + h], dtype=np.float32)
    ys, xs = np.nonzero(mask)
    if len(xs):
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    height, width = bounds
    x0, y0 = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
    return np.array([x0, y0, x0 + 1, y0 + 1], dtype=np.float32)


def _reference_pixels(pre: SamPreprocessor, image: np.ndarray, resized: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = resized
    if (h, w) != image.shape[:2]:
        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))
    mean = np.array(pre.mean, dtype=np.float32) * 255
    std = np.array(pre.std, dtype=np.float32) * 255
    out = np.zeros((3, pre.image_size, pre.image_size), dtype=np.float32)
    out[:, :h, :w] = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)
    return out


def _reference_call(pre: SamPreprocessor, sample: dict[str, Any], *, train: bool) -> dict[str, Any]:
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
        box = _reference_box(boxes_xywh[index], masks[index], (height, width))
        if train:
            cap = pre.box_jitter_max * pre.image_size / 1024 / max(sx, sy)
            box = jitter_box(box, pre.box_jitter, cap, (height, width), rng)
            pts, lab = _reference_points(masks[index], box, pre.num_points, pre.num_negative_points, rng)
            points[row], labels[row] = pts * np.array([sx, sy], dtype=np.float32), lab
        boxes[row] = box * np.array([sx, sy, sx, sy], dtype=np.float32)
    return {
        "pixel_values": _reference_pixels(pre, image, (h, w)),
        "boxes": boxes,
        "points": points,
        "point_labels": labels,
        "targets": _reference_targets(masks[keep], (h, w), pre.image_size),
        "annotation_ids": [int(v) for v in np.asarray(sample["annotation_ids"])[keep]],
        "resized_size": (h, w),
        "seed": int(seed),
    }


def _assert_targets_equivalent(fast: np.ndarray, reference: np.ndarray) -> None:
    """At most 1 apart anywhere; in practice identical (the fast path computes torch's own
    float32 values), so allow almost no differing pixels, and never lose a faint target."""
    assert fast.shape == reference.shape and fast.dtype == np.uint8
    diff = np.abs(fast.astype(np.int16) - reference.astype(np.int16))
    assert diff.max(initial=0) <= 1
    assert np.count_nonzero(diff) <= max(2, reference.size // 100_000)
    for f, r in zip(fast, reference):
        assert (f.max(initial=0) > 0) == (r.max(initial=0) > 0)


# -- masks ----------------------------------------------------------------------------------------
def _edge_case_masks(height: int, width: int, seed: int) -> np.ndarray:
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


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (800, 1200, 1024),  # landscape, shrunk (the benchmark's frame)
        (1200, 800, 1024),  # portrait, shrunk
        (96, 128, 1024),  # smaller than image_size: upscaled
        (128, 96, 1024),
        (37, 50, 256),
        (400, 400, 128),  # square, shrunk ~3x
        (1024, 700, 1024),  # only the width changes
        (700, 1024, 1024),  # only the height changes
        (600, 900, 900),  # nothing changes
        (3000, 2000, 256),  # shrunk ~12x: more taps than the 0/1 table holds
        (61, 1500, 64),
    ],
)
def test_targets_match_the_whole_frame_resize(height, width, size):
    masks = _edge_case_masks(height, width, seed=height + width)
    resized = resized_shape(height, width, size)
    fast = masks_to_input_frame(masks, resized, size)
    reference = _reference_targets(masks, resized, size)
    _assert_targets_equivalent(fast, reference)
    assert fast[3].max() == 0  # empty stays empty
    h, w = resized
    assert fast[:, h:].max(initial=0) == 0 and fast[:, :, w:].max(initial=0) == 0  # padding stays zero
    if h * w < height * width <= 100 * h * w:
        # the one-pixel object survives (shrunk over ~250x, its share of an output pixel
        # rounds to 0 in uint8 for the reference too)
        assert 0 < fast[0].max() <= 255


def test_one_pixel_objects_shrunk_below_a_pixel_stay_faint_targets_everywhere():
    height, width, size = 900, 1350, 256  # 5.3x smaller: each pixel covers a fraction of an output
    resized = resized_shape(height, width, size)
    rng = np.random.default_rng(4)
    masks = np.zeros((40, height, width), np.uint8)
    ys = np.r_[0, height - 1, rng.integers(0, height, 38)]
    xs = np.r_[0, width - 1, rng.integers(0, width, 38)]  # two in the corners
    masks[np.arange(40), ys, xs] = 1
    fast = masks_to_input_frame(masks, resized, size)
    _assert_targets_equivalent(fast, _reference_targets(masks, resized, size))
    peaks = fast.reshape(40, -1).max(axis=1)
    assert np.all(peaks > 0) and np.all(peaks < 64)


def test_selected_masks_with_given_extents_equal_copied_out_masks():
    masks = _edge_case_masks(300, 450, seed=1)
    keep = np.array([4, 0, 6, 3])
    resized = resized_shape(300, 450, 128)
    direct = masks_to_input_frame(masks, resized, 128, indices=keep, extents=mask_extents(masks))
    np.testing.assert_array_equal(direct, masks_to_input_frame(masks[keep], resized, 128))
    assert masks_to_input_frame(masks, resized, 128, indices=np.zeros(0, np.int64)).shape == (0, 128, 128)


def test_masks_with_values_above_one_follow_the_reference():
    masks = np.zeros((2, 120, 200), np.uint8)
    masks[0, 10:50, 20:90] = 255  # not 0/1: resized whole, as the reference does
    masks[1, 60:70, 100:130] = 1
    resized = resized_shape(120, 200, 64)
    np.testing.assert_array_equal(masks_to_input_frame(masks, resized, 64), _reference_targets(masks, resized, 64))


def test_extents_are_the_tight_pixel_ranges():
    masks = _edge_case_masks(50, 70, seed=2)
    for mask, (y0, y1, x0, x1) in zip(masks, mask_extents(masks)):
        ys, xs = np.nonzero(mask)
        if len(ys):
            assert (y0, y1, x0, x1) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        else:
            assert (y0, y1, x0, x1) == (0, 0, 0, 0)


# -- points ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "box", [None, [10, 10, 40, 40], [0, 0, 64, 48], [-5, -5, 3, 3], [70, 50, 90, 60], [20, 12, 31, 26]]
)
def test_points_searched_inside_the_extent_are_the_same_draws(box):
    mask = np.zeros((48, 64), np.uint8)
    mask[12:26, 20:31] = 1
    mask[15:18, 22:25] = 0  # a hole
    mask[47, 63] = 1  # a stray pixel in the corner
    extent = mask_extents(mask[None])[0]
    box = None if box is None else np.asarray(box, np.float32)
    for seed, (pos, neg), given in itertools.product(range(5), [(1, 0), (3, 2), (0, 4), (200, 1)], (extent, None)):
        fast = sample_points(mask, box, pos, neg, make_rng(seed), extent=given)
        reference = _reference_points(mask, box, pos, neg, make_rng(seed))
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[1], reference[1])


def test_points_of_empty_and_full_masks_are_padding_like_before():
    for mask in (np.zeros((20, 30), np.uint8), np.ones((20, 30), np.uint8)):
        extent = mask_extents(mask[None])[0]
        fast = sample_points(mask, np.array([2, 2, 10, 10], np.float32), 2, 2, make_rng(3), extent=extent)
        reference = _reference_points(mask, np.array([2, 2, 10, 10], np.float32), 2, 2, make_rng(3))
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[1], reference[1])


# -- the whole preprocessing ------------------------------------------------------------------------
def _samples() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    for index, (height, width) in enumerate([(240, 360), (360, 240), (64, 96), (130, 130)]):
        masks = _edge_case_masks(height, width, seed=index)
        boxes = np.zeros((len(masks), 4), np.float32)  # degenerate: boxes come from the masks
        boxes[4] = [3, 4, width / 2, height / 3]  # a given box
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out.append(make_sample(masks, boxes=boxes, image_id=index + 1, seed=index, image=image))
    if DOMAIN_B.exists():  # real polygon/RLE masks, 128x128 images upscaled to the input size
        out += load_samples(DOMAIN_B)[:6]
    return out


@pytest.mark.parametrize(
    ("prompt", "num_points", "num_negative", "max_instances"),
    [("box", 1, 0, 64), ("points", 1, 0, 3), ("points", 3, 2, 64), ("mixed", 2, 1, 4)],
)
@pytest.mark.parametrize("image_size", [1024, 96])
def test_preprocessing_matches_the_reference(prompt, num_points, num_negative, max_instances, image_size):
    pre = SamPreprocessor(image_size=image_size, prompt=prompt, num_points=num_points,
                          num_negative_points=num_negative, max_instances=max_instances, box_jitter=0.1)
    for sample, train in itertools.product(_samples(), (True, False)):
        fast, reference = pre(sample, train=train), _reference_call(pre, sample, train=train)
        for key in ("boxes", "points", "point_labels"):  # same seed: same instances, jitter and points
            np.testing.assert_array_equal(fast[key], reference[key], err_msg=key)
        np.testing.assert_allclose(fast["pixel_values"], reference["pixel_values"], rtol=0, atol=1e-5)
        _assert_targets_equivalent(fast["targets"], reference["targets"])
        assert fast["annotation_ids"] == reference["annotation_ids"]
        assert (fast["resized_size"], fast["seed"]) == (reference["resized_size"], reference["seed"])


def test_pixels_are_bit_identical_for_uint8_and_follow_the_formula_otherwise():
    pre = SamPreprocessor(image_size=160)
    image = np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    for resized in [(96, 160), (90, 150)]:
        np.testing.assert_array_equal(pre._pixels(image, resized), _reference_pixels(pre, image, resized))
    as_float = image.astype(np.float32)
    np.testing.assert_array_equal(pre._pixels(as_float, (90, 150)), _reference_pixels(pre, as_float, (90, 150)))
