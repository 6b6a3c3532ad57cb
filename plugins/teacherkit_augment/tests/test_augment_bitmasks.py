"""Packed instance masks: exact round trips, boxes read from the bits, and many
instances through a real warp."""

from __future__ import annotations

import numpy as np
import pytest

from teacherkit_augment import bitmasks


def random_masks(n, height=23, width=31, seed=0):
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, height, width)) > 0.97).astype(np.uint8)
    if n > 2:
        masks[2] = 0  # an empty one
    return masks


@pytest.mark.parametrize("n", [1, 7, 8, 9, 40])
def test_pack_unpack_round_trip_and_boxes(n):
    masks = random_masks(n)
    packed = bitmasks.pack(masks)
    assert packed.shape == (23, 31, (n + 7) // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(bitmasks.unpack(packed, list(range(n))), masks)
    np.testing.assert_array_equal(bitmasks.unpack(packed, [n - 1, 0]), masks[[n - 1, 0]])
    np.testing.assert_array_equal(bitmasks.packed_boxes(packed, n), bitmasks.mask_boxes(masks))
    np.testing.assert_array_equal(bitmasks.pixel_counts(masks), masks.reshape(n, -1).sum(axis=1))


def test_mask_boxes_are_tight_pixel_edges():
    masks = np.zeros((2, 10, 12), np.uint8)
    masks[0, 2:5, 3:9] = 1
    np.testing.assert_array_equal(bitmasks.mask_boxes(masks), [[3, 2, 6, 3], [0, 0, 0, 0]])


def test_as_binary_thresholds_only_when_needed():
    ones = np.ones((1, 2, 2), np.uint8)
    assert bitmasks.as_binary(ones) is ones
    np.testing.assert_array_equal(bitmasks.as_binary(np.full((1, 2, 2), 255, np.uint8)), ones)
    np.testing.assert_array_equal(bitmasks.as_binary(np.ones((1, 2, 2), bool)), ones)


@pytest.mark.parametrize("n", [12, 40])
def test_many_instances_warp_exactly_like_single_masks(n):
    import albumentations as A

    from teacherkit_augment.pipeline import AugmentationPipeline

    masks = np.zeros((n, 48, 64), np.uint8)
    for i in range(n):
        masks[i, (i * 5) % 40 : (i * 5) % 40 + 6, (i * 7) % 56 : (i * 7) % 56 + 6] = 1
    pipeline = AugmentationPipeline([A.HorizontalFlip(p=1.0), A.Affine(translate_px={"x": 0, "y": 3}, p=1.0)])
    out = pipeline(image=np.zeros((48, 64, 3), np.uint8), masks=masks, labels=np.arange(n))
    expected = np.zeros_like(masks)
    expected[:, 3:, :] = masks[:, :-3, ::-1]
    keep = expected.reshape(n, -1).any(axis=1)
    np.testing.assert_array_equal(out["kept"], np.flatnonzero(keep))
    np.testing.assert_array_equal(out["masks"], expected[keep])
    np.testing.assert_array_equal(out["bboxes"], bitmasks.mask_boxes(expected[keep]))
