"""Keypoints move with the image: after any geometric transform a keypoint still sits on
the pixel it marked."""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest

from teacherkit_augment.pipeline import AugmentationPipeline, SampleAugmenter

H, W = 48, 64
SPOTS = [(10, 12), (40, 30), (55, 8)]  # (x, y) of painted pixels


def _painted():
    image = np.zeros((H, W, 3), np.uint8)
    for x, y in SPOTS:
        image[y, x] = (255, 255, 255)
    return image


def _keypoints():
    """Two instances: one with a box and two points, one keypoint-only (box zero)."""
    kps = np.zeros((2, 2, 3), np.float32)
    kps[0, 0] = (*SPOTS[0], 2)
    kps[0, 1] = (*SPOTS[1], 1)
    kps[1, 0] = (*SPOTS[2], 2)
    boxes = np.array([[5, 5, 40, 30], [0, 0, 0, 0]], np.float32)
    return boxes, kps


GEOMETRIC = {
    "hflip": A.HorizontalFlip(p=1),
    "vflip": A.VerticalFlip(p=1),
    "affine": A.Affine(rotate=(17, 17), translate_px={"x": (3, 3), "y": (-2, -2)}, scale=(0.9, 0.9),
                       interpolation=cv2.INTER_NEAREST, p=1),
    "rotate90": A.RandomRotate90(p=1),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_keypoints_land_on_the_pixel_they_marked(name):
    boxes, kps = _keypoints()
    pipeline = AugmentationPipeline([GEOMETRIC[name]], seed=0, min_visibility=0.0)
    out = pipeline(image=_painted(), bboxes=boxes, keypoints=kps, labels=np.array([0, 1]))
    moved = out["keypoints"]
    assert moved.shape[1:] == (2, 3)
    image = out["image"]
    height, width = image.shape[:2]
    assert out["kept"].tolist() == [0, 1]
    for x, y, v in moved.reshape(-1, 3):
        if v == 0:
            continue
        col, row = int(round(x)), int(round(y))
        patch = image[max(row - 1, 0):min(row + 2, height), max(col - 1, 0):min(col + 2, width)]
        assert patch.max() == 255, f"{name}: keypoint ({x:.1f}, {y:.1f}) is not on a painted pixel"
    assert moved[:, :, 2].tolist() == kps[:, :, 2].tolist()  # visibilities travel with their points


def test_points_that_leave_the_image_are_unlabelled_and_a_keypoint_only_instance_goes_with_them():
    boxes, kps = _keypoints()
    shift = A.Affine(translate_px={"x": (-30, -30), "y": (0, 0)}, p=1)
    out = AugmentationPipeline([shift], seed=0, min_visibility=0.0)(
        image=_painted(), bboxes=boxes, keypoints=kps)
    # instance 0 keeps its box and its second point (x 40 -> 10); its first point (x 10 -> -20) is gone
    assert out["kept"].tolist() == [0, 1]
    assert out["keypoints"][0, 0].tolist() == [0, 0, 0]
    assert out["keypoints"][0, 1, 2] == 1
    # instance 1 (keypoint-only, x 55 -> 25) stays, box still zero
    assert out["bboxes"][1].tolist() == [0, 0, 0, 0]
    far = A.Affine(translate_px={"x": (-60, -60), "y": (0, 0)}, p=1)
    out = AugmentationPipeline([far], seed=0, min_visibility=0.0)(image=_painted(), bboxes=boxes, keypoints=kps)
    assert 1 not in out["kept"].tolist()  # every point of the keypoint-only instance left the image


def test_sample_augmenter_keeps_keypoints_aligned_with_instances():
    boxes, kps = _keypoints()
    sample = {
        "image": _painted(), "boxes": boxes, "labels": np.array([3, 4]), "category_ids": np.array([7, 8]),
        "annotation_ids": np.array([70, 80]), "iscrowd": np.zeros(2, np.int64), "masks": None,
        "keypoints": kps, "extra": {"keypoints": kps.reshape(-1).tolist()},
    }
    out = SampleAugmenter(AugmentationPipeline([A.HorizontalFlip(p=1)], min_visibility=0.0))(sample, seed=1)
    assert out["labels"].tolist() == [3, 4]
    assert out["keypoints"][1, 0, 0] == pytest.approx(W - 1 - SPOTS[2][0])
    assert out["extra"]["keypoints"] == out["keypoints"].reshape(-1).tolist()
    assert sample["keypoints"][1, 0, 0] == SPOTS[2][0]  # the input is not modified


def test_bad_keypoint_shape_names_the_argument():
    from teacherkit_augment.pipeline import AugmentationInputError

    with pytest.raises(AugmentationInputError, match="keypoints: expected shape"):
        AugmentationPipeline([])(image=_painted(), bboxes=np.zeros((1, 4)), keypoints=np.zeros((2, 3)))
