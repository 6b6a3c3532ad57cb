"""The training loop: exact resume, early stopping, non-finite steps, outputs, config
reproduction, the output-folder checks. Uses the example keypoint teacher (tiny, real
torch) so the loop itself is what is exercised; teacher-specific end-to-end runs are in
test_train_e2e.py.

One finished three-epoch run (``finished_run``, once per module) serves every test that
needs a finished experiment: its outputs, the folder checks, the run an interrupted and
resumed one must equal, and the run its saved config must reproduce."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from safetensors.torch import load_file

from teacherkit import hookimpl
from teacherkit.data.synthetic import make_coco_dataset
from teacherkit.errors import OutputExistsError
from teacherkit.layout import ExperimentLayout
from teacherkit.training.checkpoint import load_checkpoint
from teacherkit.training.experiment_folder import check_output_dir, prepare_output_dir
from teacherkit.training.loop import Interrupted, TrainingAborted
from teacherkit.training.trainer import TeacherTrainer
from tests.training.conftest import keypoint_plugin

TEACHER = "keypoint_centroid"


def _config(host, **sets):
    from teacherkit.config import resolve_config

    base = {"training.epochs": 3, "training.batch_size": 4, "training.num_workers": 0, "training.lr": 1e-2,
            "teachers.keypoint_centroid.lora.dropout": 0.0}
    base.update(sets)
    return resolve_config(host.config_model(), sets=[f"{k}={v}" for k, v in base.items()])


def _train(host, data, out, **kwargs):
    config = kwargs.pop("config", None) or _config(host)
    return TeacherTrainer(data[0], data[1], None, out, config, host=host, quiet=True, **kwargs).train()


def _weights(out):
    return load_file(str(out / "teachers" / TEACHER / "checkpoints" / "last" / "trainable.safetensors"))


@pytest.fixture(scope="module")
def module_data(tmp_path_factory):
    """``kp_data`` for the module-scoped run (same files, made once)."""
    root = tmp_path_factory.mktemp("kp-data")
    options = {"size": (48, 48), "boxes": False, "masks": False, "keypoints": True}
    return (make_coco_dataset(root / "train", num_images=12, seed=1, **options),
            make_coco_dataset(root / "val", num_images=4, seed=2, **options))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, module_data):
    """``(experiment folder, results)`` of one default run (3 epochs). Tests must not
    change the folder: copy it first."""
    from teacherkit.plugins import get_plugin_manager

    host = get_plugin_manager(extra_plugins=[("kp-test", keypoint_plugin())], disabled={"keypoints-example"})
    out = tmp_path_factory.mktemp("finished") / "exp"
    return out, _train(host, module_data, out)


@pytest.mark.slow
def test_outputs_of_a_run(finished_run):
    out, results = finished_run
    assert list(results) == [TEACHER]
    assert results[TEACHER].epochs_run == 3 and len(results[TEACHER].history) == 4  # epoch 0 is the base
    for rel in ("teacher_config.yaml", "metadata.json", "dataset_info.json", f"plots/{TEACHER}.png",
                f"teachers/{TEACHER}/adapter/model.safetensors",
                f"teachers/{TEACHER}/checkpoints/best/trainable.safetensors",
                f"teachers/{TEACHER}/checkpoints/last/state.pt"):
        assert (out / rel).is_file(), rel
    assert list((out / "logs" / TEACHER).glob("events.out.tfevents.*"))
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "finished"
    # the data's classes are recorded in the saved config (informational section)
    saved = yaml.safe_load((out / "teacher_config.yaml").read_text())
    assert saved["dataset"] == {"num_classes": len(meta["data"]["classes"]), "class_names": meta["data"]["classes"]}
    assert meta["data"]["classes"]
    assert meta["data"]["train"]["fingerprint"].startswith("sha256:")
    assert meta["versions"]["torch"] and meta["device"]["type"] == "cpu"
    assert meta["teachers"][TEACHER]["final_metrics"]["epoch"] == 3
    # checkpoints load with weights_only=True and know where they are
    _trainable, state, ckpt_meta = load_checkpoint(out / "teachers" / TEACHER / "checkpoints" / "last")
    assert state["epoch"] == 3 and ckpt_meta["finished"] is True
    # no temporary folders left behind
    assert not [p for p in out.rglob("*.tmp")]
    # the loss fell on this learnable target
    history = results[TEACHER].history
    assert history[0]["epoch"] == 0 and history[0]["train_loss"] is None  # the base trained nothing
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    # each epoch is scored by the teacher's own metric (TeacherSpec.metric), next to the loss
    for row in history:
        assert row["num_images"] == 4 and row["centroid_error_px"] >= 0 and 0 <= row["centroid_pck"] <= 1
        assert row["val_loss"] >= 0


def test_existing_output_is_refused_unless_resume_or_overwrite(kp_host, kp_data, tmp_path):
    # an experiment folder as a run leaves it (marker, config): the checks come before any
    # training, so none is needed here
    out = tmp_path / "exp"
    prepare_output_dir(out, resume=False, overwrite=False)
    ExperimentLayout(out).config.write_text("{}\n")
    with pytest.raises(OutputExistsError, match="--resume.*--overwrite"):
        _train(kp_host, kp_data, out)
    check_output_dir(out, resume=True, overwrite=False)
    check_output_dir(out, resume=False, overwrite=True)
    stranger = tmp_path / "not-an-experiment"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="refusing to delete"):
        _train(kp_host, kp_data, stranger, overwrite=True)
    assert (stranger / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_overwrite_removes_the_old_experiment_and_keeps_what_is_not_ours(finished_run, tmp_path):
    out = tmp_path / "exp"
    shutil.copytree(finished_run[0], out)
    (out / "notes.txt").write_text("mine")
    prepare_output_dir(out, resume=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.txt", ExperimentLayout(out).marker.name])


@pytest.mark.slow
def test_interrupted_and_resumed_run_is_bit_identical(kp_host, module_data, finished_run, tmp_path):
    straight = finished_run[0]
    broken = tmp_path / "broken"
    with pytest.raises(Interrupted, match="--resume"):
        _train(kp_host, module_data, broken, stop_after_steps=4)  # mid epoch 2 (3 steps per epoch)
    meta = json.loads((broken / "teachers" / TEACHER / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 1, 4)
    assert json.loads((broken / "metadata.json").read_text())["status"] == "interrupted"
    TeacherTrainer(module_data[0], module_data[1], None, broken, None, host=kp_host, quiet=True, resume=True).train()
    a, b = _weights(straight), _weights(broken)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    _, state_a, _ = load_checkpoint(straight / "teachers" / TEACHER / "checkpoints" / "last")
    _, state_b, _ = load_checkpoint(broken / "teachers" / TEACHER / "checkpoints" / "last")
    assert [r["train_loss"] for r in state_a["history"]] == [r["train_loss"] for r in state_b["history"]]


@pytest.mark.slow
def test_saved_config_reproduces_the_run(kp_host, module_data, finished_run, tmp_path):
    from teacherkit.config import resolve_config

    first = finished_run[0]
    again = resolve_config(kp_host.config_model(), config_file=first / "teacher_config.yaml")
    second = tmp_path / "second"
    _train(kp_host, module_data, second, config=again)
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_early_stopping_fires(kp_host, kp_data, tmp_path):
    # nothing can improve by min_delta: the base (epoch 0) stays best, epoch 1 uses up the patience
    config = _config(kp_host, **{"training.epochs": 6, "checkpointing.patience": 1, "checkpointing.min_delta": 1e9})
    result = _train(kp_host, kp_data, tmp_path / "exp", config=config)[TEACHER]
    assert result.stopped_early and result.epochs_run == 1 and result.best_epoch == 0 and result.base_kept
    checkpoints = tmp_path / "exp" / "teachers" / TEACHER / "checkpoints"
    _, state, meta = load_checkpoint(checkpoints / "last")
    assert meta["finished"] and state["early_stopping"]["bad_epochs"] == 1
    assert meta["best_epoch"] == 0 and load_checkpoint(checkpoints / "best")[2]["epoch"] == 0


class _NanLoss:
    """Replaces the example's loss (tryfirst) with one that is NaN for chosen steps."""

    def __init__(self, bad_steps):
        self.bad_steps = bad_steps
        self.calls = 0

    @hookimpl(tryfirst=True)
    def teacherkit_make_loss(self, teacher, config, model):
        import torch

        def loss(outputs, batch):
            self.calls += 1
            value = torch.nn.functional.l1_loss(outputs, batch["target"])
            if self.bad_steps == "all" or self.calls in self.bad_steps:
                value = value * float("nan")
            return {"loss": value}

        return loss


def test_non_finite_steps_are_skipped_and_counted(kp_host, kp_data, tmp_path):
    kp_host.register(_NanLoss({2, 3}), "nan-loss")  # call 1 scores the base (epoch 0)'s val_loss
    result = _train(kp_host, kp_data, tmp_path / "exp", config=_config(kp_host, **{"training.epochs": 1}))[TEACHER]
    assert result.nonfinite_steps == 2
    assert result.history[1]["train_loss"] == result.history[1]["train_loss"]  # finite mean of the good steps


def test_many_non_finite_steps_in_a_row_abort_clearly(kp_host, kp_data, tmp_path):
    kp_host.register(_NanLoss("all"), "nan-loss")
    config = _config(kp_host, **{"training.max_nonfinite_steps": 2})
    with pytest.raises(TrainingAborted, match="2 consecutive steps with a non-finite loss"):
        _train(kp_host, kp_data, tmp_path / "exp", config=config)
