"""SIGTERM to the whole process group (what ``timeout`` and Slurm send) while DataLoader
workers run: the workers ignore it, the main process saves ``last`` and exits 143 with
status "interrupted", and ``--resume`` finishes the run (real subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from teacherkit.training.experiment_lock import LOCK_FILE
from tests.training.test_kill_resume import TEACHER, _cmd, _env


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_last_and_resumes(tiny_coco, tmp_path):
    train = tiny_coco(num_images=48, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=3)
    val = tiny_coco(num_images=4, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=4)
    flags = ["--preset", "tiny", "--epochs", "12", "--batch-size", "2", "--num-workers", "2"]
    env = _env(tmp_path)
    out = tmp_path / "exp"
    proc = subprocess.Popen(_cmd(train, val, out, *flags), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    last_meta = out / "teachers" / TEACHER / "checkpoints" / "last" / "meta.json"
    for _ in range(24_000):  # poll up to ~4 minutes: a bound against a hang, not a speed check
        if last_meta.exists() or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert last_meta.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    os.killpg(proc.pid, signal.SIGTERM)  # the main process and its DataLoader workers alike
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted" in err
    assert json.loads((out / "metadata.json").read_text())["status"] == "interrupted"
    meta = json.loads(last_meta.read_text())
    assert not meta["finished"] and meta["epoch"] >= 1, meta
    assert not (out / LOCK_FILE).exists()

    resumed = subprocess.run(_cmd(train, val, out, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metadata.json").read_text())["status"] == "finished"
    assert json.loads(last_meta.read_text())["finished"]


class _SignalsItself:
    """A dataset whose worker receives SIGINT and SIGTERM while loading, as a process group
    signal would deliver them."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        return index


@pytest.mark.slow
def test_dataloader_workers_ignore_stop_signals_under_spawn():
    """Under ``spawn``/``forkserver`` (no inherited handlers) a worker would die of the
    signal; with the loop's ``worker_init_fn`` it carries on and the main process decides."""
    from torch.utils.data import DataLoader

    from teacherkit.training.loop import ignore_stop_signals

    loader = DataLoader(_SignalsItself(), batch_size=2, num_workers=1, multiprocessing_context="spawn",
                        worker_init_fn=ignore_stop_signals)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
