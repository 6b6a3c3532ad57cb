"""Predictions: COCO detections in original pixels, thresholds, chunk merging, NMS."""

from __future__ import annotations

import numpy as np
import torch
from dino_helpers import info_from_categories, make_teacher, random_sample, shapes_info

from teacherkit_dino.postprocess import Candidates, per_class_nms, to_detections


def test_detections_are_coco_in_original_pixels():
    teacher = make_teacher(shapes_info(), finetune="full", box_threshold=0.0, text_threshold=0.0, nms_iou=None)
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(0)
    sizes = [(48, 64), (90, 30)]
    batch = pre.collate([pre(random_sample(rng, 10 + i, [0], size=s), train=False) for i, s in enumerate(sizes)])
    detections = teacher.predict(teacher.model, batch)
    assert teacher.model.training  # left as it was found
    queries = teacher.hf_model.config.num_queries
    for (h, w), image_id, dets in zip(sizes, [10, 11], detections, strict=True):
        assert len(dets) == queries  # thresholds 0: every query is a detection
        for d in dets:
            assert set(d) == {"image_id", "category_id", "bbox", "score"} and d["image_id"] == image_id
            assert d["category_id"] in {0, 3, 7}
            x, y, bw, bh = d["bbox"]
            assert 0 <= x <= x + bw <= w + 1e-3 and 0 <= y <= y + bh <= h + 1e-3
            assert 0.0 <= d["score"] <= 1.0

    strict = make_teacher(shapes_info(), finetune="full", box_threshold=0.99, text_threshold=0.99)
    assert all(
        d["score"] >= 0.99 for dets in strict.predict(strict.model, batch) for d in dets
    )


def test_every_chunk_runs_and_results_merge():
    names = [f"object number {i}" for i in range(300)]
    info = info_from_categories([{"id": 1000 + i, "name": n} for i, n in enumerate(names)])
    teacher = make_teacher(info, finetune="full", box_threshold=0.0, text_threshold=0.0, nms_iou=None,
                           max_detections=10_000)
    chunks = teacher.prompts.chunks
    assert len(chunks) > 1
    calls = []
    handle = teacher.hf_model.register_forward_hook(lambda _m, _a, kw, _o: calls.append(kw["input_ids"].shape),
                                                    with_kwargs=True)
    pre = teacher.make_preprocessor()
    batch = pre.collate([pre(random_sample(np.random.default_rng(1), 1, [5]), train=False)])
    dets = teacher.predict(teacher.model, batch)[0]
    handle.remove()
    assert [s[1] for s in calls] == [len(c) for c in chunks]
    queries = teacher.hf_model.config.num_queries
    assert len(dets) == queries * len(chunks)
    by_chunk = {teacher.prompts.chunks.index(c) for c in chunks
                for d in dets if info.class_mapping[d["category_id"]] in c.classes}
    assert by_chunk == set(range(len(chunks)))


def test_per_class_nms_suppresses_within_a_class_only():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 1, 0])
    assert sorted(per_class_nms(boxes, scores, classes, 0.5).tolist()) == [0, 2, 3]


def test_merge_maps_classes_to_category_ids_and_caps_count():
    cands = Candidates(
        boxes=[torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.2, 0.2]])],
        scores=[torch.tensor([0.4, 0.9])],
        classes=[torch.tensor([1, 0])],
    )
    dets = to_detections(cands, image_id=3, orig_size=(100, 200), category_ids=[0, 42], nms_iou=0.5,
                         max_detections=1)
    assert len(dets) == 1 and dets[0]["category_id"] == 0 and dets[0]["score"] == torch.tensor(0.9).item()
    dets = to_detections(cands, image_id=3, orig_size=(100, 200), category_ids=[0, 42], nms_iou=0.5,
                         max_detections=5)
    wide = next(d for d in dets if d["category_id"] == 42)
    np.testing.assert_allclose(wide["bbox"], [80.0, 30.0, 40.0, 40.0], atol=1e-4)  # cx .5·200, cy .5·100
