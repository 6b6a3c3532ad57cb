"""Pipelines: instances keep their identity, results are deterministic for a seed,
augmenters pickle, inputs are never modified, and the training hook answers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from teacherkit.config import AugmentationConfig
from teacherkit.data.info import DatasetInfo
from teacherkit_augment.characteristics import BUILTIN_CHARACTERISTICS
from teacherkit_augment.pipeline import AugmentationInputError, SampleAugmenter
from teacherkit_augment.registry import DEFAULT_ENVIRONMENT, AugmentationRegistry

REGISTRY = AugmentationRegistry(BUILTIN_CHARACTERISTICS)
CODES = (60, 120, 180, 240)


def coded_sample(height=64, width=80):
    """Four non-overlapping squares; image pixels inside square i carry code i in every
    channel, so after a geometric transform a mask's pixels tell which instance it is."""
    image = np.zeros((height, width, 3), np.uint8)
    masks = np.zeros((4, height, width), np.uint8)
    corners = [(6, 6), (6, 46), (36, 6), (36, 46)]
    for i, (y, x) in enumerate(corners):
        masks[i, y : y + 20, x : x + 24] = 1
        image[masks[i] > 0] = CODES[i]
    return {
        "image": image,
        "boxes": np.array([[x, y, 24, 20] for y, x in corners], np.float32),
        "labels": np.array([3, 1, 2, 0], np.int64),
        "category_ids": np.array([13, 11, 12, 10], np.int64),
        "annotation_ids": np.array([100, 101, 102, 103], np.int64),
        "iscrowd": np.zeros(4, np.int64),
        "masks": masks,
        "extra": {"seed": 5},
    }


@pytest.mark.parametrize("request_", [
    {"characteristics": ["rotation_invariant", "symmetric"], "intensity": "high"},
    {"characteristics": ["changes_shape", "small_objects"], "intensity": "high"},
    {"environment": {"camera": "moving"}, "intensity": "medium"},
    {"characteristics": ["rigid"], "environment": {"background": "cluttered"}, "intensity": "high"},
], ids=["rotate+flip", "warp+zoom", "camera", "rigid+cluttered"])
def test_each_mask_still_covers_its_own_instance(request_):
    sample = coded_sample()
    augment = SampleAugmenter(REGISTRY.get_pipeline(**request_))
    changed = 0
    for seed in range(12):
        out = augment(sample, seed)
        for mask, kept, label in zip(out["masks"], out["extra"]["augment_kept"], out["labels"]):
            values = out["image"][..., 0][mask > 0]
            values = values[values > 0]  # holes and borders are zero
            if len(values):
                assert np.median(values) == pytest.approx(CODES[kept], abs=8)
            assert label == sample["labels"][kept]
        changed += not np.array_equal(out["image"], sample["image"])
    assert changed >= 6  # the transforms really ran


def test_same_seed_same_result_in_any_call_order_and_after_pickling():
    sample = coded_sample()
    augment = REGISTRY.make_augmenter(["changes_shape", "occluded", "symmetric"], {"lighting": "variable"})
    first = augment(sample, 7)
    augment(sample, 8)
    again = augment(sample, 7)
    copy = pickle.loads(pickle.dumps(augment))(sample, 7)
    for other in (again, copy):
        np.testing.assert_array_equal(first["image"], other["image"])
        np.testing.assert_array_equal(first["masks"], other["masks"])
        np.testing.assert_array_equal(first["boxes"], other["boxes"])
    images = {augment(sample, seed)["image"].tobytes() for seed in range(6)}
    assert len(images) >= 5  # different seeds, different results


def test_pipeline_seed_makes_a_reproducible_sequence():
    image = coded_sample()["image"]
    runs = []
    for _ in range(2):
        pipeline = REGISTRY.get_pipeline(["rotation_invariant"], {"lighting": "variable"}, seed=3)
        runs.append([pipeline(image=image)["image"] for _ in range(3)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][1])


def test_transforms_of_one_pipeline_do_not_share_a_random_stream():
    # albumentations' own seeding gives every transform the same seed, so equal-p
    # transforms would always fire together; ours must not.
    sample = coded_sample()
    augment = SampleAugmenter(REGISTRY.get_pipeline(["symmetric"], {"lighting": "fixed"}, "medium"))
    outcomes = set()
    for seed in range(24):
        out = augment(sample, seed)
        flipped = out["masks"][0][:, -30:].any()  # instance 0 sits on the left unless flipped
        brightness = not np.array_equal(out["image"][out["masks"][0] > 0].mean(), float(CODES[0]))
        outcomes.add((bool(flipped), bool(brightness)))
    assert len(outcomes) == 4


def test_inputs_are_not_modified():
    sample = coded_sample()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sample.items()}
    augment = REGISTRY.make_augmenter(["occluded", "changes_shape"], {"camera": "handheld"}, "high")
    for seed in range(4):
        augment(sample, seed)
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(sample[key], value)
    assert sample["extra"] == {"seed": 5}


def test_identity_pipeline_recomputes_boxes_from_masks_and_drops_empty_instances():
    sample = coded_sample()
    sample["boxes"][0] = [0, 0, 79, 63]  # a wrong box: the mask wins
    sample["masks"] = sample["masks"].copy()
    sample["masks"][2] = 0  # no mask: keeps its box (box-only instance)
    sample["boxes"][3] = [90, 90, 5, 5]  # its mask is the truth, so this instance survives
    out = SampleAugmenter(REGISTRY.get_pipeline())(sample, 0)
    np.testing.assert_array_equal(out["extra"]["augment_kept"], [0, 1, 2, 3])
    np.testing.assert_array_equal(out["boxes"][0], [6, 6, 24, 20])
    np.testing.assert_array_equal(out["boxes"][2], [6, 36, 24, 20])
    np.testing.assert_array_equal(out["boxes"][3], [46, 36, 24, 20])


