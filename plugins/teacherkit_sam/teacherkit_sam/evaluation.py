"""Scoring a SAM teacher with ground-truth box prompts, without the trainer: the
teacher predicts one mask per ground-truth box, and the core's metrics score them
(:func:`teacherkit.evaluation.mask_metrics.iou_and_dice` per instance,
:func:`teacherkit.evaluation.coco_metrics.segm_metrics` for COCO segm AP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from teacherkit.data.masks import rle_to_mask
from teacherkit.evaluation.mask_metrics import iou_and_dice


def evaluate_prompted(teacher: Any, samples: Sequence[dict[str, Any]], batch_size: int = 4) -> dict[str, Any]:
    """Prompt ``teacher`` with every ground-truth box of ``samples`` and compare each
    predicted mask with its ground truth at the original image size.

    :return: ``{"mIoU", "mDice", "instances": [{"image_id", "annotation_id", "iou", "dice"}],
        "predictions": [COCO result dicts]}`` (the predictions go to
        :func:`teacherkit.evaluation.coco_metrics.segm_metrics` for segm AP)
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
                    pred = rle_to_mask(entry["segmentation"]).astype(bool)
                    iou, dice = iou_and_dice(pred, truth[entry["annotation_id"]].astype(bool))
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
