"""Grounding DINO's multi-head attention through fused SDPA (teacherkit_dino.sdpa) computes
what transformers' eager code does: outputs, loss and every gradient."""

from __future__ import annotations

import pytest
import torch
from dino_helpers import make_teacher, shapes_info, two_image_batch
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoMultiheadAttention

from teacherkit_dino import sdpa
from teacherkit_dino.loss import GroundingDinoLoss


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_sdpa_matches_eager_outputs_and_gradients(finetune):
    runs = {}
    for mode in ("eager", "sdpa"):
        torch.manual_seed(0)
        teacher = make_teacher(shapes_info(), finetune=finetune, attention=mode)
        expected_class = sdpa.SdpaMultiheadAttention if mode == "sdpa" else GroundingDinoMultiheadAttention
        attn = [m for m in teacher.hf_model.modules() if isinstance(m, GroundingDinoMultiheadAttention)]
        assert attn and all(type(m) is expected_class for m in attn)
        teacher.model.train()
        batch = two_image_batch(teacher)
        out = teacher.forward(teacher.model, batch)
        loss = GroundingDinoLoss.from_model_config(teacher.hf_model.config)(out, batch)["loss"]
        loss.backward()
        grads = {n: p.grad.clone() for n, p in teacher.model.named_parameters() if p.grad is not None}
        runs[mode] = (out["logits"].detach(), out["pred_boxes"].detach(), float(loss.detach()), grads,
                      sorted(teacher.model.state_dict()))
    (la, ba, lossa, ga, ka), (lb, bb, lossb, gb, kb) = runs["eager"], runs["sdpa"]
    finite = torch.isfinite(la)
    assert torch.equal(finite, torch.isfinite(lb)) and torch.allclose(la[finite], lb[finite], atol=1e-4)
    assert torch.allclose(ba, bb, atol=1e-5)
    assert lossb == pytest.approx(lossa, rel=1e-5)
    assert ka == kb and sorted(ga) == sorted(gb)
    scale = max(g.abs().max() for g in ga.values())
    worst = max((ga[n] - gb[n]).abs().max() for n in ga)
    assert worst <= 1e-4 * scale


def test_set_attention_switches_both_ways_and_keeps_state():
    teacher = make_teacher(shapes_info(), finetune="lora")  # default: sdpa
    model = teacher.hf_model
    count = sum(isinstance(m, GroundingDinoMultiheadAttention) for m in model.modules())
    keys = sorted(model.state_dict())
    assert sdpa.set_attention(model, "sdpa") == 0  # already
    assert sdpa.set_attention(model, "eager") == count
    assert sorted(model.state_dict()) == keys
    assert sdpa.set_attention(model, "sdpa") == count
    with pytest.raises(ValueError, match="attention mode"):
        sdpa.set_attention(model, "flash")


def test_attention_weights_request_falls_back_to_transformers():
    torch.manual_seed(0)
    teacher = make_teacher(shapes_info(), finetune="full")
    module = next(m for m in teacher.hf_model.modules() if isinstance(m, sdpa.SdpaMultiheadAttention))
    x = torch.randn(2, 5, teacher.hf_model.config.d_model)
    mask = torch.zeros(2, 1, 5, 5)
    mask[:, :, :, -1] = torch.finfo(torch.float32).min  # last key masked out
    out, weights = module(x, x, x, attention_mask=mask, output_attentions=True)
    (fused,) = module(x, x, x, attention_mask=mask)
    assert weights.shape == (2, module.num_attention_heads, 5, 5) and torch.all(weights[..., -1] == 0)
    assert torch.allclose(out, fused, atol=1e-6)