def test_box_only_data_clips_to_the_image_before_augmenting():
    image = np.zeros((50, 50, 3), np.uint8)
    boxes = np.array([[40, 40, 20, 20], [60, 60, 5, 5], [10, 10, 0, 5]], np.float32)
    out = REGISTRY.get_pipeline()(image=image, bboxes=boxes, labels=np.array([1, 2, 3]))
    np.testing.assert_array_equal(out["kept"], [0])  # 1: outside the image; 2: no area
    np.testing.assert_allclose(out["bboxes"], [[40, 40, 10, 10]])
    np.testing.assert_array_equal(out["labels"], [1])


def test_instances_pushed_out_of_view_follow_the_visibility_rule():
    import albumentations as A

    from teacherkit_augment.pipeline import AugmentationPipeline

    shift = AugmentationPipeline([A.Affine(translate_px={"x": 40, "y": 0}, p=1.0)], seed=0)
    image = np.zeros((50, 50, 3), np.uint8)
    # after a 40 px shift: 12.5% in view (kept, clipped), 7.5% in view (dropped), fully out
    boxes = np.array([[5, 0, 40, 10], [7, 20, 40, 10], [20, 30, 10, 10]], np.float32)
    out = shift(image=image, bboxes=boxes, labels=np.array([7, 8, 9]))
    np.testing.assert_array_equal(out["labels"], [7])
    np.testing.assert_allclose(out["bboxes"], [[45, 0, 5, 10]], atol=1e-4)
    masks = np.zeros((3, 50, 50), np.uint8)
    for m, (x, y, w, h) in zip(masks, boxes.astype(int)):
        m[y : y + h, x : x + w] = 1
    out = shift(image=image, masks=masks, labels=np.array([7, 8, 9]))
    np.testing.assert_array_equal(out["labels"], [7])  # the same rule with masks
    np.testing.assert_array_equal(out["bboxes"], [[45, 0, 5, 10]])


def test_mismatched_inputs_name_the_argument():
    image = np.zeros((20, 30, 3), np.uint8)
    pipeline = REGISTRY.get_pipeline()
    with pytest.raises(AugmentationInputError, match=r"masks: expected shape \(N, 20, 30\)"):
        pipeline(image=image, masks=np.zeros((1, 30, 20), np.uint8))
    with pytest.raises(AugmentationInputError, match="labels: 1 labels for 2 instances"):
        pipeline(image=image, bboxes=np.ones((2, 4)), labels=[1])


def test_intensity_scales_magnitudes():
    def blur_upper(intensity):
        (blur,) = REGISTRY.get_pipeline(["moving"], intensity=intensity).transforms
        return blur.blur_limit[1]

    assert blur_upper("low") < blur_upper("medium") < blur_upper("high")
    limits = [REGISTRY.get_pipeline(["rotation_invariant"], intensity=i).transforms[0].limit[1] for i in
              ("low", "medium", "high")]
    assert limits == sorted(limits) and limits[0] < limits[-1]


def test_geometric_transforms_come_before_pixel_ones_and_holes_last():
    pipeline = REGISTRY.get_pipeline(["occluded", "reflective_surface", "rotation_invariant"])
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names[0] == "Rotate" and names[-1] == "CoarseDropout"


# -- the training hook ----------------------------------------------------------------


def test_make_augmentation_hook(plugin_host):
    info = DatasetInfo(annotation_kinds=["boxes", "masks"])
    assert plugin_host.make_augmentation(AugmentationConfig(enabled=False), info) is None
    default = plugin_host.make_augmentation(AugmentationConfig(), info)
    expected = REGISTRY.get_pipeline([], DEFAULT_ENVIRONMENT)
    assert [type(t).__name__ for t in default.pipeline.transforms] == [type(t).__name__ for t in expected.transforms]
    chosen = plugin_host.make_augmentation(
        AugmentationConfig(characteristics=["moving"], environment={"weather": "fog"}, intensity="high"), info)
    assert [type(t).__name__ for t in chosen.pipeline.transforms] == ["MotionBlur", "OneOf"]
    out = chosen(coded_sample(), 1)
    assert out["image"].shape == (64, 80, 3)


def test_make_augmentation_hook_rejects_unknown_names_with_the_config_key(plugin_host):
    from teacherkit.errors import TeacherkitError

    config = AugmentationConfig(characteristics=["reflective_surfaces"])
    with pytest.raises(TeacherkitError, match=r"augmentation.characteristics: unknown characteristic "
                                              r"'reflective_surfaces'; did you mean 'reflective_surface'\?"):
        plugin_host.make_augmentation(config, DatasetInfo())


def test_an_instance_whose_mask_leaves_the_image_is_dropped_even_if_its_box_stays():
    import albumentations as A

    from teacherkit_augment.pipeline import AugmentationPipeline

    zoom = AugmentationPipeline([A.Affine(scale=3.0, p=1.0)], seed=0)
    masks = np.zeros((2, 30, 30), np.uint8)
    masks[0, 0, 0] = masks[0, 29, 29] = 1  # box = whole image; 1/9 of it stays in view, no mask pixel does
    masks[1, 12:18, 12:18] = 1
    out = zoom(image=np.zeros((30, 30, 3), np.uint8), masks=masks, labels=np.array([4, 5]))
    np.testing.assert_array_equal(out["kept"], [1])
    np.testing.assert_allclose(out["bboxes"], [[6, 6, 18, 18]], atol=1)  # the 6 px square, 3x about the centre
    assert out["masks"].shape == (1, 30, 30) and out["masks"][0].any()
