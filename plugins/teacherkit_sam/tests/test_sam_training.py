"""Training the tiny SAM: both modes learn, and an overfit run lifts mIoU clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sam_helpers import load_samples, train_steps

from teacherkit.evaluation.coco_metrics import segm_metrics
from teacherkit.evaluation.mask_metrics import iou_and_dice
from teacherkit_sam import load_sam_with_lora
from teacherkit_sam.evaluation import evaluate_prompted


@pytest.mark.parametrize(
    "setup",
    [
        {"finetune": "full"},  # the tiny preset
        {"mode": "lora"},  # LoRA on the encoder's qkv + a fully trained decoder
        {"mode": "frozen_encoder"},  # decoder only, from cached embeddings
        {"mode": "frozen_encoder", "prompt": "mixed", "num_negative_points": 1, "loss_resolution": "low_res"},
    ],
    ids=["full", "lora", "frozen-encoder", "frozen-mixed-lowres"],
)
def test_each_mode_trains(setup, shapes_samples):
    torch.manual_seed(0)
    teacher = load_sam_with_lora("tiny", image_size=64, **setup)
    before = {n: p.detach().clone() for n, p in teacher.model.named_parameters() if p.requires_grad}
    losses = train_steps(teacher, shapes_samples, steps=20, lr=3e-3)
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    changed = {n for n, p in teacher.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    # every trained part moved (single-mask box prompts leave the other mask tokens' heads idle, as in SAM)
    for part in ("vision_encoder", "prompt_encoder", "mask_decoder"):
        if any(part in n and "point_embed" not in n for n in before):
            assert any(part in n for n in changed), part
    frozen = [n for n, p in teacher.model.named_parameters() if not p.requires_grad and "vision_encoder" in n]
    assert bool(frozen) == (setup.get("finetune") != "full" or setup.get("mode") == "frozen_encoder")


@pytest.mark.slow
def test_overfitting_a_few_images_lifts_miou_clearly(tiny_coco):
    """Four images, 1-3 shapes each, the tiny preset (full fine-tuning at 128 px).

    Threshold: a random decoder scores mIoU ~0.1. Answering every prompt with its
    filled box scores ~0.75 here (squares ~1, circles pi/4, triangles 1/2), and a
    model could learn that from the box prompt alone, so the bar sits above it:
    mIoU >= max(0.8, box baseline + 0.05) means the teacher learned the shapes' outlines.
    150 steps reach ~0.93 on a 2-core CPU in ~12 s.
    """
    path = tiny_coco(num_images=4, size=(96, 128), mask_format="mixed", seed=3)
    samples = load_samples(path)
    box_ious = []
    for s in samples:
        for mask, (x, y, w, h) in zip(s["masks"], s["boxes"]):
            filled = np.zeros_like(mask)
            filled[int(y) : int(y + h), int(x) : int(x + w)] = 1
            box_ious.append(iou_and_dice(filled.astype(bool), mask.astype(bool))[0])
    box_baseline = float(np.mean(box_ious))

    torch.manual_seed(0)
    teacher = load_sam_with_lora("tiny", image_size=128, finetune="full", box_jitter=0.0)
    before = evaluate_prompted(teacher, samples)
    train_steps(teacher, samples, steps=150, lr=3e-3)
    after = evaluate_prompted(teacher, samples)

    assert before["mIoU"] < 0.3
    assert after["mIoU"] >= max(0.8, box_baseline + 0.05), (before["mIoU"], after["mIoU"], box_baseline)
    assert after["mDice"] > after["mIoU"]
    assert len(after["instances"]) == sum(len(s["masks"]) for s in samples)

    gt = json.loads(path.read_text())
    assert segm_metrics(gt, after["predictions"])["segm_AP"] > segm_metrics(gt, before["predictions"])["segm_AP"]
