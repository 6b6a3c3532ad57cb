"""Property tests of the box/mask rule over every characteristic and value.

For random images, masks and boxes, after any pipeline: every box lies inside the
image, a box of an instance with a mask is that mask's tight box (within 1 px; it is
exact by construction), and every per-instance array stays aligned with its instance.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teacherkit_augment.characteristics import BUILTIN_CHARACTERISTICS, INTENSITIES
from teacherkit_augment.pipeline import SampleAugmenter, boxes_from_masks
from teacherkit_augment.registry import AugmentationRegistry

REGISTRY = AugmentationRegistry(BUILTIN_CHARACTERISTICS)
OPTIONS = [(spec.name, value) for spec in BUILTIN_CHARACTERISTICS for value in (spec.values or (None,))]


@cache
def augmenter(name: str, value: str | None, intensity: str) -> SampleAugmenter:
    request = {"characteristics": [name]} if value is None else {"environment": {name: value}}
    return SampleAugmenter(REGISTRY.get_pipeline(intensity=intensity, **request))


@st.composite
def scenes(draw):
    """A sample dict: noise image, 0-5 instances (rectangles or ellipses that may touch
    or cross the border), with masks or boxes only, and some box-only instances
    mixed into masked data."""
    height = draw(st.integers(24, 72))
    width = draw(st.integers(24, 72))
    with_masks = draw(st.booleans())
    n = draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes, masks = [], []
    yy, xx = np.mgrid[:height, :width]
    for _ in range(n):
        x0 = draw(st.integers(-8, width - 2))
        y0 = draw(st.integers(-8, height - 2))
        w = draw(st.integers(1, width))
        h = draw(st.integers(1, height))
        mask = np.zeros((height, width), np.uint8)
        if with_masks and not draw(st.integers(0, 5)) == 0:  # one in six masked-data instances is box-only
            if draw(st.booleans()):
                mask[max(0, y0): y0 + h, max(0, x0): x0 + w] = 1
            else:
                cy, cx, ry, rx = y0 + h / 2, x0 + w / 2, max(h / 2, 1), max(w / 2, 1)
                mask[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
        boxes.append([x0, y0, w, h])
        masks.append(mask)
    labels = np.asarray([draw(st.integers(0, 4)) for _ in range(n)], dtype=np.int64)
    return {
        "image": image,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "labels": labels,
        "category_ids": labels + 100,
        "annotation_ids": np.arange(n, dtype=np.int64) + 1000,
        "iscrowd": np.zeros(n, np.int64),
        "masks": (np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)) if with_masks else None,
        "extra": {},
    }


def check_rule(sample, out):
    height, width = sample["image"].shape[:2]
    assert out["image"].shape == sample["image"].shape  # sizes never change
    boxes = out["boxes"]
    kept = out["extra"]["augment_kept"]
    n_out = len(boxes)
    assert boxes.dtype == np.float32 and boxes.shape == (n_out, 4)
    # labels stay aligned: every per-instance array is the input's, re-indexed by kept
    assert len(kept) == n_out and np.all(np.diff(kept) > 0) and np.all(kept < len(sample["labels"]))
    np.testing.assert_array_equal(out["labels"], sample["labels"][kept])
    np.testing.assert_array_equal(out["category_ids"], out["labels"] + 100)
    np.testing.assert_array_equal(out["annotation_ids"], kept + 1000)
    assert len(out["iscrowd"]) == n_out
    # every box lies inside the image and has area
    tol = 1e-3
    assert np.all(boxes[:, :2] >= 0)
    assert np.all(boxes[:, 0] + boxes[:, 2] <= width + tol)
    assert np.all(boxes[:, 1] + boxes[:, 3] <= height + tol)
    assert np.all(boxes[:, 2:] > 0)
    if sample["masks"] is None:
        assert out["masks"] is None
        return
    masks = out["masks"]
    assert masks.shape == (n_out, height, width) and masks.dtype == np.uint8
    had_mask = sample["masks"][kept].reshape(n_out, height * width).any(axis=1)
    from_masks = boxes_from_masks(masks)
    # an instance that had a mask still has one, and its box is the mask's box
    assert np.all(masks[had_mask].reshape(int(had_mask.sum()), height * width).any(axis=1))
    assert np.all(np.abs(from_masks[had_mask] - boxes[had_mask]) <= 1.0)


@pytest.mark.parametrize(("name", "value"), OPTIONS, ids=[f"{n}={v}" if v else n for n, v in OPTIONS])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=scenes(), intensity=st.sampled_from(INTENSITIES), seed=st.integers(0, 2**31 - 1))
def test_boxes_stay_inside_match_masks_and_labels_stay_aligned(name, value, sample, intensity, seed):
    out = augmenter(name, value, intensity)(sample, seed)
    check_rule(sample, out)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=scenes(), seed=st.integers(0, 2**31 - 1),
       picks=st.lists(st.sampled_from(OPTIONS), min_size=2, max_size=5, unique_by=lambda o: o[0]))
def test_the_rule_holds_for_combined_requests(sample, seed, picks):
    characteristics = [n for n, v in picks if v is None]
    environment = {n: v for n, v in picks if v is not None}
    pipeline = REGISTRY.get_pipeline(characteristics, environment, "high")
    check_rule(sample, SampleAugmenter(pipeline)(sample, seed))
