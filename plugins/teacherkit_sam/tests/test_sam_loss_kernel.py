"""The fused Triton loss sums (teacherkit_sam.loss_kernel), checked on the CPU through Triton's
interpreter against the PyTorch path of the same loss (itself checked against the formula in
test_sam_loss.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from teacherkit_sam.config import SamConfig
from teacherkit_sam.loss import SamLoss

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def interpreted() -> dict:
    pytest.importorskip("triton", reason="the kernels need Triton (in the test extras)")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(HERE / "loss_kernel_interpreted.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fused_sums_and_gradients_match_the_pytorch_path(interpreted):
    """Weighted and unweighted image areas, several candidates, gamma 0, 1, 1.5 and 2, more
    pixels than one block, saturated logits and targets at the threshold."""
    assert len(interpreted["cases"]) == 5
    for name, found in interpreted["cases"].items():
        assert found["shapes_equal"], name
        assert found["sum_rel"] < 1e-5, name
        assert found["grad_rel"] < 1e-5, name
        assert found["grad_zero_outside"] and found["finite"], name  # padding gets no gradient


def test_the_loss_takes_the_kernels_when_they_can_run_and_gives_the_same_values(interpreted):
    found = interpreted["loss"]
    assert found["fused_used"] and found["torch_kept"]
    assert found["loss_rel"] < 1e-5 and found["grad_rel"] < 1e-5


def test_on_a_cpu_without_the_interpreter_the_loss_uses_pytorch():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter set for this process")
    assert not SamLoss()._fused(torch.zeros(1))
    assert SamLoss.from_config(SamConfig(loss_kernel="torch")).kernel == "torch"
    assert SamLoss.from_config(SamConfig()).kernel == "auto"
