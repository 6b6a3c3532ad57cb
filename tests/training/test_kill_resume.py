"""A run killed with SIGKILL mid-epoch resumes from an intact checkpoint (real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.training.conftest import EXAMPLE

TEACHER = "keypoint_centroid"


def _env(tmp_path):
    """Make the example plugin discoverable through a real entry point, without installing."""
    site = tmp_path / "site"
    dist = site / "kp_test-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kp-test\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[teacherkit.plugins]\nkp-test = teacherkit_keypoints_example.plugin\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE), env.get("PYTHONPATH", "")])
    env["TEACHERKIT_DISABLE_PLUGINS"] = "keypoints-example"  # the installed copy, if CI installed it
    return env


def _cmd(train, val, out, *extra):
    return [sys.executable, "-m", "teacherkit.cli", "train", "--data", str(train), "--val", str(val),
            "--output", str(out), "--quiet", *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tiny_coco, tmp_path):
    train = tiny_coco(num_images=48, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=3)
    val = tiny_coco(num_images=4, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=4)
    flags = ["--epochs", "12", "--batch-size", "2", "--num-workers", "0", "--set", "training.lr=0.01"]
    env = _env(tmp_path)

    straight = tmp_path / "straight"
    done = subprocess.run(_cmd(train, val, straight, *flags), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(train, val, out, *flags), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    last_meta = out / "teachers" / TEACHER / "checkpoints" / "last" / "meta.json"
    for _ in range(24_000):  # poll up to ~4 minutes: a bound against a hang, not a speed check
        if last_meta.exists() or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert last_meta.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGKILL)  # at once: somewhere in epoch 2 of 12, whatever the machine's load
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    meta = json.loads(last_meta.read_text())
    assert meta["epoch"] >= 1 and not meta["finished"], meta

    resumed = subprocess.run(_cmd(train, val, out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    a = load_file(str(straight / "teachers" / TEACHER / "checkpoints" / "last" / "trainable.safetensors"))
    b = load_file(str(out / "teachers" / TEACHER / "checkpoints" / "last" / "trainable.safetensors"))
    assert all(a[k].equal(b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    assert json.loads((out / "metadata.json").read_text())["status"] == "finished"
