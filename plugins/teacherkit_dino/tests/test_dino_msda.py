"""The Triton deformable-attention kernel (teacherkit_dino.msda), checked on the CPU through
Triton's interpreter against transformers' implementation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dino_helpers import make_teacher, shapes_info

from teacherkit_dino import msda

pytest.importorskip("triton", reason="the kernel needs Triton (in the test extras)")

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def interpreted() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "msda_interpreted.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_kernel_matches_transformers(interpreted):
    k = interpreted["kernel"]
    assert k["shape_equal"]
    assert k["max_abs"] < 1e-5 * max(1.0, k["ref_abs_mean"])
    # bf16 values (autocast's value projection) promote with float32 weights, as transformers' does
    assert k["bf16_dtype"] == "torch.float32" and k["bf16_max_abs"] < 2e-2


@pytest.mark.slow
def test_frozen_encoder_uses_kernel_and_training_is_unchanged(interpreted):
    t = interpreted["teacher"]
    # decoder-only LoRA: the encoder's deformable attention needs no gradient -> kernel;
    # the decoder's (LoRA on its projections) -> transformers, which has a backward
    assert t["counts_auto_mode"]["kernel"] >= 1 and t["counts_auto_mode"]["torch"] >= 1
    assert t["counts_torch_mode"] == {"kernel": 0, "torch": 0}  # not installed
    assert t["logits_same_inf"] and t["logits_max_abs"] < 1e-4
    assert abs(t["loss_torch"] - t["loss_auto"]) <= 1e-5 * abs(t["loss_torch"])
    assert t["grad_names_equal"] and t["grad_max_abs"] <= 1e-4 * t["grad_max"]
    assert t["state_keys_equal"]


def test_install_and_remove_keep_state_dict():
    teacher = make_teacher(shapes_info(), finetune="lora", deformable_attention="torch")
    keys = sorted(teacher.model.state_dict())
    modules = [m for m in teacher.hf_model.modules() if type(m).__name__ == "MultiScaleDeformableAttention"]
    assert modules and msda.install(teacher.hf_model, "auto") == len(modules)
    assert msda.install(teacher.hf_model, "auto") == len(modules)  # idempotent: no dispatch of a dispatch
    assert all(isinstance(m.__dict__["forward"], msda._Dispatch) for m in modules)
    assert all(not isinstance(m.__dict__["forward"].original, msda._Dispatch) for m in modules)
    assert sorted(teacher.model.state_dict()) == keys
    assert msda.install(teacher.hf_model, "torch") == 0
    assert all("forward" not in m.__dict__ for m in modules)
    with pytest.raises(ValueError, match="deformable_attention"):
        msda.install(teacher.hf_model, "fast")


def test_cpu_without_interpreter_uses_transformers():
    """Off CUDA (and without the interpreter) the dispatch always takes transformers' code."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter set for this process")
    teacher = make_teacher(shapes_info(), finetune="lora")
    teacher.model.eval()
    pixel = torch.rand(1, 3, 128, 128)  # large enough that the coarsest level is not 1x1 (GroupNorm)
    ids = torch.tensor([[101, 1012, 102]])
    with torch.no_grad():
        teacher.model(pixel_values=pixel, pixel_mask=torch.ones(1, 128, 128, dtype=torch.long), input_ids=ids,
                      attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    counts = msda.dispatch_counts(teacher.hf_model)
    assert counts["kernel"] == 0 and counts["torch"] >= 2


def test_shape_checks_off_restores_the_environment(monkeypatch):
    import transformers.models.grounding_dino.modeling_grounding_dino as hf

    monkeypatch.delenv("TRANSFORMERS_DISABLE_TORCH_CHECK", raising=False)
    with msda.shape_checks_off():
        hf.torch_compilable_check(torch.tensor(False), "skipped")  # would raise with checks on
    assert "TRANSFORMERS_DISABLE_TORCH_CHECK" not in os.environ
    with pytest.raises(ValueError, match="checked"):
        hf.torch_compilable_check(torch.tensor(False), "checked")
    monkeypatch.setenv("TRANSFORMERS_DISABLE_TORCH_CHECK", "0")
    with msda.shape_checks_off():
        assert os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] == "1"
    assert os.environ["TRANSFORMERS_DISABLE_TORCH_CHECK"] == "0"
