"""Overfit a few images: the loss falls clearly and the boxes land on their targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dino_helpers import load_coco_samples, make_teacher

from teacherkit_dino.loss import GroundingDinoLoss
from teacherkit_dino.postprocess import box_iou_xyxy

#: A detection "lands on" its target at IoU ≥ 0.5: the PASCAL VOC / COCO AP50 criterion
#: for a correct detection. The untrained model's top boxes reach it for almost no target.
IOU_HIT = 0.5


def hit_rate(samples, detections) -> tuple[float, list[float]]:
    """For each ground-truth box: the best IoU among the image's top-k detections (k = its
    number of boxes) that carry the right category."""
    ious = []
    for sample, dets in zip(samples, detections, strict=True):
        top = sorted(dets, key=lambda d: -d["score"])[: len(sample["boxes"])]
        for (x, y, w, h), cat in zip(sample["boxes"], sample["category_ids"], strict=True):
            target = torch.tensor([[x, y, x + w, y + h]])
            same = [d["bbox"] for d in top if d["category_id"] == cat]
            preds = torch.tensor([[bx, by, bx + bw, by + bh] for bx, by, bw, bh in same]).reshape(-1, 4)
            ious.append(float(box_iou_xyxy(target, preds).max()) if len(same) else 0.0)
    return float(np.mean([i >= IOU_HIT for i in ious])), ious


@pytest.mark.slow
def test_overfit_four_images(tiny_coco):
    info, samples = load_coco_samples(tiny_coco(num_images=4, size=(96, 128), masks=False, seed=1))
    assert 0 in set(info.class_mapping.values())
    torch.manual_seed(0)
    teacher = make_teacher(info, finetune="full", shortest_edge=96, longest_edge=128,
                           box_threshold=0.0, text_threshold=0.0)
    pre = teacher.make_preprocessor()
    loss_fn = GroundingDinoLoss.from_model_config(teacher.hf_model.config)
    train_batch = pre.collate([pre(s, train=True) for s in samples])
    eval_batch = pre.collate([pre(s, train=False) for s in samples])
    before, _ = hit_rate(samples, teacher.predict(teacher.model, eval_batch))

    optimizer = torch.optim.AdamW(teacher.model.parameters(), lr=1e-3, weight_decay=0.0)
    teacher.model.train()
    losses = []
    for _ in range(150):
        result = loss_fn(teacher.forward(teacher.model, train_batch), train_batch)
        optimizer.zero_grad()
        result["loss"].backward()
        torch.nn.utils.clip_grad_norm_(teacher.model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(result["loss"].detach()))

    assert all(np.isfinite(losses))
    early, late = np.mean(losses[5:10]), np.mean(losses[-10:])
    assert late < 0.3 * early, (early, late)
    after, ious = hit_rate(samples, teacher.predict(teacher.model, eval_batch))
    assert before <= 0.25
    assert after >= 0.7, ious
    assert np.median(ious) >= 0.7, ious
