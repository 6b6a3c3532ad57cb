"""The encoder layers' overflow guard without a host wait (teacherkit_dino.encoder_guard)
computes what transformers' ``GroundingDinoDeformableLayer`` computes, in training and
evaluation, with and without overflow, and never turns a tensor into a Python value."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
from dino_helpers import make_teacher, shapes_info
from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoDeformableLayer

from teacherkit_dino import encoder_guard, msda
from teacherkit_dino.config import TinyArchitecture
from teacherkit_dino.modeling import tiny_model_config


def _layers(dtype=torch.float32, dropout=0.2):
    config = tiny_model_config(TinyArchitecture(), vocab_size=40, max_text_len=32)
    config.dropout = config.activation_dropout = dropout
    torch.manual_seed(0)
    theirs = GroundingDinoDeformableLayer(config).to(dtype)
    ours = copy.deepcopy(theirs)
    assert encoder_guard.install(torch.nn.ModuleList([ours])) == 1
    assert type(ours) is encoder_guard.SyncFreeDeformableLayer
    return config, theirs, ours


def _inputs(config, dtype=torch.float32):
    shapes = [(6, 8), (3, 4), (2, 2), (1, 1)][: config.num_feature_levels]
    spatial = torch.tensor(shapes)
    length = int(spatial.prod(1).sum())
    g = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(2, length, config.d_model, generator=g).to(dtype),
        "attention_mask": torch.zeros(2, length, dtype=torch.bool),
        "position_embeddings": torch.randn(2, length, config.d_model, generator=g).to(dtype),
        "reference_points": torch.rand(2, length, len(shapes), 2, generator=g).to(dtype),
        "spatial_shapes": spatial,
        "spatial_shapes_list": shapes,
        "level_start_index": torch.cat([torch.zeros(1, dtype=torch.long), spatial.prod(1).cumsum(0)[:-1]]),
    }


def _run(layer, inputs, seed=5):
    torch.manual_seed(seed)  # the same dropout draws for both classes
    with msda.shape_checks_off():  # transformers' own shape check reads a tensor too (see msda)
        return layer(**inputs)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
def test_same_outputs_as_transformers_layer(dtype, training):
    config, theirs, ours = _layers(dtype)
    inputs = _inputs(config, dtype)
    theirs.train(training)
    ours.train(training)
    expected, got = _run(theirs, inputs), _run(ours, inputs)
    assert torch.equal(expected, got)
    if training:  # dropout drew: a different seed gives another output
        assert not torch.equal(got, _run(ours, inputs, seed=6))


def _overflowing(dtype):
    config, theirs, ours = _layers(dtype, dropout=0.0)
    inputs = _inputs(config, dtype)
    with torch.no_grad():  # an overflowing final norm: some outputs become +-inf
        for layer in (theirs, ours):
            layer.final_layer_norm.weight[0] = float("inf")
    return theirs, ours, inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_overflow_is_clamped_as_transformers_does(dtype):
    theirs, ours, inputs = _overflowing(dtype)
    theirs.train()
    ours.train()
    expected, got = _run(theirs, inputs), _run(ours, inputs)
    assert not torch.isinf(expected).any()  # transformers clamped the infinities...
    assert (expected.abs() == torch.finfo(dtype).max).any()
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)  # ...and so did we


def test_no_tensor_becomes_a_python_value():
    """The host wait is a tensor read as a bool or number; transformers' layer does one per call."""
    theirs, ours, inputs = _overflowing(torch.float32)
    theirs.train()
    ours.train()
    reads = mock.patch.multiple(torch.Tensor, __bool__=mock.Mock(side_effect=AssertionError("host read")),
                                item=mock.Mock(side_effect=AssertionError("host read")))
    with reads, pytest.raises(AssertionError, match="host read"):
        _run(theirs, inputs)
    with reads:
        _run(ours, inputs)


def test_float16_keeps_large_finite_values_and_clamps_overflow():
    """float16's largest value less 1000 is a finite value of its own: clamping only when a
    value overflowed (transformers' rule) must leave 65000 alone when nothing did."""
    big = torch.tensor([65000.0, -1.0], dtype=torch.float16)
    assert torch.equal(encoder_guard.clamp_nonfinite(big), big)
    over = torch.tensor([65000.0, float("inf"), float("-inf")], dtype=torch.float16)
    bound = torch.tensor(torch.finfo(torch.float16).max - 1000, dtype=torch.float16)
    assert torch.equal(encoder_guard.clamp_nonfinite(over), torch.stack([bound, bound, -bound]))


def test_teacher_encoder_uses_the_guard_and_keeps_its_state_dict():
    teacher = make_teacher(shapes_info(), finetune="lora")
    layers = [m for m in teacher.hf_model.modules() if isinstance(m, GroundingDinoDeformableLayer)]
    assert layers and all(type(m) is encoder_guard.SyncFreeDeformableLayer for m in layers)
    keys = sorted(teacher.hf_model.state_dict())
    assert encoder_guard.install(teacher.hf_model, enabled=False) == 0
    assert all(type(m) is GroundingDinoDeformableLayer for m in layers)
    assert sorted(teacher.hf_model.state_dict()) == keys
