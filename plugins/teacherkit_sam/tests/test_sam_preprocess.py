"""Preprocessing, prompt sampling, mask conversion and collation of the SAM teacher."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sam_helpers import make_sample

from teacherkit.data.masks import segmentation_to_mask
from teacherkit.errors import DataError
from teacherkit_sam.masks import masks_to_input_frame, resized_shape
from teacherkit_sam.preprocess import SamPreprocessor
from teacherkit_sam.prompts import PAD_LABEL


def _squares(n: int, h: int = 60, w: int = 80) -> np.ndarray:
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        masks[i, 5 + i : 15 + i, 4 * i : 4 * i + 6] = 1
    return masks


def test_resize_pad_normalise_and_scaled_boxes():
    masks = _squares(2, 60, 200)
    pre = SamPreprocessor(image_size=128, box_jitter=0.0)
    out = pre(make_sample(masks), train=False)
    h, w = out["resized_size"]
    assert (h, w) == resized_shape(60, 200, 128) == (38, 128)
    assert out["pixel_values"].shape == (3, 128, 128) and out["pixel_values"].dtype == np.uint8
    batch = pre.collate([out])
    pixels = pre.finish(batch["pixel_values"], batch["image_sizes"])  # on the device, in training
    assert pixels.dtype == torch.float32
    assert bool((pixels[0, :, h:, :] == 0).all())  # padding bottom only, after normalisation
    assert float(pixels[0, :, :h].std()) > 0.1
    scale = np.array([128 / 200, 38 / 60] * 2, np.float32)
    expected = np.array([[0, 5, 6, 15], [4, 6, 10, 16]], np.float32) * scale
    np.testing.assert_allclose(out["boxes"], expected, rtol=1e-5)
    assert out["targets"].shape == (2, 128, 128) and out["targets"][:, h:].max() == 0
    assert out["orig_size"] == (60, 200) and out["annotation_ids"] == [100, 101]


def test_one_pixel_mask_survives_shrinking_as_a_soft_target():
    masks = np.zeros((1, 400, 400), np.uint8)
    masks[0, 200, 200] = 1
    target = masks_to_input_frame(masks, resized_shape(400, 400, 128), 128)
    assert 0 < target.max() < 255  # covered fraction, not dropped, not inflated
    assert target.sum() == pytest.approx(255 * (128 / 400) ** 2, rel=0.35)


def test_instance_and_prompt_sampling_is_deterministic_for_a_seed():
    masks = _squares(10)
    pre = SamPreprocessor(image_size=128, max_instances=4, prompt="points", num_points=2, num_negative_points=1)
    a = pre(make_sample(masks, seed=7), train=True)
    b = pre(make_sample(masks, seed=7), train=True)
    c = pre(make_sample(masks, seed=8), train=True)
    for key in ("boxes", "points", "point_labels", "targets"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["annotation_ids"] == b["annotation_ids"]
    assert len(a["annotation_ids"]) == 4 == len(set(a["annotation_ids"]))
    assert a["annotation_ids"] != c["annotation_ids"] or not np.array_equal(a["boxes"], c["boxes"])
    # without extra.seed the preprocessor's own seed and the image id decide
    unseeded = [pre(make_sample(masks), train=True)["annotation_ids"] for _ in range(2)]
    assert unseeded[0] == unseeded[1]


def test_points_fall_inside_the_mask_and_negatives_outside_it():
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:40, 10:40] = 1
    masks[0, 20:30, 20:30] = 0  # a hole: negatives can land inside the box
    pre = SamPreprocessor(image_size=64, prompt="points", num_points=5, num_negative_points=5, box_jitter=0.0)
    out = pre(make_sample(masks, seed=1), train=True)
    points, labels = out["points"][0].astype(int), out["point_labels"][0]
    assert list(labels) == [1] * 5 + [0] * 5
    assert all(masks[0, y, x] == 1 for x, y in points[:5])
    assert all(masks[0, y, x] == 0 and 10 <= x < 40 and 10 <= y < 40 for x, y in points[5:])


def test_box_jitter_moves_training_boxes_but_never_evaluation_boxes():
    masks = _squares(3)
    pre = SamPreprocessor(image_size=80, box_jitter=0.2)
    train = pre(make_sample(masks, seed=3), train=True)["boxes"]
    evaluation = pre(make_sample(masks, seed=3), train=False)["boxes"]
    exact = np.array([[0, 5, 6, 15], [4, 6, 10, 16], [8, 7, 14, 17]], np.float32)
    np.testing.assert_allclose(evaluation, exact)
    assert not np.allclose(train, exact)
    assert np.all(train[:, 2] > train[:, 0]) and np.all(train[:, 3] > train[:, 1])


def test_empty_masks_skip_training_but_are_answered_at_evaluation():
    masks = _squares(3)
    masks[1] = 0
    pre = SamPreprocessor(image_size=80)
    assert pre(make_sample(masks, seed=0), train=True)["annotation_ids"] == [100, 102]
    evaluation = pre(make_sample(masks), train=False)
    assert evaluation["annotation_ids"] == [100, 101, 102]
    assert np.all(evaluation["boxes"][1, 2:] > evaluation["boxes"][1, :2])  # a usable (1 px) box


def test_missing_or_misshapen_masks_are_data_errors():
    sample = make_sample(_squares(1))
    pre = SamPreprocessor(image_size=64)
    with pytest.raises(DataError, match="img1.png.*has none"):
        pre({**sample, "masks": None}, train=True)
    with pytest.raises(DataError, match="img1.png.*do not match"):
        pre({**sample, "masks": np.zeros((1, 10, 10), np.uint8)}, train=True)


def test_collate_pads_instances_across_images():
    pre = SamPreprocessor(image_size=64, prompt="points", num_points=1)
    items = [pre(make_sample(_squares(n, 60, 80), image_id=n + 1, seed=n), train=True) for n in (1, 3, 0)]
    batch = pre.collate(items)
    assert batch["input_boxes"].shape == (3, 3, 4)
    assert batch["input_points"].shape == (3, 3, 1, 2)
    assert batch["target_masks"].shape == (3, 3, 64, 64)
    assert batch["instance_valid"].tolist() == [[True, False, False], [True, True, True], [False] * 3]
    assert (batch["input_labels"][0, 1:] == PAD_LABEL).all()
    assert batch["prompt_kind"] == "points" and batch["multimask"] is True
    assert batch["image_sizes"][0].tolist() == [48, 64]  # 60x80 resized to 48x64
    assert batch["instance_index"].tolist() == [0, 3, 4, 5]  # flat positions of the real instances
    assert batch["annotation_ids"][1] == [400, 401, 402] and batch["image_ids"] == [2, 4, 1]


def test_mixed_prompts_pick_a_kind_per_batch_from_the_seeds():
    pre = SamPreprocessor(image_size=64, prompt="mixed")
    kinds = []
    for seed in range(12):
        items = [pre(make_sample(_squares(2), seed=seed * 10 + i), train=True) for i in range(2)]
        kinds.append(pre.collate(items)["prompt_kind"])
        assert pre.collate(items)["prompt_kind"] == kinds[-1]
    assert set(kinds) == {"box", "points"}
    # evaluation batches are always prompted by boxes
    assert pre.collate([pre(make_sample(_squares(2)), train=False)])["prompt_kind"] == "box"


def test_preprocessor_pickles_for_dataloader_workers():
    pre = SamPreprocessor(image_size=64, max_instances=2, prompt="points")
    clone = pickle.loads(pickle.dumps(pre))
    sample = make_sample(_squares(4), seed=5)
    np.testing.assert_array_equal(clone(sample, train=True)["points"], pre(sample, train=True)["points"])


def test_cache_key_follows_content_and_preprocessing():
    sample = make_sample(_squares(1))
    base = SamPreprocessor(image_size=64)
    key = base(sample, train=True)["cache_key"]
    assert base(sample, train=False)["cache_key"] == key  # prompts do not matter
    assert SamPreprocessor(image_size=96)(sample, train=True)["cache_key"] != key
    changed = sample["image"].copy()
    changed[0, 0, 0] ^= 1
    assert base({**sample, "image": changed}, train=True)["cache_key"] != key


def test_polygon_rle_and_uncompressed_rle_decode_to_the_drawn_masks(tiny_coco):
    path = tiny_coco(num_images=4, mask_format="mixed", seed=5)
    data = json.loads(path.read_text())
    images = {img["id"]: img for img in data["images"]}
    seen = set()
    for ann in data["annotations"]:
        seg, img = ann["segmentation"], images[ann["image_id"]]
        mask = segmentation_to_mask(seg, img["height"], img["width"])
        kind = "polygon" if isinstance(seg, list) else type(seg["counts"]).__name__
        seen.add(kind)
        # "area" is the pixel count of the drawn mask: RLE is exact, pycocotools' polygon
        # rasterisation differs from PIL's only along the outline
        if kind == "polygon":
            assert mask.sum() == pytest.approx(ann["area"], rel=0.15)
        else:
            assert mask.sum() == ann["area"]
    assert seen == {"polygon", "str", "list"}


def test_bad_segmentations_name_the_annotation():
    with pytest.raises(DataError, match="annotation 9: RLE size"):
        segmentation_to_mask({"size": [5, 5], "counts": "00"}, 10, 10, where="annotation 9")
    with pytest.raises(DataError, match="annotation 9: expected polygons"):
        segmentation_to_mask(42, 10, 10, where="annotation 9")
    assert segmentation_to_mask([[1, 2]], 10, 10).sum() == 0  # a degenerate polygon covers nothing
