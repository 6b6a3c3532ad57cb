"""IoU and dice of prompted masks: one predicted mask per ground-truth instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _decode(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    from teacherkit.data.masks import segmentation_to_mask

    return segmentation_to_mask(segmentation, height, width, where=where).astype(bool)


def iou_and_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and dice of two boolean masks. Two empty masks agree perfectly (1, 1)."""
    inter = np.logical_and(pred, gt).sum()
    union = np.logical_or(pred, gt).sum()
    total = pred.sum() + gt.sum()
    iou = 1.0 if union == 0 else float(inter / union)
    dice = 1.0 if total == 0 else float(2 * inter / total)
    return iou, dice


def prompted_mask_metrics(gt: dict[str, Any], predictions: Sequence[dict[str, Any]], *,
                          source: str = "ground truth") -> dict[str, Any]:
    """mIoU and mDice of predictions that each name the ground-truth ``annotation_id`` they
    were prompted from. Ground-truth instances without a prediction count as IoU 0, so a
    teacher cannot look better by skipping hard instances. Also per-class mIoU.

    :param source: names ``gt`` (its file) in the error about a mask that cannot be decoded.
    :raises SegmentationError: a ground-truth or predicted mask does not fit its image.
    """
    images = {img["id"]: img for img in gt.get("images", [])}
    names = {c["id"]: c["name"] for c in gt.get("categories", [])}
    anns = {a["id"]: a for a in gt.get("annotations", []) if a.get("segmentation") and not a.get("iscrowd", 0)}
    by_ann = {int(p["annotation_id"]): p for p in predictions if "annotation_id" in p}
    ious: list[float] = []
    dices: list[float] = []
    per_class: dict[str, list[float]] = {}
    for ann_id, ann in anns.items():
        img = images[ann["image_id"]]
        h, w = int(img["height"]), int(img["width"])
        pred = by_ann.get(ann_id)
        where = f"{source} annotation {ann_id}"
        gt_mask = _decode(ann["segmentation"], h, w, where)
        if pred is None:
            iou, dice = 0.0, 0.0
        else:
            iou, dice = iou_and_dice(_decode(pred["segmentation"], h, w, f"prediction for {where}"), gt_mask)
        ious.append(iou)
        dices.append(dice)
        per_class.setdefault(names.get(ann["category_id"], str(ann["category_id"])), []).append(iou)
    return {
        "mIoU": float(np.mean(ious)) if ious else 0.0,
        "mDice": float(np.mean(dices)) if dices else 0.0,
        "num_instances": len(ious),
        "num_predicted": sum(1 for a in anns if a in by_ann),
        "per_class_mIoU": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
    }
