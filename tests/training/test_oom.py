"""Out of memory: one message with what to try (training and labelling), ``last`` kept, and
``--batch-size auto`` choosing the largest batch that fits.

The CPU never runs out of memory here, so the tests make the real teachers raise the error
CUDA raises (``torch.cuda.OutOfMemoryError``) at a chosen call or above a chosen batch size.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from teacherkit.cli import run
from teacherkit.out_of_memory import is_out_of_memory, labelling_advice, training_advice
from teacherkit.training.batch_size import largest_fitting_batch

FAST = ["--preset", "tiny", "--num-workers", "0", "--set", "teachers.grounding_dino.shortest_edge=64",
        "--set", "teachers.grounding_dino.longest_edge=64", "--set", "teachers.sam.image_size=64"]
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB"


def _config():
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager

    return resolve_config(get_plugin_manager().config_model())


# -- recognising the error and the advice -----------------------------------------------------------


@pytest.mark.parametrize(("exc", "expected"), [
    (torch.cuda.OutOfMemoryError(CUDA_OOM), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised(exc, expected):
    assert is_out_of_memory(exc) is expected


def test_advice_follows_the_teachers_own_config_cheapest_first():
    config = _config()
    sam = training_advice("sam", config.teacher("sam"), 8)
    assert [step.split(":")[0] for step in sam] == [
        "a smaller batch", "gradient checkpointing", "a frozen image encoder", "a smaller LoRA rank"]
    assert "--batch-size 4" in sam[0] and "--batch-size auto" in sam[0]
    assert "--set teachers.sam.gradient_checkpointing=true" in sam[1]
    assert "--set teachers.sam.mode=frozen_encoder" in sam[2] and "--lora-r 8" in sam[3]
    frozen = config.teacher("sam").model_copy(update={"mode": "frozen_encoder"})
    assert [s.split(":")[0] for s in training_advice("sam", frozen, 1)] == ["a smaller LoRA rank"]
    dino = config.teacher("grounding_dino")
    assert [s.split(":")[0] for s in training_advice("grounding_dino", dino, 2)] == [
        "a smaller batch", "a smaller LoRA rank"]  # no key for checkpointing or a frozen encoder: not offered
    unfrozen = dino.model_copy(update={"freeze_backbone": False, "finetune": "full"})
    assert [s.split(":")[0] for s in training_advice("grounding_dino", unfrozen, 1)] == [
        "a frozen image backbone", "LoRA instead of full fine-tuning"]
    assert labelling_advice(1, has_masks=False) == ["--device cpu (slow, but bounded by the machine's memory)"]


# -- the search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 5, 6, 16, 100])
@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 64, 200])
def test_search_finds_the_largest_batch_that_fits(threshold, limit):
    calls = []

    def fits(size):
        calls.append(size)
        return size <= threshold

    search = largest_fitting_batch(fits, limit)
    assert search.chosen == min(threshold, limit)
    assert len(calls) == len(set(calls))  # no size tried twice
    assert all(1 <= size <= limit for size in calls)
    assert [size for size, _ok in search.tried] == calls


# -- training -----------------------------------------------------------------------------------------


def _masks_data(tiny_coco):
    train = tiny_coco(num_images=6, size=(64, 64), seed=41, boxes=False)
    val = tiny_coco(num_images=2, size=(64, 64), seed=42, boxes=False)
    return ["--data", str(train), "--val", str(val)]


def _error_lines(capsys):
    """What the command printed on stderr besides warnings: one line is expected."""
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, lines
    return lines[0]


def _oom_on_training_call(monkeypatch, teacher_class, n):
    """``teacher_class.forward`` raises CUDA's error on its ``n``-th call in training mode."""
    original = teacher_class.forward
    calls = {"n": 0}

    def forward(self, model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == n:
                raise torch.cuda.OutOfMemoryError(CUDA_OOM)
        return original(self, model, batch)

    monkeypatch.setattr(teacher_class, "forward", forward)


@pytest.mark.slow
def test_oom_in_training_is_one_message_exit_2_and_last_kept(tiny_coco, tmp_path, monkeypatch, capsys):
    from teacherkit.training.checkpoint import load_train_state
    from teacherkit_sam.teacher import SamTeacher

    _oom_on_training_call(monkeypatch, SamTeacher, 3)  # 6 images, batch 3: the first step of epoch 2
    out = tmp_path / "exp"
    assert run(["train", *_masks_data(tiny_coco), "--output", str(out), "--epochs", "2", "--batch-size", "3",
                "--quiet", *FAST]) == 2
    err = _error_lines(capsys)
    assert "Traceback" not in err and "CUDA out of memory" not in err
    assert err.startswith("error: sam ran out of memory on cpu while training (epoch 2) at batch size 3 (peak ")
    steps = err.split("Try, in this order:")[1]
    order = ["--batch-size 1", "teachers.sam.gradient_checkpointing=true", "teachers.sam.mode=frozen_encoder",
             "teachers.sam.finetune=lora"]  # the tiny preset fine-tunes fully
    assert [steps.index(step) for step in order] == sorted(steps.index(step) for step in order)
    last = out / "teachers" / "sam" / "checkpoints" / "last"
    assert f"The checkpoint of epoch 1 is kept in {last}" in err
    _trainable, state = load_train_state(last)  # complete and loadable: the end of epoch 1
    assert state.epoch == 1 and not state.finished
    leftovers = [p.name for p in last.parent.iterdir() if p.name not in ("best", "last")]
    assert leftovers == []  # no half-written checkpoint or swap left behind
    assert json.loads((out / "metadata.json").read_text())["status"] == "failed"
    assert not (out / ".teacherkit.lock").exists()


@pytest.mark.slow
def test_oom_in_the_first_epoch_says_nothing_was_trained(tiny_coco, tmp_path, monkeypatch, capsys):
    from teacherkit_dino.teacher import GroundingDinoTeacher

    _oom_on_training_call(monkeypatch, GroundingDinoTeacher, 1)
    data = tiny_coco(num_images=2, size=(64, 64), seed=43, masks=False)
    assert run(["train", "--data", str(data), "--val", str(data), "--output", str(tmp_path / "exp"), "--epochs", "1",
                "--batch-size", "2", "--quiet", *FAST]) == 2
    err = _error_lines(capsys)
    assert "grounding_dino ran out of memory" in err and "at batch size 2" in err, err
    assert "No training epoch had finished, so there is no trained checkpoint" in err


@pytest.mark.slow
def test_batch_size_auto_records_the_largest_that_fits(tiny_coco, tmp_path, monkeypatch, capsys):
    """Batches over 5 images 'run out of memory': auto picks 5, records it, and --resume
    with the same command accepts it; --scale-lr scales the rate by 5/4."""
    from teacherkit_sam.teacher import SamTeacher

    original = SamTeacher.forward
    sizes = []

    def forward(self, model, batch):
        size = batch["pixel_values"].shape[0]
        if model.training:
            sizes.append(size)
        if model.training and size > 5:
            raise torch.cuda.OutOfMemoryError(CUDA_OOM)
        return original(self, model, batch)

    monkeypatch.setattr(SamTeacher, "forward", forward)
    out = tmp_path / "exp"
    command = ["train", *_masks_data(tiny_coco), "--output", str(out), "--epochs", "1", "--batch-size", "auto",
               "--scale-lr", "--lr", "1e-3", *FAST]
    assert run(command) == 0
    printed = capsys.readouterr().out
    assert "sam: --batch-size auto chose 5 (1 fits, 2 fits, 4 fits, 6 out of memory, 5 fits)" in printed
    assert "lr 0.00125 (training.scale_lr: 0.001 x 5 images per update / 4)" in printed
    saved = yaml.safe_load((out / "teacher_config.yaml").read_text())
    assert saved["training"]["batch_size"] == "auto" and saved["training"]["scale_lr"] is True
    assert saved["teachers"]["sam"]["batch_size"] == 5
    assert sizes[-2:] == [5, 1]  # after the search, training ran 6 images as batches of 5 and 1
    assert run([*command, "--resume"]) == 0  # the first command repeated: the recorded size is kept
    assert "--batch-size auto chose" not in capsys.readouterr().out


def test_batch_size_flag_is_a_number_or_auto(tiny_coco, tmp_path, capsys):
    data = tiny_coco(num_images=2, size=(64, 64), seed=44)
    assert run(["train", "--data", str(data), "--output", str(tmp_path / "x"), "--batch-size", "big"]) == 2
    assert "error: --batch-size big: expected a whole number of images or 'auto'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_scaled_lr_follows_the_linear_rule():
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.settings import LoopSettings

    host = get_plugin_manager()
    spec = host.teacher("sam")
    plain = resolve_config(host.config_model(), sets=["training.batch_size=auto", "training.lr=1e-3"])
    assert LoopSettings.from_config(plain, spec, batch_size=16).lr == pytest.approx(1e-3)  # only when asked
    scaled = resolve_config(host.config_model(), sets=["training.batch_size=auto", "training.lr=1e-3",
                                                       "training.scale_lr=true", "training.grad_accumulation=2"])
    settings = LoopSettings.from_config(scaled, spec, batch_size=16, processes=2)
    assert settings.batch_size == 16 and settings.lr == pytest.approx(1e-3 * 16 * 2 * 2 / 4)
    with pytest.raises(Exception, match="must be searched for"):
        LoopSettings.from_config(plain, spec)


# -- labelling ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labelled_experiment(tmp_path_factory):
    """Both tiny teachers, one epoch, and four unlabelled images."""
    from PIL import Image

    from teacherkit.testing import train_tiny_pair

    root = tmp_path_factory.mktemp("oom-label")
    train_tiny_pair(root, train_images=3, val_images=None, edge=64, max_detections=2, seed=45)
    images = root / "unlabelled"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(images / f"u{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize(("module", "cls", "name"), [("teacherkit_dino.teacher", "GroundingDinoTeacher",
                                                      "grounding_dino"),
                                                     ("teacherkit_sam.teacher", "SamTeacher", "sam")])
