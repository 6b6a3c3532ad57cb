"""The example keypoint plugin end to end through the data path: keypoint-only
annotations (no bbox) reach its teacher, augmentation moves them with the image, and
the regression targets differ from image to image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1]


@pytest.fixture
def kp_host():
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    import teacherkit_keypoints_example.plugin as plugin

    from teacherkit.plugins import get_plugin_manager

    # the installed copy, if any, is blocked so the teacher is declared once
    return get_plugin_manager(extra_plugins=[("kp-test", plugin)], disabled={"keypoints-example"})


def _dataset(path, host, *, augment):
    from teacherkit.config import AugmentationConfig, TeacherConfig
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.data.samples import SampleDataset

    coco = load_coco(path)
    assert all(ann.bbox is None and ann.keypoints for ann in coco.annotations)  # keypoint-only data
    info = inspect_dataset(coco, host=host)
    spec = host.teachers_for(info.annotation_kinds)[0]
    config = spec.config_model.model_validate({}) if spec.config_model is not TeacherConfig else TeacherConfig()
    model = host.load_model(spec, config, info, None)
    preprocessor = host.make_preprocessor(spec, config, model)
    augmentation = host.make_augmentation(AugmentationConfig(characteristics=["symmetric"]), info) if augment else None
    return spec, SampleDataset(coco, path.parent, info, preprocessor, learns_from=spec.learns_from, train=True,
                               augment=augmentation, seed=0)


def test_example_needs_two_teacher_hooks(kp_host):
    info = {i.name: i for i in kp_host.infos}["kp-test"]
    teacher_hooks = {"teacherkit_register_teachers", "teacherkit_load_model", "teacherkit_make_preprocessor",
                     "teacherkit_make_loss"}
    assert set(info.hooks) & teacher_hooks == {"teacherkit_register_teachers", "teacherkit_load_model"}
    assert kp_host.sample_fields()["keypoints"] == "keypoints"


@pytest.mark.parametrize("augment", [False, True])
def test_targets_vary_across_keypoint_only_samples(tiny_coco, kp_host, augment):
    path = tiny_coco(num_images=8, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=1)
    spec, dataset = _dataset(path, kp_host, augment=augment)
    assert spec.name == "keypoint_centroid"
    targets = np.stack([dataset[i]["target"].numpy() for i in range(len(dataset))])
    assert len(np.unique(targets.round(4), axis=0)) == len(dataset), targets
    assert targets.std(axis=0).min() > 0.02


def test_augmented_target_follows_the_moved_keypoints(tiny_coco, kp_host):
    path = tiny_coco(num_images=6, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=2)
    _, dataset = _dataset(path, kp_host, augment=True)
    moved_any = False
    for index in range(len(dataset)):
        raw = dataset.raw_sample(index)
        augmented = dataset.augment(raw, raw["extra"]["seed"])
        before = raw["keypoints"][..., :2][raw["keypoints"][..., 2] > 0]
        after = augmented["keypoints"][..., :2][augmented["keypoints"][..., 2] > 0]
        moved_any |= before.shape != after.shape or not np.allclose(before, after)
        height, width = augmented["image"].shape[:2]
        expected = after.mean(0) / np.array([width, height]) if len(after) else np.array([0.5, 0.5])
        target = dataset.preprocessor(augmented, train=True)["target"].numpy()
        assert np.allclose(target, expected, atol=1e-5)
    assert moved_any, "augmentation never moved a keypoint"
