"""IoU and dice of prompted masks: one predicted mask per ground-truth instance.

Computed on run-length encodings (pycocotools' ``area`` and ``iou``), never on decoded
pixels: a 1024² mask is a few hundred runs, so an epoch's evaluation does not allocate a
full-size array per instance. The ground truth is encoded once (:class:`MaskTruth`) and
reused by every epoch of a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def iou_and_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and dice of two boolean masks. Two empty masks agree perfectly (1, 1)."""
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    total = pred.sum() + gt.sum()
    iou = 1.0 if union == 0 else float(inter / union)
    dice = 1.0 if total == 0 else float(2 * inter / total)
    return iou, dice


def rle_iou_and_dice(pred: dict[str, Any], gt: dict[str, Any], gt_area: float) -> tuple[float, float]:
    """:func:`iou_and_dice` of two compressed RLEs of one size, without decoding them."""
    from pycocotools import mask as mask_utils

    pred_area = float(mask_utils.area([pred])[0])
    total = pred_area + gt_area
    if total == 0:
        return 1.0, 1.0
    iou = float(mask_utils.iou([pred], [gt], [0])[0][0])
    inter = iou * total / (1.0 + iou)  # from iou = inter / (a + b - inter)
    return iou, float(2.0 * inter / total)


@dataclass(frozen=True)
class _Instance:
    rle: dict[str, Any]
    area: float
    size: tuple[int, int]
    class_name: str


class MaskTruth:
    """The scorable instances of a ground-truth COCO dict, encoded once: every non-crowd
    annotation with a segmentation, by annotation id.

    :param source: names ``gt`` (its file) in the error about a mask that cannot be decoded.
    :raises SegmentationError: a ground-truth mask does not fit its image.
    """

    def __init__(self, gt: dict[str, Any], source: str = "ground truth") -> None:
        from pycocotools import mask as mask_utils

        from teacherkit.data.masks import segmentation_to_rle

        images = {img["id"]: img for img in gt.get("images", [])}
        names = {c["id"]: c["name"] for c in gt.get("categories", [])}
        self.source = source
        self.instances: dict[int, _Instance] = {}
        for ann in gt.get("annotations", []):
            if not ann.get("segmentation") or ann.get("iscrowd", 0):
                continue
            img = images[ann["image_id"]]
            size = (int(img["height"]), int(img["width"]))
            rle = segmentation_to_rle(ann["segmentation"], *size, where=f"{source} annotation {ann['id']}")
            self.instances[int(ann["id"])] = _Instance(rle, float(mask_utils.area([rle])[0]), size,
                                                      names.get(ann["category_id"], str(ann["category_id"])))


def prompted_mask_metrics(gt: dict[str, Any] | MaskTruth, predictions: Sequence[dict[str, Any]], *,
                          source: str = "ground truth") -> dict[str, Any]:
    """mIoU and mDice of predictions that each name the ground-truth ``annotation_id`` they
    were prompted from. Ground-truth instances without a prediction count as IoU 0, so a
    teacher cannot look better by skipping hard instances. Also per-class mIoU.

    :param gt: the ground-truth COCO dict, or its :class:`MaskTruth` (built once per run).
    :param source: names ``gt`` (its file) in the error about a mask that cannot be decoded.
    :raises SegmentationError: a ground-truth or predicted mask does not fit its image.
    """
    from teacherkit.data.masks import segmentation_to_rle

    truth = gt if isinstance(gt, MaskTruth) else MaskTruth(gt, source)
    by_ann = {int(p["annotation_id"]): p for p in predictions if "annotation_id" in p}
    ious: list[float] = []
    dices: list[float] = []
    per_class: dict[str, list[float]] = {}
    for ann_id, inst in truth.instances.items():
        pred = by_ann.get(ann_id)
        if pred is None:
            iou, dice = 0.0, 0.0
        else:
            where = f"prediction for {truth.source} annotation {ann_id}"
            iou, dice = rle_iou_and_dice(segmentation_to_rle(pred["segmentation"], *inst.size, where=where),
                                         inst.rle, inst.area)
        ious.append(iou)
        dices.append(dice)
        per_class.setdefault(inst.class_name, []).append(iou)
    return {
        "mIoU": float(np.mean(ious)) if ious else 0.0,
        "mDice": float(np.mean(dices)) if dices else 0.0,
        "num_instances": len(ious),
        "num_predicted": sum(1 for a in truth.instances if a in by_ann),
        "per_class_mIoU": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
    }
