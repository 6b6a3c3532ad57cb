"""Kill points while checkpoints are written, a crash between the two renames of a swap,
and weights that turn non-finite: what is left is whole, honest, and resumable.

Kills are simulated by raising from the writer at a named point (an ``OSError`` like a
full disk would raise); the example keypoint teacher keeps every run a few seconds."""

from __future__ import annotations

import errno
import json
import os

import pytest
from safetensors.torch import load_file

from teacherkit import hookimpl
from teacherkit.training.checkpoint import load_checkpoint
from teacherkit.training.loop import Interrupted, TrainingAborted
from teacherkit.training.trainer import TeacherTrainer

TEACHER = "keypoint_centroid"
#: every epoch is the best under this monitor, so best is written each epoch
EVERY_EPOCH_BEST = {"checkpointing.monitor": "epoch", "checkpointing.mode": "max"}


def _config(host, **sets):
    from teacherkit.config import resolve_config

    base = {"training.epochs": 3, "training.batch_size": 4, "training.num_workers": 0, "training.lr": 1e-2,
            "teachers.keypoint_centroid.lora.dropout": 0.0}
    base.update(sets)
    return resolve_config(host.config_model(), sets=[f"{k}={v}" for k, v in base.items()])


def _train(host, data, out, config=None, **kwargs):
    return TeacherTrainer(data[0], data[1], None, out, config or _config(host), host=host, quiet=True,
                          **kwargs).train()


def _resume(host, data, out):
    return TeacherTrainer(data[0], data[1], None, out, None, host=host, quiet=True, resume=True).train()


def _ckpt(out, which):
    return out / "teachers" / TEACHER / "checkpoints" / which


def _meta(out, which):
    return json.loads((_ckpt(out, which) / "meta.json").read_text())


def _assert_best_matches_record(out):
    last, best = _meta(out, "last"), _meta(out, "best")
    assert last["finished"]
    assert best["epoch"] == last["best_epoch"], (best["epoch"], last["best_epoch"])
    assert (out / "teachers" / TEACHER / "adapter" / "model.safetensors").is_file()


def _fail_on(monkeypatch, module, name, when):
    """Make ``module.name`` raise ENOSPC when ``when(*args)`` says so (a kill point)."""
    real = getattr(module, name)

    def writer(*args, **kwargs):
        if when(*args):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, writer)


def test_a_kill_while_best_is_written_resumes_to_a_best_that_matches_its_record(kp_host, kp_data, tmp_path,
                                                                               monkeypatch):
    import teacherkit.training.checkpoint as checkpoint

    config = _config(kp_host, **EVERY_EPOCH_BEST)
    straight = tmp_path / "straight"
    _train(kp_host, kp_data, straight, config)
    out = tmp_path / "exp"
    _fail_on(monkeypatch, checkpoint, "save_checkpoint",
             lambda final, _t, _s, meta: final.name == "best" and meta["epoch"] == 2)
    with pytest.raises(OSError, match="No space left"):
        _train(kp_host, kp_data, out, config)
    monkeypatch.undo()
    assert _meta(out, "last")["epoch"] == 1 and _meta(out, "last")["best_epoch"] == 1  # the record kept the old best
    assert _meta(out, "best")["epoch"] == 1
    assert not [p for p in _ckpt(out, "best").parent.iterdir() if p.name.startswith(".")]  # no half-written folder
    _resume(kp_host, kp_data, out)
    _assert_best_matches_record(out)
    a, b = load_file(str(_ckpt(straight, "best") / "trainable.safetensors")), load_file(
        str(_ckpt(out, "best") / "trainable.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)


def test_a_kill_between_best_and_last_resumes_honestly(kp_host, kp_data, tmp_path, monkeypatch):
    import teacherkit.atomic as atomic

    config = _config(kp_host, **EVERY_EPOCH_BEST)
    out = tmp_path / "exp"
    calls = {"adapter": 0}

    def second_adapter(final):
        calls["adapter"] += final.name == "adapter"
        return final.name == "adapter" and calls["adapter"] == 3  # 1: the base (epoch 0), 2: epoch 1

    _fail_on(monkeypatch, atomic, "atomic_dir", second_adapter)  # best of epoch 2 is written, its adapter is not
    with pytest.raises(OSError):
        _train(kp_host, kp_data, out, config)
    monkeypatch.undo()
    assert _meta(out, "best")["epoch"] == 2 and _meta(out, "last")["best_epoch"] == 1
    _resume(kp_host, kp_data, out)
    _assert_best_matches_record(out)
    assert _meta(out, "last")["best_epoch"] == 3


def test_a_best_lost_after_the_run_is_recreated_from_last_when_it_is_that_epoch(kp_host, kp_data, tmp_path, capsys):
    import shutil

    out = tmp_path / "exp"
    _train(kp_host, kp_data, out, _config(kp_host, **EVERY_EPOCH_BEST))
    shutil.rmtree(_ckpt(out, "best"))
    results = _resume(kp_host, kp_data, out)
    assert "re-created" in capsys.readouterr().err
    _assert_best_matches_record(out)
    assert results[TEACHER].best_epoch == 3


def test_resume_recovers_last_from_last_old(kp_host, kp_data, tmp_path):
    straight = tmp_path / "straight"
    _train(kp_host, kp_data, straight)
    out = tmp_path / "exp"
    with pytest.raises(Interrupted):
        _train(kp_host, kp_data, out, stop_after_steps=4)  # mid epoch 2
    last = _ckpt(out, "last")
    os.replace(last, last.with_name("last.old"))  # the crash between the two renames of a swap
    _resume(kp_host, kp_data, out)
    assert not last.with_name("last.old").exists()
    _, state, _ = load_checkpoint(last)
    assert state["epoch"] == 3 and len(state["history"]) == 4  # epoch 0 (the base) and three trained
    a = load_file(str(_ckpt(straight, "last") / "trainable.safetensors"))
    b = load_file(str(last / "trainable.safetensors"))
    assert all(a[k].equal(b[k]) for k in a), "resume started over instead of continuing from last.old"


class _NanGradientLoss:
    """A finite loss whose gradient is NaN from step ``start`` on: the weights, not the
    loss, turn non-finite (the trap of ``torch.where`` over a NaN branch)."""

    def __init__(self, start):
        self.start = start
        self.calls = 0

    @hookimpl(tryfirst=True)
    def teacherkit_make_loss(self, teacher, config, model):
        import torch

        def loss(outputs, batch):
            self.calls += 1
            if self.calls >= self.start and torch.is_grad_enabled():
                poisoned = torch.sqrt(-outputs.abs() - 1.0)  # NaN, and so is its gradient
                outputs = torch.where(torch.zeros_like(outputs, dtype=torch.bool), poisoned, outputs)
            return {"loss": torch.nn.functional.l1_loss(outputs, batch["target"])}

        return loss


def test_weights_turning_non_finite_stop_the_run_and_keep_the_last_good_checkpoint(kp_host, kp_data, tmp_path):
    import torch

    kp_host.register(_NanGradientLoss(start=5), "nan-grad")  # 3 training steps per epoch: epoch 2 goes bad
    out = tmp_path / "exp"
    with pytest.raises(TrainingAborted, match="weights became non-finite"):
        _train(kp_host, kp_data, out)
    trainable, _state, meta = load_checkpoint(_ckpt(out, "last"))
    assert meta["epoch"] == 1 and not meta["finished"]
    assert all(torch.isfinite(t).all() for t in trainable.values())
    adapter = load_file(str(out / "teachers" / TEACHER / "adapter" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in adapter.values())
    assert json.loads((out / "metadata.json").read_text())["status"] == "failed"
