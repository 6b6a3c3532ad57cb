"""Preprocessing: resize rules, box normalisation, padding masks, text padding, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from dino_helpers import info_from_categories, make_teacher, random_sample, shapes_info

from teacherkit_dino.preprocess import resize_size, xywh_to_normalised_cxcywh


@pytest.mark.parametrize(
    ("size", "expected"),
    [((480, 640), (800, 1067)), ((640, 480), (1067, 800)), ((500, 2000), (333, 1333)), ((800, 800), (800, 800))],
)
def test_resize_keeps_aspect_within_limits(size, expected):
    assert resize_size(*size, 800, 1333) == expected


def test_boxes_become_normalised_cxcywh_and_are_clipped():
    boxes = np.array([[10, 20, 30, 40], [-5, 0, 10, 10], [90, 50, 20, 20]], dtype=np.float32)
    out = xywh_to_normalised_cxcywh(boxes, height=100, width=100)
    np.testing.assert_allclose(out[0], [0.25, 0.4, 0.3, 0.4], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.025, 0.05, 0.05, 0.1], atol=1e-6)  # clipped at x=0
    np.testing.assert_allclose(out[2], [0.95, 0.6, 0.1, 0.2], atol=1e-6)  # clipped at x=100


def test_sample_and_batch_layout():
    teacher = make_teacher(shapes_info(), shortest_edge=64, longest_edge=96)
    pre = teacher.make_preprocessor()
    pre = pickle.loads(pickle.dumps(pre))  # runs in DataLoader workers
    rng = np.random.default_rng(0)
    samples = [random_sample(rng, 1, [0, 2], size=(48, 64)), random_sample(rng, 2, [], size=(96, 48))]
    samples[0]["iscrowd"] = np.array([0, 1])
    items = [pre(s, train=True) for s in samples]
    assert items[0]["pixel_values"].shape == (3, 64, 85)
    assert items[1]["pixel_values"].shape == (3, 96, 48)  # long side capped at 96
    assert len(items[0]["boxes"]) == 1  # crowd box dropped
    batch = pre.collate(items)
    assert batch["pixel_values"].shape == (2, 3, 96, 85) and batch["pixel_values"].dtype == torch.uint8
    assert "pixel_mask" not in batch and batch["image_sizes"].tolist() == [[64, 85], [96, 48]]
    batch = teacher.finish_batch(batch)  # what forward/predict do on the device
    assert batch["pixel_mask"][0, :64, :85].all() and not batch["pixel_mask"][0, 64:].any()
    assert batch["pixel_mask"][1, :, :48].all() and not batch["pixel_mask"][1, :, 48:].any()
    assert not batch["pixel_values"][1, :, :, 48:].any()  # padding is 0 after normalisation
    # Normalisation from the processor settings: a mid-grey pixel of 0.5 maps to (0.5-mean)/std.
    grey = pre.collate([pre(random_sample(rng, 3, [], size=(64, 64)) | {"image": np.full((64, 64, 3), 128, np.uint8)},
                            train=False)])
    expected = (128 / 255 - np.asarray(teacher.base.image_mean)) / np.asarray(teacher.base.image_std)
    np.testing.assert_allclose(pre.finish(grey)["pixel_values"][0, :, 0, 0].numpy(), expected, rtol=1e-5)
    assert batch["orig_sizes"] == [(48, 64), (96, 48)] and batch["image_ids"] == [1, 2]
    label = batch["labels"][0]
    assert label["class_labels"].tolist() == [teacher.prompts.full.phrase_of()[0]]
    cx, cy, w, h = label["boxes"][0].tolist()
    x, y, bw, bh = samples[0]["boxes"][0]
    assert cx == pytest.approx((x + bw / 2) / 64, abs=1e-5) and h == pytest.approx(bh / 48, abs=1e-5)


def test_per_sample_prompts_are_padded_with_pad_id_and_masked():
    names = [f"thing {i}" for i in range(120)]
    info = info_from_categories([{"id": i + 1, "name": n} for i, n in enumerate(names)])
    teacher = make_teacher(info, max_text_len=64)
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(1)
    # Different positives → different prompts; a long-named class makes lengths differ.
    items = [pre(random_sample(rng, i, labels), train=True) for i, labels in enumerate([[1, 100], [5], []])]
    batch = pre.collate(items)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] <= 64
    for i, item in enumerate(items):
        n = len(item["prompt"])
        assert ids[i, :n].tolist() == list(item["prompt"].input_ids)
        assert mask[i, :n].all() and not mask[i, n:].any() and (ids[i, n:] == 0).all()
        # Boxes point at the phrase of their own class in their own prompt.
        classes = batch["phrase_classes"][i]
        assert [classes[k] for k in batch["labels"][i]["class_labels"].tolist()] == (
            [1, 100] if i == 0 else [5] if i == 1 else []
        )
    assert len(batch["prompt_chunks"]) == len(teacher.prompts.chunks) > 1
    assert isinstance(batch["prompt_chunks"][0]["input_ids"], torch.Tensor)
