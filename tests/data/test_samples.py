"""The sample dataset (``teacherkit.data.samples``) that training, evaluation and inference
read images through: which instances each annotation kind keeps, and keypoints carried
with or without a box."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset
from teacherkit.data.samples import SampleDataset, keypoint_array, sample_seed
from teacherkit.testing import make_coco_dataset


def _dataset(path, learns_from, **kwargs):
    coco = load_coco(path)
    return SampleDataset(coco, path.parent, inspect_dataset(coco), None, learns_from=learns_from, train=False,
                         **kwargs)


def _all_samples(dataset):
    return [dataset.raw_sample(i) for i in range(len(dataset))]


def test_keypoint_only_annotations_reach_a_keypoint_teacher(tmp_path):
    path = make_coco_dataset(tmp_path, num_images=4, boxes=False, masks=False, keypoints=True, seed=3)
    samples = _all_samples(_dataset(path, "keypoints"))
    annotations = json.loads(path.read_text())["annotations"]
    assert sum(len(s["labels"]) for s in samples) == len(annotations)
    centres = []
    for sample in samples:
        n = len(sample["labels"])
        assert sample["keypoints"].shape == (n, 1, 3) and sample["keypoints"].dtype == np.float32
        assert (sample["boxes"] == 0).all() and sample["boxes"].shape == (n, 4)  # no box: zeros
        assert len(sample["category_ids"]) == len(sample["annotation_ids"]) == n
        assert sample["extra"]["keypoints"] == sample["keypoints"].reshape(-1).tolist()
        centres.append(tuple(sample["keypoints"][:, 0, :2].mean(0)))
    # the targets a keypoint teacher derives differ between images (not a constant default)
    assert len(set(centres)) == len(centres)


def test_keypoint_only_annotations_stay_out_of_box_and_mask_teachers(tmp_path):
    path = make_coco_dataset(tmp_path, num_images=3, boxes=False, masks=False, keypoints=True, seed=4)
    for kind in ("boxes", "masks"):
        assert all(len(s["labels"]) == 0 for s in _all_samples(_dataset(path, kind))), kind


def test_keypoints_stay_aligned_with_boxed_and_box_less_instances(tmp_path):
    path = make_coco_dataset(tmp_path, num_images=2, masks=True, keypoints=True, seed=5, max_objects=3)
    data = json.loads(path.read_text())
    for ann in data["annotations"][::2]:  # every other annotation loses its box and mask
        del ann["bbox"], ann["segmentation"]
    for ann in data["annotations"][1::3]:  # some lose their keypoints instead
        del ann["keypoints"], ann["num_keypoints"]
    path.write_text(json.dumps(data))
    by_id = {a["id"]: a for a in data["annotations"]}
    for sample in _all_samples(_dataset(path, "keypoints", with_masks=True)):
        assert len(sample["masks"]) == len(sample["boxes"]) == len(sample["keypoints"])
        for k, ann_id in enumerate(sample["annotation_ids"].tolist()):
            ann = by_id[ann_id]
            expected = ann.get("keypoints", [0.0, 0.0, 0.0])
            assert sample["keypoints"][k].reshape(-1).tolist() == pytest.approx(expected)
            assert (sample["boxes"][k] > 0).any() == ("bbox" in ann)
            if "segmentation" not in ann:
                assert not sample["masks"][k].any()


def test_box_teacher_takes_the_box_of_a_mask_when_bbox_is_missing(tmp_path):
    path = make_coco_dataset(tmp_path, num_images=2, boxes=False, masks=True, seed=6)
    samples = _all_samples(_dataset(path, "boxes"))
    assert sum(len(s["boxes"]) for s in samples) == len(json.loads(path.read_text())["annotations"])
    assert all((s["boxes"][:, 2:] > 0).all() for s in samples)
    assert all(s["masks"] is None and s["keypoints"].shape == (len(s["boxes"]), 0, 3) for s in samples)


def test_keypoint_array_pads_missing_and_short_lists():
    out = keypoint_array([[1, 2, 2, 3, 4, 1], None, [5, 6, 2]])
    assert out.shape == (3, 2, 3)
    assert out[1].tolist() == [[0, 0, 0], [0, 0, 0]] and out[2, 1].tolist() == [0, 0, 0]
    assert keypoint_array([]).shape == (0, 0, 3)


def test_the_training_module_still_offers_the_old_names():
    from teacherkit.data import samples
    from teacherkit.training.dataset import CocoTrainDataset, move_to_device, read_image
    from teacherkit.training.dataset import sample_seed as old_seed

    assert CocoTrainDataset is samples.SampleDataset and read_image is samples.read_image
    assert move_to_device is samples.move_to_device and old_seed is sample_seed


def _with_file_name(tmp_path, name):
    path = make_coco_dataset(tmp_path, num_images=2, seed=5)
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", ["../outside.png", "/etc/hostname"])
def test_samples_refuse_images_outside_the_folder(tmp_path, monkeypatch, name):
    from teacherkit.errors import DataError

    monkeypatch.delenv("TEACHERKIT_ALLOW_OUTSIDE_IMAGES", raising=False)
    dataset = _dataset(_with_file_name(tmp_path, name), "boxes")
    with pytest.raises(DataError, match=r"image 1 is absolute or leaves the image folder.*allow-outside-images"):
        dataset.raw_sample(0)


def test_samples_refuse_a_decompression_bomb_without_decoding_it(tmp_path, monkeypatch):
    from PIL import Image

    from teacherkit.errors import DataError

    path = make_coco_dataset(tmp_path, num_images=2, seed=5)
    first = json.loads(path.read_text())["images"][0]["file_name"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the shapes images are far larger
    with pytest.raises(DataError, match=rf"{first}: too many pixels to decode safely"):
        _dataset(path, "boxes").raw_sample(0)


def test_augmentation_views_repeat_the_augmented_pixels_every_k_epochs(tmp_path):
    """``augment_views=K``: epoch e augments with epoch e % K's seed, with the real default
    augmentation pipeline, so a teacher caching its frozen encoder sees each input again."""
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager

    host = get_plugin_manager()
    path = make_coco_dataset(tmp_path / "d", num_images=2, size=(64, 64), seed=5)
    coco = load_coco(path)
    info = inspect_dataset(coco)
    augment = host.make_augmentation(resolve_config(host.config_model()).augmentation, info)

    def pixels(views, epoch):
        dataset = SampleDataset(coco, path.parent, info, lambda s, train: s["image"], learns_from="boxes",
                                train=True, augment=augment, augment_views=views, seed=3)
        dataset.set_epoch(epoch)
        return [dataset[i] for i in range(len(dataset))]

    same = [np.array_equal(a, b) for a, b in zip(pixels(2, 0), pixels(2, 2), strict=True)]
    assert all(same)  # epoch 2 is epoch 0's view
    assert not all(np.array_equal(a, b) for a, b in zip(pixels(2, 0), pixels(2, 1), strict=True))
    # without views each epoch is fresh, and epoch e < K is the view a run without views draws
    assert not all(np.array_equal(a, b) for a, b in zip(pixels(None, 0), pixels(None, 2), strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(2, 1), pixels(None, 1), strict=True))