def test_oom_in_label_names_the_teacher_and_resume_finishes(labelled_experiment, tmp_path, monkeypatch, capsys,
                                                             module, cls, name):
    import importlib

    teacher_class = getattr(importlib.import_module(module), cls)
    original = teacher_class.predict
    calls = {"n": 0}

    def predict(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch: the first is labelled and kept
            raise torch.cuda.OutOfMemoryError(CUDA_OOM)
        return original(self, model, batch)

    monkeypatch.setattr(teacher_class, "predict", predict)
    root = labelled_experiment
    output = tmp_path / "pseudo.json"
    command = ["label", str(root / "exp"), "--images", str(root / "unlabelled"), "--output", str(output),
               "--batch-size", "2", "--quiet"]
    assert run(command) == 2
    err = _error_lines(capsys)
    assert "Traceback" not in err
    assert err.startswith(f"error: {name} ran out of memory on cpu while labelling at batch size 2")
    assert "1. a smaller batch: --batch-size 1" in err and "--device cpu" in err
    partial = output.with_name(output.name + ".partial.jsonl")
    assert f"kept in {partial}" in err and "--resume" in err
    if name == "grounding_dino":  # SAM's calls depend on how many boxes each image got
        assert len(partial.read_text().splitlines()) == 2
    monkeypatch.setattr(teacher_class, "predict", original)
    assert run([*command, "--resume"]) == 0
    assert len(json.loads(output.read_text())["images"]) == 4
