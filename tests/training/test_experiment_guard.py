"""What ``train`` refuses before it touches an experiment folder, and what it leaves alone:
inputs checked before ``--overwrite`` replaces anything, the marker, only our own files
deleted, one run per folder (the lock), ``--resume`` on the data and teachers it started
with, repeated config flags on ``--resume``, flag ranges, and ``validate``'s checks.

The example keypoint teacher keeps each run to a few seconds; the CLI runs in-process
with that plugin as the current host."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from teacherkit import hookimpl
from teacherkit.cli import run
from teacherkit.errors import TeacherkitError
from teacherkit.layout import MARKER_FILE
from teacherkit.training.experiment_lock import LOCK_FILE, ExperimentLock

TEACHER = "keypoint_centroid"
FLAGS = ["--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--quiet", "--set", "training.lr=0.01"]


@pytest.fixture
def cli(kp_host):
    """``cli(*args) -> exit code`` of ``teacherkit`` with the keypoint plugin installed."""
    from teacherkit.plugins import set_current_host

    set_current_host(kp_host)
    yield lambda *args: run([str(a) for a in args])
    set_current_host(None)


def _train(cli, data, out, *extra):
    return cli("train", "--data", data[0], "--val", data[1], "--output", out, *FLAGS, *extra)


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- --overwrite ------------------------------------------------------------------------------


def test_a_truncated_data_file_leaves_the_old_experiment_intact(cli, kp_data, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    before = _snapshot(out)
    broken = kp_data[0].with_name("truncated.json")
    broken.write_bytes(kp_data[0].read_bytes()[:-40])
    assert _train(cli, (broken, kp_data[1]), out) == 2  # refused: the folder exists
    assert "--overwrite" in capsys.readouterr().err
    assert _train(cli, (broken, kp_data[1]), out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "json.syntax" in err and str(broken) in err and "Traceback" not in err
    assert _snapshot(out) == before


class _LooksForBases:
    """A ``teacherkit_check_base`` like the shipped teachers': a base that is neither
    ``tiny`` nor a folder is reported, naming where it looked."""

    @hookimpl
    def teacherkit_check_base(self, teacher, config):
        if teacher.name == TEACHER and config.base != "tiny" and not os.path.isdir(config.base):
            raise TeacherkitError(f"teachers.{TEACHER}.base = {config.base}: no such folder")


def test_a_missing_base_is_found_before_overwrite_replaces_anything(cli, kp_host, kp_data, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    before = _snapshot(out)
    kp_host.register(_LooksForBases(), "base-checker")
    missing = tmp_path / "no-such-model"
    assert _train(cli, kp_data, out, "--overwrite", "--set", f"teachers.{TEACHER}.base={missing}") == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_every_experiment_carries_a_marker_naming_the_project(cli, kp_data, tmp_path):
    from teacherkit import __version__

    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["project"] == "teacherkit" and marker["version"] == __version__
    assert not (out / LOCK_FILE).exists()  # released at the end


def test_overwrite_refuses_a_folder_without_the_marker(cli, kp_data, tmp_path, capsys):
    folder = tmp_path / "looks-like-one"
    folder.mkdir()
    (folder / "metadata.json").write_text("{}")
    (folder / "thesis.tex").write_text("years of work")
    assert _train(cli, kp_data, folder, "--overwrite") == 2
    err = capsys.readouterr().err
    assert str(folder) in err and MARKER_FILE in err and "refusing to delete" in err
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "thesis.tex"]


def test_overwrite_deletes_only_what_teacherkit_wrote(cli, kp_data, tmp_path):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    (out / "notes.md").write_text("mine")
    (out / "teachers" / TEACHER / "my_eval.csv").write_text("mine too")
    gone = out / "teachers" / "retired_teacher"  # a teacher of the old run that no longer trains
    (gone / "adapter").mkdir(parents=True)
    (gone / "adapter" / "adapter_model.safetensors").write_bytes(b"old")
    (out / "teachers" / TEACHER / "checkpoints" / "last.old").mkdir()  # a swap a kill interrupted
    old_config = (out / "teacher_config.yaml").read_text()
    assert _train(cli, kp_data, out, "--overwrite", "--seed", "7") == 0
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "teachers" / TEACHER / "my_eval.csv").read_text() == "mine too"
    assert not gone.exists() and not (out / "teachers" / TEACHER / "checkpoints" / "last.old").exists()
    assert (out / "teacher_config.yaml").read_text() != old_config  # the new run's config
    assert (out / "teachers" / TEACHER / "adapter").is_dir()


def test_a_failed_check_leaves_no_folder_behind(cli, kp_data, tmp_path):
    out = tmp_path / "new"
    assert _train(cli, kp_data, out, "--models", "nope") == 2
    assert not out.exists()


# -- the lock ---------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused(cli, kp_data, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    before = _snapshot(out)
    with ExperimentLock(out):  # another run holds it (this very process: alive)
        for extra in ("--overwrite", "--resume"):
            assert _train(cli, kp_data, out, extra) == 2
            err = capsys.readouterr().err
            assert f"pid {os.getpid()}" in err and socket.gethostname() in err and LOCK_FILE in err
        assert {k: v for k, v in _snapshot(out).items() if k != LOCK_FILE} == before
    assert not (out / LOCK_FILE).exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(cli, kp_data, tmp_path):
    out = tmp_path / "exp"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "since": "earlier"}))
    assert _train(cli, kp_data, out) == 0
    assert not (out / LOCK_FILE).exists()


def test_a_lock_from_another_host_is_not_broken(tmp_path):
    from teacherkit.training.experiment_lock import ExperimentLockedError

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "since": "now"}))
    with pytest.raises(ExperimentLockedError, match="elsewhere.example"):
        ExperimentLock(tmp_path).acquire()


def test_the_lock_is_released_when_the_run_fails(kp_host, kp_data, tmp_path):
    from teacherkit.config import resolve_config
    from teacherkit.training.loop import Interrupted
    from teacherkit.training.trainer import TeacherTrainer

    config = resolve_config(kp_host.config_model(), sets=["training.epochs=2", "training.num_workers=0"])
    with pytest.raises(Interrupted):
        TeacherTrainer(kp_data[0], kp_data[1], None, tmp_path / "exp", config, host=kp_host, quiet=True,
                       stop_after_steps=2).train()
    assert not (tmp_path / "exp" / LOCK_FILE).exists()


# -- --resume ---------------------------------------------------------------------------------


def test_resume_on_other_data_is_refused_naming_both(cli, kp_data, tiny_coco, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    other = tiny_coco(num_images=6, size=(48, 48), boxes=False, masks=False, keypoints=True, seed=9)
    assert cli("train", "--data", other, "--val", kp_data[1], "--output", out, "--resume", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--data differs" in err and str(kp_data[0]) in err and str(other) in err and "sha256:" in err
    assert cli("train", "--data", kp_data[0], "--output", out, "--resume", "--quiet") == 2  # --val dropped
    assert "--val differs" in capsys.readouterr().err


def test_resume_keeps_the_teachers_chosen_at_the_start(cli, tiny_coco, tmp_path, capsys):
    data = tiny_coco(num_images=8, size=(48, 48), boxes=True, masks=False, keypoints=True, seed=5)
    out = tmp_path / "exp"
    common = ["--data", data, "--output", out, "--quiet"]
    assert cli("train", *common, *FLAGS, "--models", TEACHER) == 0
    assert cli("train", *common, "--resume") == 0
    assert not (out / "teachers" / "grounding_dino").exists()  # excluded at the start, still excluded
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["selection"]["teachers"] == [TEACHER] and sorted(meta["teachers"]) == [TEACHER]
    assert cli("train", *common, "--resume", "--models", "grounding_dino") == 2
    err = capsys.readouterr().err
    assert f"recorded {TEACHER}" in err and "given grounding_dino" in err


def test_resume_accepts_the_same_command_and_names_a_real_difference(cli, kp_data, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _train(cli, kp_data, out) == 0
    assert _train(cli, kp_data, out, "--resume") == 0  # the first command, --resume added
    assert _train(cli, kp_data, out, "--resume", "--epochs", "3", "--set", "training.seed=5") == 2
    err = capsys.readouterr().err
    assert "training.epochs: recorded 1, given 3" in err and "training.seed: recorded 42, given 5" in err
    assert "training.lr" not in err


# -- flags and data checked first ----------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--epochs", "0"), ("--batch-size", "0"), ("--lr", "-1"),
                                             ("--lr", "inf"), ("--num-workers", "-2"), ("--lora-r", "0")])
def test_out_of_range_flags_are_refused_by_name(cli, kp_data, tmp_path, capsys, flag, value):
    out = tmp_path / "exp"
    assert cli("train", "--data", kp_data[0], "--output", out, flag, value) == 2
    err = capsys.readouterr().err
    assert f"error: {flag} {value}" in err and "Traceback" not in err
    assert not out.exists()


def test_train_stops_on_the_errors_validate_finds_before_loading_a_model(cli, kp_data, tmp_path, capsys):
    coco = json.loads(kp_data[0].read_text())
    coco["annotations"][1]["bbox"] = [2, 2, -5, 4]
    coco["images"][2]["file_name"] = "../outside.png"
    bad = kp_data[0].with_name("bad.json")
    bad.write_text(json.dumps(coco))
    out = tmp_path / "exp"
    assert cli("train", "--data", bad, "--output", out, *FLAGS) == 2
    err = capsys.readouterr().err
    assert "bbox.non_positive_size" in err and f"annotation {coco['annotations'][1]['id']}" in err
    assert "image.path_escapes" in err and str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_warnings_are_summed_up_in_one_line_and_training_goes_on(cli, kp_data, tmp_path, capsys):
    coco = json.loads(kp_data[0].read_text())
    coco["categories"].append({"id": 99, "name": "never-used"})
    warned = kp_data[0].with_name("warned.json")
    warned.write_text(json.dumps(coco))
    assert cli("train", "--data", warned, "--val", kp_data[1], "--output", tmp_path / "exp", *FLAGS) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "category.unused" in line]
    assert len(lines) == 1 and "warning" in lines[0]


# -- runs/train/exp<N> when --output is omitted ------------------------------------------------


def test_without_output_runs_go_to_numbered_run_folders(cli, kp_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["train", "--data", kp_data[0], "--val", kp_data[1], *(f for f in FLAGS if f != "--quiet")]
    assert cli(*base) == 0
    assert cli(*base) == 0  # a second run never overwrites the first
    for name in ("exp", "exp2"):
        assert (tmp_path / "runs" / "train" / name / MARKER_FILE).is_file()
    assert "experiment saved to runs/train/exp2" in capsys.readouterr().out.replace("\n", "")


def test_without_output_a_refused_run_leaves_no_run_folder(cli, kp_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli("train", "--data", kp_data[0], "--val", kp_data[1], *FLAGS, "--models", "nope") == 2
    assert not list((tmp_path / "runs" / "train").iterdir())
    assert cli("train", "--data", kp_data[0], *FLAGS, "--resume") == 2
    assert "--resume needs --output" in capsys.readouterr().err
