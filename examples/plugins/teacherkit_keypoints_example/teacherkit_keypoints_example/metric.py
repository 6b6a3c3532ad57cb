"""How far the predicted centroid is from the true one: the example teacher's own metric
(``TeacherSpec.metric``), used by training each epoch and by ``teacherkit evaluate``.

Plain Python, no torch: the plugin module imports it when the CLI starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: an image counts as found when the error is within this share of its diagonal
PCK_THRESHOLD = 0.1


def true_centroids(gt: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """``image_id -> (x, y)``: the mean of every visible keypoint of the image, over all
    its annotations (the target the teacher learns). Images without one are left out."""
    points: dict[int, list[tuple[float, float]]] = {}
    for ann in gt.get("annotations", []):
        kps = ann.get("keypoints") or []
        for x, y, v in zip(kps[0::3], kps[1::3], kps[2::3]):
            if v > 0:
                points.setdefault(int(ann["image_id"]), []).append((float(x), float(y)))
    return {image_id: (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
            for image_id, pts in points.items()}


def centroid_metrics(gt: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``centroid_error_px``: mean distance in pixels between predicted and true centroid;
    ``centroid_pck``: share of images where it is within ``PCK_THRESHOLD`` of the image
    diagonal. An image without a prediction counts as missed by its whole diagonal, so
    skipping hard images cannot help. Only images with a visible keypoint are scored.

    :param gt: the COCO dict of the evaluation file.
    :param predictions: ``{"image_id", "keypoints": [x, y, v], ...}`` per image, in pixels.
    """
    truth = true_centroids(gt)
    sizes = {int(img["id"]): (float(img["width"]), float(img["height"])) for img in gt.get("images", [])}
    predicted = {int(p["image_id"]): p["keypoints"][:2] for p in predictions if p.get("keypoints")}
    errors, hits = [], 0
    for image_id, (tx, ty) in truth.items():
        diagonal = math.hypot(*sizes[image_id])
        if image_id in predicted:
            px, py = predicted[image_id]
            error = math.hypot(float(px) - tx, float(py) - ty)
        else:
            error = diagonal
        errors.append(error)
        hits += error <= PCK_THRESHOLD * diagonal
    if not errors:  # nothing to score: no value rather than a made-up one
        return {"num_images": 0}
    return {"centroid_error_px": sum(errors) / len(errors), "centroid_pck": hits / len(errors),
            "num_images": len(errors)}
