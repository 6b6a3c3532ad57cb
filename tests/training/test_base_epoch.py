"""The base model is epoch 0: a fresh run scores the untouched model before its first
optimizer step, records it like an epoch, and keeps it as ``best`` when no trained epoch
beats it; a resumed run keeps that record and does not score the base again.

The loop is exercised with the example keypoint teacher (tiny, real torch); the run in
which nothing improves uses the real tiny Grounding DINO through the CLI, so the adapter it
keeps is a real peft LoRA adapter."""

from __future__ import annotations

import json
import re

import pytest

from teacherkit.data.coco import load_coco
from teacherkit.reporting.paths import ReportPaths
from teacherkit.reporting.results import read_results_csv
from teacherkit.training.loop import BASE_KEPT, Interrupted
from teacherkit.training.trainer import TeacherTrainer

TEACHER = "keypoint_centroid"


def _config(host, **sets):
    from teacherkit.config import resolve_config

    base = {"training.epochs": 2, "training.batch_size": 4, "training.num_workers": 0, "training.lr": 1e-2}
    base.update(sets)
    return resolve_config(host.config_model(), sets=[f"{k}={v}" for k, v in base.items()])


def _teacher_meta(out, name=TEACHER):
    return json.loads((out / "metadata.json").read_text())["teachers"][name]


@pytest.mark.slow
def test_a_fresh_run_scores_the_base_as_epoch_0(kp_host, kp_data, tmp_path, capsys):
    out = tmp_path / "exp"
    result = TeacherTrainer(kp_data[0], kp_data[1], None, out, _config(kp_host), host=kp_host).train()[TEACHER]
    rows = read_results_csv(ReportPaths.of(out, TEACHER).results_csv)
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # epochs + 1
    base = rows[0]
    assert base["train_loss"] is None and base["lr"] is None and base["seconds"] is None  # nothing trained
    assert base["val_loss"] > 0 and base["centroid_error_px"] >= 0  # scored like every epoch
    assert all(r["train_loss"] > 0 for r in rows[1:])
    assert result.history[0]["epoch"] == 0 and result.epochs_run == 2
    meta = _teacher_meta(out)
    assert meta["base_metric"] == base["val_loss"]  # the monitored metric of the base
    assert meta["base_kept"] is (meta["best_epoch"] == 0)
    table = capsys.readouterr().out
    base_line = next(line for line in table.splitlines() if line.strip().startswith("0 (base)"))
    assert "\u2013" in base_line  # the base's training loss: a dash, not 0 or an empty cell


