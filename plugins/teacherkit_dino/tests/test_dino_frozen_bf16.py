"""teachers.grounding_dino.frozen_precision: bf16 stores the parts LoRA leaves frozen in
bfloat16 and runs them without autocast (teacherkit_dino.frozen_bf16)."""

from __future__ import annotations

import copy

import pytest
import torch
from dino_helpers import make_teacher, shapes_info, two_image_batch
from pydantic import ValidationError

from teacherkit_dino import frozen_bf16
from teacherkit_dino.config import GroundingDinoConfig
from teacherkit_dino.loss import GroundingDinoLoss


def _teacher(**overrides):
    torch.manual_seed(0)
    return make_teacher(shapes_info(), finetune="lora", **overrides)


def test_frozen_parts_are_stored_in_bf16_and_trained_parts_are_not():
    teacher = _teacher(frozen_precision="bf16")
    model = teacher.hf_model
    assert frozen_bf16.installed(model) == list(frozen_bf16.PARTS)
    for name in frozen_bf16.PARTS:
        floats = [p for p in getattr(model.model, name).parameters() if p.is_floating_point()]
        assert floats and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in floats)
    trained = [p for p in teacher.model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # LoRA and the box head
    assert all(p.dtype == torch.float32 for p in model.model.decoder.parameters())


@pytest.mark.parametrize("autocast", [False, True])
def test_a_training_step_runs_and_reaches_every_trained_parameter(autocast):
    teacher = _teacher(frozen_precision="bf16")
    teacher.model.train()
    batch = two_image_batch(teacher)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with context:
        out = teacher.forward(teacher.model, batch)
        loss = GroundingDinoLoss.from_model_config(teacher.hf_model.config)(out, batch)["loss"]
    if not autocast:  # the bf16 parts' outputs come back as float32 to float32 layers
        assert out["logits"].dtype == torch.float32
    assert torch.isfinite(loss)
    loss.backward()
    trained = {n: p for n, p in teacher.model.named_parameters() if p.requires_grad}
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trained.values())
    assert any(p.grad.abs().sum() > 0 for n, p in trained.items() if "lora_B" in n)


def test_frozen_features_stay_close_to_float32_parts_under_autocast():
    """Same weights, the frozen parts in bf16 throughout against float32 under bf16 autocast:
    a different rounding, not a different model. (Compared on the encoder's output: the
    proposals picked from it by top-k can swap places between near-equal random scores.)"""
    reference, bf16 = _teacher(), _teacher(frozen_precision="bf16")
    batch = two_image_batch(reference)
    features = []
    for teacher in (reference, bf16):
        teacher.model.eval()
        hook = teacher.hf_model.model.encoder.register_forward_hook(
            lambda _m, _a, out: features.append(out.last_hidden_state_vision.float()))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            teacher.forward(teacher.model, batch)
        hook.remove()
    assert not torch.equal(features[0], features[1])  # the parts did run in another precision
    assert (features[1] - features[0]).norm() <= 0.03 * features[0].norm()


def test_a_trained_part_keeps_float32_and_autocast():
    teacher = _teacher(frozen_precision="bf16", freeze_backbone=False)
    assert "backbone" not in frozen_bf16.installed(teacher.hf_model)
    assert all(p.dtype == torch.float32 for p in teacher.hf_model.model.backbone.parameters())


def test_a_copy_runs_its_own_parts():
    teacher = _teacher(frozen_precision="bf16")
    twin = copy.deepcopy(teacher.hf_model)
    for name in frozen_bf16.PARTS:
        assert getattr(twin.model, name).forward.original.__self__ is getattr(twin.model, name)


def test_full_fine_tuning_refuses_it_with_a_message():
    with pytest.raises(ValidationError, match="frozen_precision 'bf16' applies to the parts LoRA leaves frozen"):
        GroundingDinoConfig(base="tiny", finetune="full", frozen_precision="bf16")
