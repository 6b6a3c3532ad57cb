"""The example teacher's own metric: distances in pixels to the true centroid, scored
through the core's one dispatch (``metrics_for``), as training and ``evaluate`` do."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1]
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from teacherkit_keypoints_example.metric import centroid_metrics  # noqa: E402
from teacherkit_keypoints_example.plugin import TEACHER  # noqa: E402

GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 30, "height": 40},
               {"id": 3, "width": 50, "height": 50}],
    "annotations": [
        # image 1: visible points at (10, 20) and (30, 20) over two annotations, one hidden point
        {"id": 1, "image_id": 1, "keypoints": [10, 20, 2, 99, 99, 0]},
        {"id": 2, "image_id": 1, "keypoints": [30, 20, 1]},
        {"id": 3, "image_id": 2, "keypoints": [6, 8, 2]},
        {"id": 4, "image_id": 3, "keypoints": [5, 5, 0]},  # nothing visible: not scored
    ],
}


def test_errors_are_pixel_distances_and_a_missing_prediction_costs_the_diagonal():
    predictions = [{"image_id": 1, "keypoints": [23.0, 24.0, 2], "score": 1.0}]  # 5 px from (20, 20)
    metrics = centroid_metrics(GT, predictions)
    assert metrics["num_images"] == 2
    assert metrics["centroid_error_px"] == pytest.approx((5.0 + math.hypot(30, 40)) / 2)
    assert metrics["centroid_pck"] == 0.5  # 5 px is within 10% of 141 px; the missed image is not


def test_the_core_dispatch_uses_the_teachers_metric():
    from teacherkit.evaluation.run import metrics_for

    exact = [{"image_id": 1, "keypoints": [20.0, 20.0, 2]}, {"image_id": 2, "keypoints": [6.0, 8.0, 2]}]
    assert metrics_for(TEACHER, GT, exact) == {"centroid_error_px": 0.0, "centroid_pck": 1.0, "num_images": 2}


def test_a_file_without_visible_keypoints_has_nothing_to_score():
    gt = {**GT, "annotations": [GT["annotations"][-1]]}
    assert centroid_metrics(gt, []) == {"num_images": 0}
