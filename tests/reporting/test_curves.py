"""PR, F1-vs-confidence and confusion matrix of box predictions; IoU of prompted masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from teacherkit.reporting.curves import (
    mask_ious,
    precision_recall,
    recorded_threshold,
    write_box_curves,
    write_mask_curves,
)
from teacherkit.reporting.matching import box_iou, confusion_matrix, f1_curve, greedy_match
from teacherkit.reporting.paths import ReportPaths


def test_box_iou_and_greedy_matching():
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]])
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    gt = np.array([[0, 0, 10, 10]])
    # two detections of one object: the higher score takes it, the other is unmatched
    matched = greedy_match(gt, np.array([1]), np.array([[0, 0, 10, 10], [0, 0, 10, 9]]), np.array([1, 1]),
                           np.array([0.4, 0.7]))
    assert matched.tolist() == [-1, 0]
    # another class does not match unless the matching ignores classes
    assert greedy_match(gt, np.array([1]), gt, np.array([2]), np.array([0.5])).tolist() == [-1]
    assert greedy_match(gt, np.array([1]), gt, np.array([2]), np.array([0.5]), same_class=False).tolist() == [0]


def test_pr_curve_is_an_envelope_per_class(gt, predictions):
    pr = precision_recall(gt, predictions)
    assert len(pr["recall"]) == 101 and pr["iou"] == 0.5
    assert pr["per_class"]["star"] is None  # no ground truth: no curve
    for curve in [pr["overall"], *(c for c in pr["per_class"].values() if c is not None)]:
        values = np.asarray(curve)
        assert np.all(np.diff(values) <= 1e-12), "precision must not rise with recall"
        assert values.min() >= 0 and values.max() <= 1
    circle = np.asarray(pr["per_class"]["circle"])
    # circle: 2 objects; the 0.9 detection finds one (precision 1 up to recall 0.5), the other is never found
    assert circle[:51] == pytest.approx(1.0) and circle[51:].max() == 0.0
    square = np.asarray(pr["per_class"]["square"])
    assert square[:51] == pytest.approx(1.0)  # the one square at 0.6 is right; the other is missed
    assert np.asarray(pr["overall"]) == pytest.approx((circle + square) / 2)


def test_f1_curve_finds_the_best_threshold(gt, predictions):
    curve = f1_curve(gt, predictions)
    thresholds = np.asarray(curve["thresholds"])
    assert thresholds.min() == 0.0 and thresholds.max() == 1.0 and 0.0 <= curve["best_threshold"] <= 1.0
    # class-aware: kept above 0.55 are 0.9 (hit), 0.8 (wrong class), 0.6 (hit): P 2/3, R 2/4, F1 4/7
    assert curve["best_f1"] == pytest.approx(4 / 7)
    assert curve["best_threshold"] == pytest.approx(0.56)
    f1 = dict(zip(np.round(thresholds, 2), curve["f1"]))
    assert f1[0.0] == pytest.approx(2 * 0.4 * 0.5 / 0.9)  # all five kept: P 2/5, R 2/4
    assert f1[0.85] == pytest.approx(0.4) and f1[0.95] == 0.0
    assert curve["num_ground_truth"] == 4 and curve["num_detections"] == 5
    assert max(curve["per_class_f1"]["star"]) == 0.0


@pytest.mark.parametrize("threshold", [0.0, 0.56, 0.95])
def test_confusion_matrix_counts_every_object_and_detection_once(gt, predictions, threshold):
    result = confusion_matrix(gt, predictions, threshold=threshold)
    matrix = np.asarray(result["matrix"])
    assert result["labels"] == ["circle", "square", "star", "background"]
    assert matrix.sum() == result["matched"] + result["missed"] + result["false_detections"]
    # every ground-truth object is in its true column once (matched, or missed on the background row)
    assert matrix[:, :3].sum(axis=0).tolist() == [2, 2, 0]
    kept = sum(p["score"] >= threshold for p in predictions)
    assert matrix[:3].sum() == kept  # every kept detection is in its predicted row once
    assert matrix[3, 3] == 0


def test_confusion_matrix_at_the_best_threshold(gt, predictions):
    result = confusion_matrix(gt, predictions, threshold=0.56)
    m = np.asarray(result["matrix"])
    assert m[0, 0] == 1 and m[1, 1] == 1  # circle and square found
    assert m[0, 1] == 1  # the square called a circle: off the diagonal
    assert m[3, 0] == 1  # image 2's circle missed
    assert (result["matched"], result["missed"], result["false_detections"]) == (3, 1, 0)
    low = confusion_matrix(gt, predictions, threshold=0.0)
    low_matrix = np.asarray(low["matrix"])
    assert low["false_detections"] == 2 and low_matrix[0, 3] == 1 and low_matrix[1, 3] == 1


def test_box_curves_are_written_with_the_threshold(tmp_path, gt, predictions):
    paths = ReportPaths(tmp_path / "teachers" / "grounding_dino")
    record = write_box_curves(paths, gt, predictions, title="grounding_dino", epoch=4)
    for name in ("pr_curve", "f1_curve", "confusion_matrix"):
        with Image.open(paths.curve(name)) as img:
            assert img.format == "PNG" and min(img.size) > 200
    saved = json.loads(paths.curves_json.read_text())
    assert saved["best_threshold"] == pytest.approx(0.56) == record["best_threshold"] and saved["epoch"] == 4
    assert np.asarray(saved["confusion"]["matrix"]).sum() == 4
    assert recorded_threshold(paths.teacher_dir) == pytest.approx(0.56)
    assert recorded_threshold(tmp_path / "nowhere") is None


def test_no_predictions_gives_empty_curves(gt):
    pr = precision_recall(gt, [])
    assert pr["overall"] == [0.0] * 101
    curve = f1_curve(gt, [])
    assert curve["best_f1"] == 0.0 and curve["num_detections"] == 0
    result = confusion_matrix(gt, [], threshold=0.0)
    assert result["missed"] == 4 and np.asarray(result["matrix"]).sum() == 4


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def test_mask_ious_per_instance_and_class(tmp_path):
    from teacherkit.data.masks import mask_to_rle, segmentation_to_mask

    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
          "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}],
          "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": _square(0, 0, 10)},
                          {"id": 11, "image_id": 1, "category_id": 2, "segmentation": _square(20, 20, 10)},
                          {"id": 12, "image_id": 1, "category_id": 2, "segmentation": _square(0, 20, 10)}]}
    exact = mask_to_rle(segmentation_to_mask(_square(0, 0, 10), 40, 40))
    half = np.zeros((40, 40), np.uint8)
    half[20:30, 20:25] = 1  # half of instance 11
    preds = [{"image_id": 1, "annotation_id": 10, "category_id": 1, "segmentation": exact, "score": 0.9},
             {"image_id": 1, "annotation_id": 11, "category_id": 2, "segmentation": mask_to_rle(half), "score": 0.5}]
    result = mask_ious(gt, preds)  # instance 12 has no prediction: IoU 0
    assert result["ious"] == pytest.approx([1.0, 0.5, 0.0], abs=0.02)
    assert result["per_class_mean"]["circle"] == pytest.approx(1.0)
    assert result["per_class_mean"]["square"] == pytest.approx(0.25, abs=0.02)
    assert result["per_class_count"] == {"circle": 1, "square": 2}
    paths = ReportPaths(tmp_path / "sam")
    record = write_mask_curves(paths, gt, preds, title="sam")
    assert paths.curve("iou_histogram").is_file() and paths.curve("iou_per_class").is_file()
    assert record["mean_iou"] == pytest.approx(0.5, abs=0.02)
    assert recorded_threshold(paths.teacher_dir) is None  # a mask teacher has no confidence cut
