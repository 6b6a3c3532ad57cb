"""The one metric dispatch (``teacherkit.evaluation.run.metrics_for``): built-in box and
mask metrics, a teacher's own metric, and undefined per-class AP shown as a dash."""

from __future__ import annotations

from typing import Any

import numpy as np

from teacherkit.evaluation.run import evaluator, metrics_for
from teacherkit.teachers import TeacherSpec


def _square_rle(x: int, y: int, side: int, h: int = 32, w: int = 32) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    m = np.zeros((h, w), np.uint8)
    m[y : y + side, x : x + side] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _gt() -> dict[str, Any]:
    return {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100.0,
             "segmentation": _square_rle(4, 4, 10), "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [20, 20, 8, 8], "area": 64.0, "iscrowd": 0},
        ],
    }


def _spec(**kwargs: Any) -> TeacherSpec:
    from teacherkit.config import TeacherConfig

    return TeacherSpec(name="probe", learns_from="boxes", config_model=TeacherConfig, **kwargs)


def test_box_metrics_and_undefined_per_class_ap():
    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [20, 20, 8, 8], "score": 0.8}]
    metrics = metrics_for(_spec(evaluation="bbox"), _gt(), dets)
    assert 0.0 < metrics["bbox_AP"] <= 1.0
    # "circle" has no ground truth in this file: its AP is undefined, never 0
    assert metrics["bbox_per_class_AP"]["circle"] is None
    assert metrics["bbox_per_class_AP"]["square"] > 0.0
    empty = metrics_for("bbox", _gt(), [])
    assert empty["bbox_per_class_AP"] == {"square": 0.0, "circle": None}


def test_prompted_masks_get_segm_ap_in_training_and_evaluation_alike():
    preds = [{"image_id": 1, "annotation_id": 10, "category_id": 1, "segmentation": _square_rle(4, 4, 10),
              "score": 0.9}]
    spec = _spec(evaluation="prompted_mask")
    metrics = metrics_for(spec, _gt(), preds)
    assert metrics["mIoU"] == 1.0 and metrics["segm_AP"] > 0.0  # the box-only instance is no mask to score
    assert evaluator(spec, _gt())(preds) == metrics  # what the training loop calls each epoch


def test_a_teacher_that_declares_its_metric_is_scored_by_it():
    seen = []

    def mean_keypoint_error(gt: dict[str, Any], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append((len(gt["annotations"]), len(predictions)))
        return {"keypoint_error": 1.5}

    preds = [{"image_id": 1, "keypoints": [3.0, 4.0, 2], "score": 1.0}]
    assert metrics_for(_spec(metric=mean_keypoint_error), _gt(), preds) == {"keypoint_error": 1.5}
    assert seen == [(2, 1)]
    assert metrics_for(_spec(), _gt(), preds) == {}  # evaluation "none" and no metric: not scored


def test_evaluate_table_shows_undefined_as_a_dash_and_plugin_metrics(capsys):
    from teacherkit.evaluation.commands import UNDEFINED, print_tables

    per_class = {"square": 0.5, "circle": None}
    box = {"bbox_AP": 0.5, "bbox_AP50": 0.7, "bbox_per_class_AP": per_class}
    result = {"adapter_scale": 1.0, "teachers": {
        "grounding_dino": {"data": {"base": {**box, "bbox_AP": 0.25}, "tuned": box}},
        "keypoint_centroid": {"data": {"base": {"keypoint_error": 3.0}, "tuned": {"keypoint_error": 1.0}}},
    }}
    print_tables(result)
    out = capsys.readouterr().out
    circle = next(line for line in out.splitlines() if "circle" in line)
    assert UNDEFINED in circle and "0.0000" not in circle
    assert "+0.2500" in out  # gain of bbox_AP
    assert "keypoint_error" in out and "-2.0000" in out


def test_undefined_headline_stats_become_none_for_people_only():
    from teacherkit.evaluation.run import undefined_as_none

    dets = [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.9}]
    metrics = metrics_for("bbox", _gt(), dets)  # both objects are small (areas 100 and 64)
    assert metrics["bbox_APl"] == 0.0 and metrics["bbox_APm"] == 0.0  # what the training loop reads
    shown = undefined_as_none(metrics, _gt())
    assert shown["bbox_APl"] is None and shown["bbox_APm"] is None and shown["bbox_ARl"] is None
    assert shown["bbox_APs"] == metrics["bbox_APs"] and shown["bbox_AP"] == metrics["bbox_AP"]
    crowd_only = dict(_gt(), annotations=[dict(a, iscrowd=1) for a in _gt()["annotations"]])
    assert all(v is None for k, v in undefined_as_none(metrics, crowd_only).items()
               if k.startswith("bbox_A") and k != "bbox_per_class_AP")
