"""Two CPU processes (torchrun, gloo) train like one: outputs written once, same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.training.test_kill_resume import _env

TEACHER = "keypoint_centroid"


def _run(cmd, env):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_processes_match_one(tiny_coco, tmp_path):
    train = tiny_coco(num_images=16, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=5)
    val = tiny_coco(num_images=6, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=6)
    env = _env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    common = ["train", "--data", str(train), "--val", str(val), "--epochs", "2", "--num-workers", "0",
              "--set", "training.lr=0.01", "--set", "teachers.keypoint_centroid.lora.dropout=0"]
    single = tmp_path / "single"
    _run([sys.executable, "-m", "teacherkit.cli", *common, "--batch-size", "4", "--output", str(single)], env)
    multi = tmp_path / "multi"
    result = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(29500 + os.getpid() % 1000), "-m", "teacherkit.cli", *common, "--batch-size", "2",
                   "--output", str(multi)], env)
    meta = json.loads((multi / "metadata.json").read_text())
    assert meta["device"]["num_processes"] == 2
    # the main process alone reports and writes: one summary, one set of files
    assert result.stdout.count("experiment saved to") == 1
    assert sorted(p.name for p in (multi / "teachers" / TEACHER / "checkpoints").iterdir()) == ["best", "last"]
    one = json.loads((single / "metadata.json").read_text())["teachers"][TEACHER]["final_metrics"]
    two = meta["teachers"][TEACHER]["final_metrics"]
    # same samples per update (2 ranks × 2 = 4), gradients averaged: the same training up to float error
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-3)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-3)
