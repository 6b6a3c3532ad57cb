"""``teacherkit label`` in two CPU processes under torchrun (gloo): the merged COCO file is
byte for byte the one a single process writes, and a run with one process killed continues
with ``--resume`` to the same bytes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from teacherkit.data.synthetic import make_coco_dataset
from teacherkit.inference.label import partial_path

IMAGES = 16  # 8 per process at batch size 1: enough for a kill to land mid-run
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("label-dist")
    data = make_coco_dataset(root / "src", num_images=IMAGES, size=(64, 64), seed=7)
    folder = root / "unlabeled"
    shutil.copytree(data.parent, folder, ignore=shutil.ignore_patterns("*.json"))
    (folder / "broken.png").write_bytes(b"not an image")  # a failure is merged in order too
    return folder


def _env(**extra: str) -> dict[str, str]:
    # one thread per process in both runs: the same kernels, so the same floating-point sums
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def _label_args(experiment: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return ["label", str(experiment), "--images", str(images), "--output", str(out), "--device", "cpu",
            "--quiet", *extra]


def _one_process(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "teacherkit.cli", *args], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr


def _torchrun(args: list[str], **popen: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "teacherkit.cli", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.slow
def test_two_processes_write_the_bytes_one_process_writes(tiny_experiment, many_images, tmp_path):
    exp = tiny_experiment["path"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    # batch 2: the processes' batches hold other images than the single process's ones
    _one_process(_label_args(exp, many_images, one, "--batch-size", "2"))
    proc = _torchrun(_label_args(exp, many_images, two, "--batch-size", "2"), env=_env())
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, out
    assert two.read_bytes() == one.read_bytes()
    assert f"labelled {IMAGES} of {IMAGES + 1} images" in out and out.count("labelled ") == 1  # rank 0 only
    assert not partial_path(two).exists() and not partial_path(two, 1).exists()


def _pid_of_rank(token: str, rank: int) -> int | None:
    """The process of the run marked by ``token`` that torchrun started as ``rank``."""
    wanted = {f"TEACHERKIT_TEST_RUN={token}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            return int(entry.name)
    return None


def _kill_rank_after_first_record(proc: subprocess.Popen, token: str, shard: Path) -> int:
    """SIGKILL rank 1 as soon as its shard holds a record; the lines it had then."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.exists() and b"\n" in shard.read_bytes():
            pid = _pid_of_rank(token, 1)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                return shard.read_bytes().count(b"\n")
        time.sleep(0.005)
    raise AssertionError(f"rank 1 never wrote a record: {proc.communicate()[0]}")


@pytest.mark.slow
def test_a_killed_process_is_resumed_to_the_same_bytes(tiny_experiment, many_images, tmp_path):
    exp = tiny_experiment["path"]
    straight, out = tmp_path / "straight.json", tmp_path / "killed.json"
    _one_process(_label_args(exp, many_images, straight, "--batch-size", "1"))
    token = uuid.uuid4().hex
    proc = _torchrun(_label_args(exp, many_images, out, "--batch-size", "1"),
                     env=_env(TEACHERKIT_TEST_RUN=token), start_new_session=True)
    try:
        lines = _kill_rank_after_first_record(proc, token, partial_path(out, 1))
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, log
    assert not out.exists()  # rank 0 never merged: rank 1's shard was incomplete
    assert 1 <= lines < IMAGES // 2 + 1
    assert partial_path(out, 1).exists()

    # without --resume the shards are refused, naming the flag
    refused = _torchrun(_label_args(exp, many_images, out, "--batch-size", "1"), env=_env())
    log, _ = refused.communicate(timeout=TIMEOUT_S)
    assert refused.returncode != 0 and "--resume" in log

    resumed = _torchrun(_label_args(exp, many_images, out, "--batch-size", "1", "--resume"), env=_env())
    log, _ = resumed.communicate(timeout=TIMEOUT_S)
    assert resumed.returncode == 0, log
    assert out.read_bytes() == straight.read_bytes()
    assert not partial_path(out).exists() and not partial_path(out, 1).exists()
