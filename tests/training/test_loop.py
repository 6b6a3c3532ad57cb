"""The training loop: exact resume, early stopping, non-finite steps, outputs, config
reproduction. Uses the example keypoint teacher (tiny, real torch) so the loop itself is
what is exercised; teacher-specific end-to-end runs are in test_train_e2e.py."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from teacherkit import hookimpl
from teacherkit.errors import OutputExistsError
from teacherkit.training.checkpoint import load_checkpoint
from teacherkit.training.loop import Interrupted, TrainingAborted
from teacherkit.training.trainer import TeacherTrainer

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


def test_outputs_of_a_run(kp_host, kp_data, tmp_path):
    out = tmp_path / "exp"
    results = _train(kp_host, kp_data, out)
    assert list(results) == [TEACHER]
    assert results[TEACHER].epochs_run == 3 and len(results[TEACHER].history) == 3
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
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_existing_output_is_refused_unless_resume_or_overwrite(kp_host, kp_data, tmp_path):
    out = tmp_path / "exp"
    _train(kp_host, kp_data, out, config=_config(kp_host, **{"training.epochs": 1}))
    with pytest.raises(OutputExistsError, match="--resume.*--overwrite"):
        _train(kp_host, kp_data, out)
    _train(kp_host, kp_data, out, overwrite=True, config=_config(kp_host, **{"training.epochs": 1}))
    stranger = tmp_path / "not-an-experiment"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="refusing to delete"):
        _train(kp_host, kp_data, stranger, overwrite=True)
    assert (stranger / "precious.txt").read_text() == "keep me"


def test_interrupted_and_resumed_run_is_bit_identical(kp_host, kp_data, tmp_path):
    straight = tmp_path / "straight"
    _train(kp_host, kp_data, straight)
    broken = tmp_path / "broken"
    with pytest.raises(Interrupted, match="--resume"):
        _train(kp_host, kp_data, broken, stop_after_steps=4)  # mid epoch 2 (3 steps per epoch)
    meta = json.loads((broken / "teachers" / TEACHER / "checkpoints" / "last" / "meta.json").read_text())
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 1, 4)
    assert json.loads((broken / "metadata.json").read_text())["status"] == "interrupted"
    TeacherTrainer(kp_data[0], kp_data[1], None, broken, None, host=kp_host, quiet=True, resume=True).train()
    a, b = _weights(straight), _weights(broken)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
    _, state_a, _ = load_checkpoint(straight / "teachers" / TEACHER / "checkpoints" / "last")
    _, state_b, _ = load_checkpoint(broken / "teachers" / TEACHER / "checkpoints" / "last")
    assert [r["train_loss"] for r in state_a["history"]] == [r["train_loss"] for r in state_b["history"]]


def test_saved_config_reproduces_the_run(kp_host, kp_data, tmp_path):
    from teacherkit.config import resolve_config

    first = tmp_path / "first"
    _train(kp_host, kp_data, first, config=_config(kp_host, **{"training.epochs": 2}))
    again = resolve_config(kp_host.config_model(), config_file=first / "teacher_config.yaml")
    second = tmp_path / "second"
    _train(kp_host, kp_data, second, config=again)
    a, b = _weights(first), _weights(second)
    assert all(a[k].equal(b[k]) for k in a)


def test_early_stopping_fires(kp_host, kp_data, tmp_path):
    config = _config(kp_host, **{"training.epochs": 6, "checkpointing.patience": 1, "checkpointing.min_delta": 1e9})
    result = _train(kp_host, kp_data, tmp_path / "exp", config=config)[TEACHER]
    assert result.stopped_early and result.epochs_run == 2 and result.best_epoch == 1
    _, state, meta = load_checkpoint(tmp_path / "exp" / "teachers" / TEACHER / "checkpoints" / "last")
    assert meta["finished"] and state["early_stopping"]["bad_epochs"] == 1


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
    kp_host.register(_NanLoss({1, 2}), "nan-loss")
    result = _train(kp_host, kp_data, tmp_path / "exp", config=_config(kp_host, **{"training.epochs": 1}))[TEACHER]
    assert result.nonfinite_steps == 2
    assert result.history[0]["train_loss"] == result.history[0]["train_loss"]  # finite mean of the good steps


def test_many_non_finite_steps_in_a_row_abort_clearly(kp_host, kp_data, tmp_path):
    kp_host.register(_NanLoss("all"), "nan-loss")
    config = _config(kp_host, **{"training.max_nonfinite_steps": 2})
    with pytest.raises(TrainingAborted, match="2 consecutive steps with a non-finite loss"):
        _train(kp_host, kp_data, tmp_path / "exp", config=config)
