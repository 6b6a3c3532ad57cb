"""End-to-end training with the real tiny teachers: the data decides which teachers train."""

from __future__ import annotations

import json

import pytest

from teacherkit.cli import run

FAST = ["--preset", "tiny", "--epochs", "1", "--batch-size", "3", "--num-workers", "0", "--quiet",
        "--set", "teachers.grounding_dino.shortest_edge=64", "--set", "teachers.grounding_dino.longest_edge=64",
        "--set", "teachers.sam.image_size=64"]


def _data(tiny_coco, **kind):
    train = tiny_coco(num_images=6, size=(64, 64), seed=11, **kind)
    val = tiny_coco(num_images=3, size=(64, 64), seed=12, **kind)
    return ["--data", str(train), "--val", str(val)]


def _trained(out):
    return sorted(p.name for p in (out / "teachers").iterdir() if (p / "adapter").is_dir())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "expected"),
    [({"masks": False}, ["grounding_dino"]), ({"boxes": False}, ["sam"]), ({}, ["grounding_dino", "sam"])],
    ids=["boxes-only", "masks-only", "both"],
)
def test_the_data_decides_which_teachers_train(tiny_coco, tmp_path, kind, expected):
    out = tmp_path / "exp"
    assert run(["train", *_data(tiny_coco, **kind), "--output", str(out), *FAST]) == 0
    assert _trained(out) == expected
    meta = json.loads((out / "metadata.json").read_text())
    assert sorted(meta["teachers"]) == expected
    for name in expected:
        final = meta["teachers"][name]["final_metrics"]
        assert ("bbox_AP" in final) if name == "grounding_dino" else ("mIoU" in final)
        assert (out / "plots" / f"{name}.png").is_file()
        assert (out / "teachers" / name / "base").is_dir()  # the tiny base travels with the experiment
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["has_boxes"] == ("boxes" in meta["data"]["annotation_kinds"])


@pytest.mark.slow
def test_models_can_narrow_but_not_widen(tiny_coco, tmp_path, capsys):
    data = _data(tiny_coco, masks=False)
    assert run(["train", *data, "--output", str(tmp_path / "a"), "--models", "sam", *FAST]) == 2
    err = capsys.readouterr().err
    assert "--models sam: the training data has no 'masks' annotations" in err and "Traceback" not in err
    assert run(["train", *data, "--output", str(tmp_path / "b"), "--models", "nope", *FAST]) == 2
    assert "teacher 'nope' is not installed" in capsys.readouterr().err
    both = _data(tiny_coco)
    assert run(["train", *both, "--output", str(tmp_path / "c"), "--models", "grounding_dino", *FAST]) == 0
    assert _trained(tmp_path / "c") == ["grounding_dino"]


def test_bad_flags_fail_cleanly(tiny_coco, tmp_path, capsys):
    data = _data(tiny_coco)
    assert run(["train", *data, "--output", str(tmp_path / "x"), "--set", "training.epoks=1"]) == 2
    assert "did you mean training.epochs" in capsys.readouterr().err
    assert run(["train", "--data", str(tmp_path / "missing.json"), "--output", str(tmp_path / "y")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_real_teachers_resume_bit_identically(tiny_coco, tmp_path):
    """Both tiny teachers (and augmentation) interrupted mid-epoch and resumed end with
    weights identical to an uninterrupted run."""
    from safetensors.torch import load_file

    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.loop import Interrupted
    from teacherkit.training.trainer import TeacherTrainer

    train = tiny_coco(num_images=6, size=(64, 64), seed=21)
    host = get_plugin_manager()
    config = resolve_config(host.config_model(), preset="tiny", sets=[
        "training.epochs=2", "training.batch_size=3", "training.num_workers=0", "training.lr=1e-3",
        "teachers.grounding_dino.shortest_edge=64", "teachers.grounding_dino.longest_edge=64",
        "teachers.sam.image_size=64", "augmentation.characteristics=[symmetric]"])

    def trainer(out, **kw):
        return TeacherTrainer(train, None, None, out, config, host=host, quiet=True, **kw)

    trainer(tmp_path / "straight").train()
    with pytest.raises(Interrupted):
        trainer(tmp_path / "broken", stop_after_steps=3).train()  # grounding_dino, epoch 2, batch 1
    TeacherTrainer(train, None, None, tmp_path / "broken", None, host=host, quiet=True, resume=True).train()
    for name in ("grounding_dino", "sam"):
        rel = f"teachers/{name}/checkpoints/last/trainable.safetensors"
        a, b = load_file(str(tmp_path / "straight" / rel)), load_file(str(tmp_path / "broken" / rel))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
