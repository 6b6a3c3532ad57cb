"""``teacherkit label`` in two CPU processes under torchrun (gloo): the merged COCO file is
byte for byte the one a single process writes, and a run with one process killed continues
with ``--resume`` to the same bytes.

The single-process reference is labelled in the test's own process (at one torch thread, as
the launched processes get): the same command, without another interpreter to start and the
teachers' code to import again; the runs it is compared with are all launched by torchrun."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from teacherkit.cli import run
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
    """The command in this process with one torch thread, like each process of ``_env``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run(args) == 0
    finally:
        torch.set_num_threads(threads)


def _torchrun(args: list[str], *, log: object = subprocess.PIPE, **popen: object) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "teacherkit.cli", *args]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, **popen)


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


def _pids_of_run(token: str, rank: int | None = None) -> list[int]:
    """The processes of the run marked by ``token`` (those torchrun started as ``rank``), in
    the order of their ids: a rank's process before the image readers it forked."""
    wanted = {f"TEACHERKIT_TEST_RUN={token}".encode()} | ({f"RANK={rank}".encode()} if rank is not None else set())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= env:
            found.append(int(entry.name))
    return sorted(found)


def _kill_rank_after_first_record(proc: subprocess.Popen, token: str, shard: Path, log: Path) -> int:
    """SIGKILL rank 1 as soon as its shard holds a record; the lines it had then."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.exists() and b"\n" in shard.read_bytes():
            pids = _pids_of_run(token, 1)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                return shard.read_bytes().count(b"\n")
        time.sleep(0.005)
    proc.wait(timeout=TIMEOUT_S)
    raise AssertionError(f"rank 1 never wrote a record: {log.read_text()}")


@pytest.mark.slow
def test_a_killed_process_is_resumed_to_the_same_bytes(tiny_experiment, many_images, tmp_path, capsys):
    exp = tiny_experiment["path"]
    straight, out, log_file = tmp_path / "straight.json", tmp_path / "killed.json", tmp_path / "killed.log"
    _one_process(_label_args(exp, many_images, straight, "--batch-size", "1"))
    token = uuid.uuid4().hex
    # the log goes to a file: the image readers of the killed rank keep a pipe open until they
    # notice their parent is gone (up to 5 s), and the test need not wait for that
    with open(log_file, "w", encoding="utf-8") as log:
        proc = _torchrun(_label_args(exp, many_images, out, "--batch-size", "1"), log=log,
                         env=_env(TEACHERKIT_TEST_RUN=token), start_new_session=True)
    try:
        lines = _kill_rank_after_first_record(proc, token, partial_path(out, 1), log_file)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _pids_of_run(token):  # what outlived the launcher (those readers)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode != 0, log_file.read_text()
    assert not out.exists()  # rank 0 never merged: rank 1's shard was incomplete
    assert 1 <= lines < IMAGES // 2 + 1
    assert partial_path(out, 1).exists()
    kept = {path: path.read_bytes() for path in tmp_path.glob(f"{out.name}.*")}  # shards, settings

    # without --resume the shards are refused, naming the flag, and left as they were (the
    # check runs before any process group or model, the same in every process)
    capsys.readouterr()
    assert run(_label_args(exp, many_images, out, "--batch-size", "1")) != 0
    assert "--resume" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.glob(f"{out.name}.*")} == kept

    resumed = _torchrun(_label_args(exp, many_images, out, "--batch-size", "1", "--resume"), env=_env())
    log, _ = resumed.communicate(timeout=TIMEOUT_S)
    assert resumed.returncode == 0, log
    assert out.read_bytes() == straight.read_bytes()
    assert not partial_path(out).exists() and not partial_path(out, 1).exists()
