"""The loop's pieces on their own: the monitor rule, early stopping, the settings of a
teacher, and TrainState's round trip through a checkpoint folder."""

from __future__ import annotations

import pytest
import torch

from teacherkit.teachers import TeacherSpec
from teacherkit.training.checkpoint import load_train_state, save_checkpoint
from teacherkit.training.settings import LoopSettings
from teacherkit.training.state import PartialEpoch, TrainState
from teacherkit.training.stopping import EarlyStopping, monitor_rule


@pytest.mark.parametrize(
    ("monitor", "mode", "primary", "primary_mode", "expected"),
    [
        (None, None, "bbox_AP", "max", ("bbox_AP", "max")),          # the teacher's own metric, its direction
        (None, None, "loss", "min", ("val_loss", "min")),            # "loss" is the validation loss
        ("loss", None, "bbox_AP", "max", ("val_loss", "min")),
        ("val_loss", None, "bbox_AP", "max", ("val_loss", "min")),   # any *loss falls
        ("mask_mIoU", None, "loss", "min", ("mask_mIoU", "max")),    # another metric rises
        (None, None, "error_rate", "min", ("error_rate", "min")),    # declared direction kept
        ("bbox_AP", "min", "bbox_AP", "max", ("bbox_AP", "min")),    # an explicit mode wins
        ("val_loss", "max", "loss", "min", ("val_loss", "max")),
    ],
)
def test_monitor_rule(monitor, mode, primary, primary_mode, expected):
    assert monitor_rule(monitor, mode, primary_metric=primary, metric_mode=primary_mode) == expected


def test_early_stopping_counts_and_forgets():
    stop = EarlyStopping(mode="min", patience=2, min_delta=0.1)
    assert stop.update(1.0, 1) and stop.best_epoch == 1
    assert not stop.update(0.95, 2)  # within min_delta
    assert not stop.update(float("nan"), 3)
    assert stop.should_stop() and stop.bad_epochs == 2
    again = EarlyStopping()
    again.load_state_dict(stop.state_dict())
    assert again == stop
    again.forget_best()
    assert again.best is None and again.update(5.0, 4) and again.best_epoch == 4


def test_settings_from_config(plugin_host):
    from teacherkit.config import TeacherConfig, resolve_config

    cfg = resolve_config(plugin_host.config_model(), sets=["training.epochs=7", "teachers.sam.lr=0.5",
                                                           "checkpointing.patience=3"])
    spec = TeacherSpec(name="sam", learns_from="masks", config_model=TeacherConfig,
                       primary_metric="mask_mIoU", metric_mode="max")
    s = LoopSettings.from_config(cfg, spec)
    assert (s.epochs, s.lr, s.batch_size, s.patience) == (7, 0.5, cfg.training.batch_size, 3)
    assert (s.monitor, s.mode) == ("mask_mIoU", "max")


def test_train_state_round_trips_through_a_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = TrainState(epoch=2, batch=5, step=11, history=[{"epoch": 1, "train_loss": 0.5}], nonfinite_steps=1,
                       early_stopping=EarlyStopping(best=0.5, best_epoch=1).state_dict(),
                       partial=PartialEpoch({"loss": 2.0}, 4), optimizer=optimizer.state_dict(),
                       scheduler={"last_epoch": 11}, rng=[{"torch": torch.get_rng_state()}])
    save_checkpoint(tmp_path / "last", dict(model.named_parameters()), state.to_state(), state.to_meta("t"))
    trainable, loaded = load_train_state(tmp_path / "last")
    assert trainable["weight"].equal(model.weight.detach())
    assert (loaded.epoch, loaded.batch, loaded.step, loaded.nonfinite_steps) == (2, 5, 11, 1)
    assert loaded.partial == PartialEpoch({"loss": 2.0}, 4) and loaded.partial.means() == {"loss": 0.5}
    assert loaded.best_epoch == 1 and loaded.history == state.history and not loaded.finished
    assert loaded.rng_for(3)["torch"].equal(state.rng[0]["torch"])
    assert not list(tmp_path.glob(".*"))  # no temporary folder left


def test_train_state_keeps_the_base_epoch_through_a_checkpoint(tmp_path):
    """Epoch 0 (the base) is a row of the history and may be the best: both survive a save,
    so a resumed run neither scores the base again nor forgets that it was the best."""
    base = {"epoch": 0, "train_loss": None, "val_loss": 0.25, "lr": None}
    state = TrainState(epoch=1, step=3, history=[base, {"epoch": 1, "train_loss": 0.5, "val_loss": 0.5}],
                       early_stopping=EarlyStopping(mode="min", best=0.25, best_epoch=0, bad_epochs=1).state_dict(),
                       optimizer={}, scheduler={}, rng=[{}])
    save_checkpoint(tmp_path / "last", {"w": torch.zeros(1)}, state.to_state(), state.to_meta("t"))
    _trainable, loaded = load_train_state(tmp_path / "last")
    assert loaded.base == base and loaded.base_metric("val_loss") == 0.25 and loaded.base_metric("bbox_AP") is None
    assert loaded.best_epoch == 0 and loaded.early_stopping["bad_epochs"] == 1
    assert TrainState(history=[{"epoch": 1, "val_loss": 0.5}]).base is None  # resumed past an unscored base


def test_trainer_is_importable_from_the_package():
    from teacherkit.training import TeacherTrainer
    from teacherkit.training.trainer import TeacherTrainer as same

    assert TeacherTrainer is same


def test_training_modules_stay_small():
    """Issue 15's limits for the training package: modules ≤ 400 lines, functions ≤ 60."""
    import ast
    from pathlib import Path

    import teacherkit.training

    root = Path(teacherkit.training.__file__).parent
    files = [*root.glob("*.py"), root.parent / "config.py"]
    too_long = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 400:
            too_long.append(f"{path.name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
