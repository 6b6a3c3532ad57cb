"""The SAM loss: focal + dice + IoU-prediction MSE, edge cases, resolution choice."""

from __future__ import annotations

import pytest
import torch

from teacherkit_sam.loss import SamLoss


def _batch(targets: torch.Tensor, valid: torch.Tensor | None = None, region: tuple[int, int] | None = None):
    """A collated-batch shaped dict for (B, K, S, S) uint8 targets."""
    b, k, s, _ = targets.shape
    image_region = torch.zeros(b, s, s, dtype=torch.bool)
    h, w = region or (s, s)
    image_region[:, :h, :w] = True
    return {
        "target_masks": targets,
        "instance_valid": valid if valid is not None else torch.ones(b, k, dtype=torch.bool),
        "image_region": image_region,
    }


def _logits_for(target: torch.Tensor, low: int, strength: float = 8.0) -> torch.Tensor:
    """Low-resolution logits that agree (strength > 0) or disagree with a target."""
    down = torch.nn.functional.interpolate(target.float()[:, :, None].flatten(0, 1) / 255, size=(low, low), mode="area")
    return ((down * 2 - 1) * strength).reshape(target.shape[0], target.shape[1], 1, low, low)


def _square_targets(b=1, k=2, s=32) -> torch.Tensor:
    t = torch.zeros(b, k, s, s, dtype=torch.uint8)
    t[:, 0, 4:20, 4:20] = 255
    t[:, 1, 10:30, 2:12] = 255
    return t


def test_agreeing_masks_score_far_lower_than_disagreeing_ones():
    targets = _square_targets()
    batch = _batch(targets)
    loss = SamLoss()
    good = loss({"pred_masks": _logits_for(targets, 16), "iou_scores": torch.ones(1, 2, 1)}, batch)
    bad = loss({"pred_masks": -_logits_for(targets, 16), "iou_scores": torch.ones(1, 2, 1)}, batch)
    assert good["loss"] < 0.2 * bad["loss"]
    assert set(good) == {"loss", "focal", "dice", "iou"}
    assert good["dice"] < 0.1 and bad["dice"] > 0.9
    # a bad mask predicted with IoU 1 is punished by the IoU head's MSE
    assert bad["iou"] > 0.8 and good["iou"] < 0.05
    expected = 20 * good["focal"] + good["dice"] + good["iou"]
    assert good["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_empty_and_one_pixel_targets_give_finite_loss_and_gradients():
    targets = torch.zeros(1, 2, 32, 32, dtype=torch.uint8)
    targets[0, 1, 7, 9] = 255
    logits = torch.zeros(1, 2, 1, 16, 16, requires_grad=True)
    out = SamLoss()({"pred_masks": logits, "iou_scores": torch.zeros(1, 2, 1, requires_grad=True)}, _batch(targets))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # an empty target predicted empty is a perfect answer (IoU 1, near-zero dice loss)
    empty = torch.zeros(1, 1, 32, 32, dtype=torch.uint8)
    out = SamLoss()({"pred_masks": torch.full((1, 1, 1, 16, 16), -20.0), "iou_scores": torch.ones(1, 1, 1)},
                    _batch(empty))
    assert out["loss"] < 1e-3


def test_a_batch_without_instances_is_a_zero_loss_that_still_backpropagates():
    logits = torch.randn(2, 1, 1, 16, 16, requires_grad=True)
    batch = _batch(torch.zeros(2, 1, 32, 32, dtype=torch.uint8), valid=torch.zeros(2, 1, dtype=torch.bool))
    out = SamLoss()({"pred_masks": logits, "iou_scores": torch.zeros(2, 1, 1)}, batch)
    assert out["loss"].item() == 0.0
    out["loss"].backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_padding_instances_and_the_padded_border_do_not_count():
    targets = _square_targets()
    logits = _logits_for(targets, 16)
    valid = torch.tensor([[True, False]])
    loss = SamLoss()
    base = loss({"pred_masks": logits, "iou_scores": torch.ones(1, 2, 1)}, _batch(targets, valid, region=(24, 32)))
    noisy = logits.clone()
    noisy[0, 1] = torch.randn_like(noisy[0, 1]) * 10  # a padding slot
    noisy[0, 0, :, 13:, :] = 30.0  # rows below the image area (24 of 32 px -> 12 of 16 logits)
    other = loss({"pred_masks": noisy, "iou_scores": torch.ones(1, 2, 1)}, _batch(targets, valid, region=(24, 32)))
    assert other["loss"].item() == pytest.approx(base["loss"].item(), rel=1e-3)


def test_with_several_candidate_masks_only_the_best_trains():
    targets = _square_targets()[:, :1]
    good = _logits_for(targets, 16)
    logits = torch.cat([-good, good, -good], dim=2).requires_grad_(True)  # (1, 1, 3, 16, 16)
    out = SamLoss()({"pred_masks": logits, "iou_scores": torch.ones(1, 1, 3)}, _batch(targets))
    out["loss"].backward()
    grad = logits.grad.abs().sum(dim=(-1, -2))[0, 0]
    assert grad[1] > 0 and grad[0] == 0 and grad[2] == 0
    assert out["dice"] < 0.1


def test_low_res_comparison_agrees_with_input_resolution_on_coarse_shapes():
    targets = _square_targets()
    outputs = {"pred_masks": _logits_for(targets, 16, strength=2.0), "iou_scores": torch.full((1, 2, 1), 0.5)}
    full = SamLoss(resolution="input")(outputs, _batch(targets))
    low = SamLoss(resolution="low_res")(outputs, _batch(targets))
    assert low["dice"].item() == pytest.approx(full["dice"].item(), abs=0.05)
    assert low["loss"].item() != full["loss"].item()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(shapes_samples):
    """The memory lever must not change what is learned."""
    import torch

    from teacherkit_sam import load_sam_with_lora

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        teacher = load_sam_with_lora("tiny", image_size=64, gradient_checkpointing=checkpointing)
        teacher.model.train()
        encoder_layers = [m for m in teacher.model.modules() if hasattr(m, "gradient_checkpointing")]
        assert encoder_layers and any(m.gradient_checkpointing for m in encoder_layers) == checkpointing
        pre = teacher.make_preprocessor()
        batch = pre.collate([pre(s, train=True) for s in shapes_samples[:2]])

        loss = SamLoss.from_config(teacher.config)(teacher.forward(teacher.model, batch), batch)["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in teacher.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.allclose(grads_a[k], grads_b[k], atol=1e-5) for k in grads_a)
