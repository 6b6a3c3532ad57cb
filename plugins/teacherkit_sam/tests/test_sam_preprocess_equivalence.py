"""The fast SAM preprocessing (crop-wise mask resizing, points searched inside the mask's
extent, table-driven normalisation) against a straightforward reference, the whole-frame
implementation it replaced (``sam_reference.py``), at small sizes. The same comparison at
1024 px, with timings, is ``bench/sam_preprocess.py``."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sam_helpers import load_samples, make_sample
from sam_reference import (
    edge_case_masks,
    preprocessing_mismatches,
    reference_call,
    reference_pixels,
    reference_points,
    reference_targets,
    targets_mismatch,
)

from teacherkit_sam.masks import mask_extents, masks_to_input_frame, resized_shape
from teacherkit_sam.preprocess import SamPreprocessor
from teacherkit_sam.prompts import make_rng, sample_points

DOMAIN_B = Path(__file__).resolve().parents[3] / "examples" / "domain_b" / "train.json"


# -- masks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("height", "width", "size"),
    # the same shapes at 1024 px: bench/sam_preprocess.py --size full
    [
        (160, 240, 192),  # landscape, shrunk
        (240, 160, 192),  # portrait, shrunk
        (48, 64, 160),  # smaller than image_size: upscaled
        (64, 48, 160),
        (37, 50, 256),
        (400, 400, 128),  # square, shrunk ~3x
        (256, 175, 256),  # only the width changes
        (175, 256, 256),  # only the height changes
        (120, 180, 180),  # nothing changes
        (1536, 1024, 128),  # shrunk 12x: more taps than the 0/1 table holds
        (61, 1500, 64),
    ],
)
def test_targets_match_the_whole_frame_resize(height, width, size):
    masks = edge_case_masks(height, width, seed=height + width)
    resized = resized_shape(height, width, size)
    fast = masks_to_input_frame(masks, resized, size)
    reference = reference_targets(masks, resized, size)
    assert targets_mismatch(fast, reference) is None
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
    assert targets_mismatch(fast, reference_targets(masks, resized, size)) is None
    peaks = fast.reshape(40, -1).max(axis=1)
    assert np.all(peaks > 0) and np.all(peaks < 64)


def test_selected_masks_with_given_extents_equal_copied_out_masks():
    masks = edge_case_masks(300, 450, seed=1)
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
    np.testing.assert_array_equal(masks_to_input_frame(masks, resized, 64), reference_targets(masks, resized, 64))


def test_extents_are_the_tight_pixel_ranges():
    masks = edge_case_masks(50, 70, seed=2)
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
        reference = reference_points(mask, box, pos, neg, make_rng(seed))
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[1], reference[1])


def test_points_of_empty_and_full_masks_are_padding_like_before():
    for mask in (np.zeros((20, 30), np.uint8), np.ones((20, 30), np.uint8)):
        extent = mask_extents(mask[None])[0]
        fast = sample_points(mask, np.array([2, 2, 10, 10], np.float32), 2, 2, make_rng(3), extent=extent)
        reference = reference_points(mask, np.array([2, 2, 10, 10], np.float32), 2, 2, make_rng(3))
        np.testing.assert_array_equal(fast[0], reference[0])
        np.testing.assert_array_equal(fast[1], reference[1])


# -- the whole preprocessing ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    out = []
    for index, (height, width) in enumerate([(120, 180), (180, 120), (64, 96), (130, 130)]):
        masks = edge_case_masks(height, width, seed=index)
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
def test_preprocessing_matches_the_reference(samples, prompt, num_points, num_negative, max_instances):
    pre = SamPreprocessor(image_size=96, prompt=prompt, num_points=num_points,
                          num_negative_points=num_negative, max_instances=max_instances, box_jitter=0.1)
    for sample, train in itertools.product(samples, (True, False)):
        fast, reference = pre(sample, train=train), reference_call(pre, sample, train=train)
        assert preprocessing_mismatches(fast, reference) == [], (sample["image_id"], train)


def test_pixels_are_bit_identical_for_uint8_and_follow_the_formula_otherwise():
    """The workers' uint8 pixels, normalised as the teacher does on the device, equal the
    reference's float32 pixels bit for bit; a float image of whole values gives the same."""
    import torch

    from teacherkit_sam.preprocess import finish_pixels

    pre = SamPreprocessor(image_size=160)
    image = np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8)

    def finished(img, resized):
        shipped = pre._pixels(img, resized)
        assert shipped.dtype == np.uint8
        return finish_pixels(torch.from_numpy(shipped[None]), [resized], pre.mean, pre.std)[0].numpy()

    for resized in [(96, 160), (90, 150)]:
        np.testing.assert_array_equal(finished(image, resized), reference_pixels(pre, image, resized))
    as_float = image.astype(np.float32)
    np.testing.assert_array_equal(finished(as_float, (90, 150)), reference_pixels(pre, as_float, (90, 150)))