@pytest.mark.slow
def test_no_epoch_beats_the_base_so_it_is_kept(tiny_coco, tmp_path, capsys):
    """lr 1e-12 changes nothing: the run says the base was kept, exits 0, records it, and
    the adapter it leaves predicts exactly as the base does."""
    from teacherkit.cli import run
    from teacherkit.evaluation.run import predictions_for
    from teacherkit.inference.experiment import Experiment

    train = tiny_coco(num_images=6, size=(64, 64), seed=11, masks=False)
    val = tiny_coco(num_images=3, size=(64, 64), seed=12, masks=False)
    out = tmp_path / "exp"
    code = run(["train", "--data", str(train), "--val", str(val), "--output", str(out), "--preset", "tiny",
                "--epochs", "2", "--batch-size", "3", "--num-workers", "0",
                "--set", "teachers.grounding_dino.finetune=lora", "--set", "training.lr=1e-12",
                "--set", "teachers.grounding_dino.shortest_edge=64",
                "--set", "teachers.grounding_dino.longest_edge=64"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"grounding_dino: {BASE_KEPT}" in text and "0 (base)" in text
    meta = _teacher_meta(out, "grounding_dino")
    assert meta["best_epoch"] == 0 and meta["base_kept"] is True and meta["epochs_run"] == 2
    assert meta["best_metric"] == meta["base_metric"]
    rows = read_results_csv(ReportPaths.of(out, "grounding_dino").results_csv)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    experiment = Experiment(out, device="cpu")
    coco, images = load_coco(val), val.parent
    kept = predictions_for(experiment.teacher("grounding_dino"), coco, images, experiment.info)
    base = predictions_for(experiment.teacher("grounding_dino", adapter=False), coco, images, experiment.info)
    assert kept and kept == base
    # evaluate says so too, and records it for the report
    assert run(["evaluate", str(out), "--data", str(val), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "grounding_dino: no trained epoch beat the base on val, so training kept the base" in captured.err
    assert json.loads(captured.out)["teachers"]["grounding_dino"]["base_kept"] is True


@pytest.mark.slow
def test_resume_after_epoch_1_keeps_epoch_0_and_does_not_score_it_again(kp_host, kp_data, tmp_path, monkeypatch):
    import teacherkit.training.hooks as hooks

    out = tmp_path / "exp"
    with pytest.raises(Interrupted):
        TeacherTrainer(kp_data[0], kp_data[1], None, out, _config(kp_host, **{"training.epochs": 3}), host=kp_host,
                       quiet=True, stop_after_steps=4).train()  # 3 steps per epoch: stops in epoch 2
    before = read_results_csv(ReportPaths.of(out, TEACHER).results_csv)
    assert [r["epoch"] for r in before] == [0, 1]
    scored = []
    real = hooks.validate

    def counting(loop, val_set, evaluate):
        scored.append(loop.state.epoch)  # finished epochs when scoring: 0 would be the base
        return real(loop, val_set, evaluate)

    monkeypatch.setattr(hooks, "validate", counting)
    result = TeacherTrainer(kp_data[0], kp_data[1], None, out, None, host=kp_host, quiet=True,
                            resume=True).train()[TEACHER]
    assert scored == [1, 2]  # epochs 2 and 3; the base was not scored again
    after = read_results_csv(ReportPaths.of(out, TEACHER).results_csv)
    assert [r["epoch"] for r in after] == [0, 1, 2, 3] and after[:2] == before
    assert [r["epoch"] for r in result.history] == [0, 1, 2, 3]
    meta = _teacher_meta(out)
    assert meta["base_metric"] == before[0]["val_loss"] and meta["base_kept"] is (meta["best_epoch"] == 0)


@pytest.mark.slow
def test_score_base_false_skips_epoch_0_and_keeps_the_best_trained_epoch(kp_host, kp_data, tmp_path, monkeypatch,
                                                                           capsys):
    import teacherkit.training.hooks as hooks

    scored = []
    real = hooks.validate

    def counting(loop, val_set, evaluate):
        scored.append(len(loop.state.history))
        return real(loop, val_set, evaluate)

    monkeypatch.setattr(hooks, "validate", counting)
    out = tmp_path / "exp"
    config = _config(kp_host, **{"checkpointing.score_base": "false"})
    result = TeacherTrainer(kp_data[0], kp_data[1], None, out, config, host=kp_host).train()[TEACHER]
    assert scored == [0, 1]  # one validation pass per trained epoch (rows recorded before each); the base's
    # would be a third, before any row
    rows = read_results_csv(ReportPaths.of(out, TEACHER).results_csv)
    assert [r["epoch"] for r in rows] == [1, 2] and [r["epoch"] for r in result.history] == [1, 2]
    meta = _teacher_meta(out)
    assert meta["base_metric"] is None and meta["base_kept"] is False and meta["best_epoch"] in (1, 2)
    assert "0 (base)" not in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grounding_dino", "sam"])
def test_the_untouched_teacher_predicts_as_its_base(plugin_host, tiny_coco, name):
    """What makes epoch 0 the base: before training, LoRA's B matrices are zero and the
    fully trained parts (Grounding DINO's box heads, SAM's mask decoder, in peft's
    ``modules_to_save``) are copies of the base's, so turning the adapter off (scale 0)
    changes no prediction."""
    import torch

    from teacherkit.config import resolve_config
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.evaluation.run import predictions_for
    from teacherkit.inference.experiment import LoadedTeacher

    path = tiny_coco(num_images=3, size=(64, 64), seed=5)
    config = resolve_config(plugin_host.config_model(), preset="tiny", sets=[
        f"teachers.{name}.finetune=lora", "teachers.sam.image_size=64",
        "teachers.grounding_dino.shortest_edge=64", "teachers.grounding_dino.longest_edge=64"])
    coco = load_coco(path)
    info = inspect_dataset(coco, host=plugin_host)
    spec, tcfg = plugin_host.teacher(name), config.teacher(name)
    torch.manual_seed(0)
    teacher = plugin_host.load_model(spec, tcfg, info, None)
    report = teacher.parameter_report()
    assert report.mode == "lora" and report.detail.get("lora", report.detail.get("vision_encoder.lora", 0)) > 0
    teacher.model.eval()
    loaded = LoadedTeacher(spec, teacher, plugin_host.make_preprocessor(spec, tcfg, teacher), tcfg,
                           torch.device("cpu"))
    untouched = predictions_for(loaded, coco, path.parent, info)
    teacher.set_adapter_scale(0.0)
    base = predictions_for(loaded, coco, path.parent, info)
    assert untouched and untouched == base


# -- the pieces, without training ----------------------------------------------------------------


def test_the_base_sets_the_bar_but_uses_no_patience():
    from teacherkit.training.stopping import EarlyStopping

    stop = EarlyStopping(mode="max", patience=1)
    assert stop.update(0.5, 0) and stop.best_epoch == 0 and stop.bad_epochs == 0
    assert not stop.update(0.4, 1) and stop.should_stop() and stop.best_epoch == 0  # the base stays best
    undefined = EarlyStopping(mode="max", patience=1)
    assert not undefined.update(float("nan"), 0) and not undefined.should_stop()  # no trained epoch failed
    assert undefined.update(0.1, 1) and undefined.best_epoch == 1


def test_summary_and_console_show_the_base(capsys):
    from teacherkit.training.console import Reporter
    from teacherkit.training.loop import LoopResult
    from teacherkit.training.metadata import summary_row

    history = [{"epoch": 0, "train_loss": None, "bbox_AP": 0.2}, {"epoch": 1, "train_loss": 1.5, "bbox_AP": 0.1}]
    kept = LoopResult(history=history, best_metric=0.2, best_epoch=0, base_metric=0.2, base_kept=True, epochs_run=1)
    row = summary_row("grounding_dino", kept, "bbox_AP")
    assert row["best epoch"] == "0 (base)" and row["base"] == 0.2 and row["last"] == 0.1
    untrained = summary_row("sam", LoopResult(history=history[:1], best_epoch=None), "mIoU")
    assert untrained["best epoch"] == "-" and "train loss" not in untrained
    reporter = Reporter(tty=False)
    reporter.epoch_row({"epoch": 0, "train_loss": None, "bbox_AP": 0.2})
    reporter.epoch_row({"epoch": 1, "train_loss": 1.5, "train_giou_loss": 0.5, "bbox_AP": 0.1})
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["0", "(base)", "\u2013", "0.2000"]
    assert lines[2].split() == ["epoch", "train_loss", "bbox_AP", "train_giou_loss"]  # a new column: header again
    assert lines[3].split() == ["1", "1.5000", "0.1000", "0.5000"]


def test_the_report_marks_the_base_and_says_when_it_was_kept():
    from teacherkit.reporting.report import base_kept_note, epoch_table

    rows = [{"epoch": 0, "bbox_AP": 0.3}, {"epoch": 1, "bbox_AP": 0.2}, {"epoch": 2, "bbox_AP": 0.1}]
    kept = epoch_table(rows, best_epoch=0)
    assert re.findall(r"<th>([^<]*)</th>", kept) == ["metric", "base = best (epoch 0)", "last (epoch 2)"]
    beaten = epoch_table([{**rows[0], "bbox_AP": 0.05}, *rows[1:]], best_epoch=1)
    assert re.findall(r"<th>([^<]*)</th>", beaten) == ["metric", "base (epoch 0)", "best (epoch 1)", "last (epoch 2)"]
    assert "No epoch beat the base model" in base_kept_note({"base_kept": True})
    assert base_kept_note({"base_kept": False}) == ""
