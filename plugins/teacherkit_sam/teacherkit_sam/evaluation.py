"""Scoring a SAM teacher with ground-truth box prompts: per-instance IoU and dice
(mIoU, mDice), and segm mAP of its masks through pycocotools.

The core's evaluation scores ``predict()`` output the same way; these helpers let
the plugin (and its tests) measure a teacher without the trainer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from teacherkit_sam.masks import rle_to_mask


def mask_iou_dice(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """IoU and dice of two binary masks; two empty masks agree perfectly (1.0, 1.0)."""
    pred, true = pred.astype(bool), true.astype(bool)
    inter = int(np.logical_and(pred, true).sum())
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0, 1.0
    return inter / (total - inter), 2 * inter / total


def evaluate_prompted(teacher: Any, samples: Sequence[dict[str, Any]], batch_size: int = 4) -> dict[str, Any]:
    """Prompt ``teacher`` with every ground-truth box of ``samples`` and compare each
    predicted mask with its ground truth at the original image size.

    :return: ``{"mIoU", "mDice", "instances": [{"image_id", "annotation_id", "iou", "dice"}],
        "predictions": [COCO result dicts]}``
    """
    import torch

    pre = teacher.make_preprocessor()
    was_training = teacher.model.training
    teacher.model.eval()
    instances: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
    device = next(teacher.model.parameters()).device
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            batch = pre.collate([pre(s, train=False) for s in chunk])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for sample, entries in zip(chunk, teacher.predict(teacher.model, batch)):
                truth = dict(zip([int(a) for a in sample["annotation_ids"]], sample["masks"]))
                for entry in entries:
                    iou, dice = mask_iou_dice(rle_to_mask(entry["segmentation"]), truth[entry["annotation_id"]])
                    instances.append({"image_id": entry["image_id"], "annotation_id": entry["annotation_id"],
                                      "iou": iou, "dice": dice})
                    predictions.append(entry)
    finally:
        teacher.model.train(was_training)
    return {
        "mIoU": float(np.mean([i["iou"] for i in instances])) if instances else float("nan"),
        "mDice": float(np.mean([i["dice"] for i in instances])) if instances else float("nan"),
        "instances": instances,
        "predictions": predictions,
    }


def segm_map(coco_gt: Any, predictions: Iterable[dict[str, Any]]) -> float:
    """COCO segm mAP@[.5:.95] of predicted masks (a ``pycocotools.coco.COCO`` as truth)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    results = [{k: p[k] for k in ("image_id", "category_id", "segmentation", "score")} for p in predictions]
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its tables
        detections = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, detections, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])
