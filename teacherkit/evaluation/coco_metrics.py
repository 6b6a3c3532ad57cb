"""COCO detection metrics through pycocotools' COCOeval.

pycocotools prints its summaries to stdout; we silence that and return the numbers.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Names of COCOeval.stats entries, in order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _coco_from_dict(data: dict[str, Any]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    gt = copy.copy(data)
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    anns = []
    for ann in gt.get("annotations", []):
        ann = dict(ann)
        if "area" not in ann and ann.get("bbox"):
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
        anns.append(ann)
    gt["annotations"] = anns
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _scorable(gt: dict[str, Any], iou_type: str) -> dict[str, Any]:
    if iou_type == "segm":  # box-only instances have no mask to compare (pycocotools would fail on them)
        return dict(gt, annotations=[a for a in gt.get("annotations", []) if a.get("segmentation")])
    return gt


def coco_ground_truth(gt: dict[str, Any], iou_type: str) -> Any:
    """pycocotools' indexed ``COCO`` of ``gt`` for ``iou_type`` (``"bbox"`` or ``"segm"``),
    to build once and pass to :func:`bbox_metrics` / :func:`segm_metrics` every epoch
    (COCOeval only adds to it: the masks it encodes on the first call are reused)."""
    return _coco_from_dict(_scorable(gt, iou_type))


def _evaluate(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], iou_type: str, prefix: str,
              coco_gt: Any = None) -> dict[str, Any]:
    from pycocotools.cocoeval import COCOeval

    gt = _scorable(gt, iou_type)
    if coco_gt is None:
        coco_gt = _coco_from_dict(gt)
    key = "bbox" if iou_type == "bbox" else "segmentation"
    preds = [p for p in predictions if key in p]
    metrics: dict[str, Any] = {f"{prefix}_{name}": 0.0 for name in STAT_NAMES}
    # a class with no ground truth has no AP (None, shown as a dash), not an AP of 0
    with_gt = {a.get("category_id") for a in gt.get("annotations", []) if not a.get("iscrowd", 0)}
    metrics[f"{prefix}_per_class_AP"] = {c["name"]: 0.0 if c["id"] in with_gt else None
                                         for c in gt.get("categories", [])}
    metrics[f"{prefix}_num_predictions"] = len(preds)
    if not preds or not coco_gt.getAnnIds():
        return metrics
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes([dict(p) for p in preds])
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) for s in evaluator.stats]
    for name, value in zip(STAT_NAMES, stats, strict=True):
        metrics[f"{prefix}_{name}"] = max(value, 0.0)  # COCOeval uses -1 for "no such objects"
    # per-class AP at IoU .50:.95, area all, maxDets 100: precision is [T, R, K, A, M]
    precision = evaluator.eval["precision"]
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        metrics[f"{prefix}_per_class_AP"][names.get(cat_id, str(cat_id))] = float(np.mean(p)) if p.size else None
    return metrics


def bbox_metrics(gt: dict[str, Any], detections: Sequence[dict[str, Any]], *, coco_gt: Any = None) -> dict[str, Any]:
    """COCO box metrics of ``detections`` (``image_id, category_id, bbox [x,y,w,h], score``)
    against the ground-truth COCO dict ``gt``. Keys: ``bbox_AP``, ``bbox_AP50``, ...,
    ``bbox_per_class_AP`` (class name → AP, ``None`` for a class without ground truth,
    where AP is undefined). With no detections every defined AP is 0.

    :param coco_gt: ``coco_ground_truth(gt, "bbox")``, built once for many calls."""
    return _evaluate(gt, detections, "bbox", "bbox", coco_gt)


def segm_metrics(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *, coco_gt: Any = None) -> dict[str, Any]:
    """COCO mask metrics of predictions carrying ``segmentation`` (RLE) and ``score``
    (``coco_gt``: ``coco_ground_truth(gt, "segm")``, built once for many calls)."""
    return _evaluate(gt, predictions, "segm", "segm", coco_gt)
