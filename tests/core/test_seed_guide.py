"""The seed guide's calls, as written there, on the shipped example data (docs/seed-api.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "domain_b" / "train.json"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def test_inspect_a_path_or_a_dict_and_read_it_both_ways():
    from teacherkit import get_required_models, inspect_dataset, load_and_inspect_dataset

    info = inspect_dataset(str(TRAIN))
    assert info["annotation_kinds"] == info.annotation_kinds == ["boxes", "masks"]
    assert info["num_classes"] == 3 and "class_names" in info and info.get("nope", 7) == 7
    with pytest.raises(KeyError, match="nope"):
        info["nope"]

    with open(TRAIN) as f:
        data = json.load(f)
    from_dict = inspect_dataset(data)
    assert from_dict["class_names"] == info["class_names"] == ["square", "circle", "triangle"]
    assert from_dict["num_images"] == len(data["images"])

    assert get_required_models(info) == ["grounding_dino", "sam"]
    assert get_required_models(data) == ["grounding_dino", "sam"]
    dataset, same = load_and_inspect_dataset(TRAIN)
    assert len(dataset.images) == same["num_images"] and same["annotation_kinds"] == ["boxes", "masks"]


def test_generate_config_layers_the_file_over_the_dataset_facts(tmp_path):
    from teacherkit import generate_config, inspect_dataset

    info = inspect_dataset(TRAIN)
    config = generate_config(default_config_path=QUICKSTART, dataset_info=info)
    assert config.training.epochs == 8  # from the file
    assert config.dataset.class_names == ["square", "circle", "triangle"] and config.dataset.num_classes == 3
    assert config.teacher("grounding_dino").base == "examples/pretrained/grounding_dino"

    saved = tmp_path / "teacher_config.yaml"
    generate_config(default_config_path=QUICKSTART, dataset_info=info, output_path=saved)
    assert "class_names" in saved.read_text()


def _image():
    from PIL import Image

    return np.asarray(Image.open(ROOT / "examples" / "domain_b" / "images" / "test_0000.png").convert("RGB"))


@pytest.mark.slow
def test_one_preprocessor_for_the_required_models(monkeypatch):
    from teacherkit import create_preprocessor_from_models, generate_config

    # the default bases are the real pretrained models, which this machine does not hold: the
    # guide's call with the shipped pretrained pair (quickstart.yaml; paths relative to the repo)
    monkeypatch.chdir(ROOT)
    config = generate_config(default_config_path=QUICKSTART)
    out = create_preprocessor_from_models(["grounding_dino", "sam"], config).preprocess_batch(_image())
    assert set(out) == {"grounding_dino", "sam"}
    for name, (tensor, meta) in out.items():
        assert tensor.ndim == 4 and tensor.shape[:2] == (1, 3), name
        assert str(tensor.dtype) == "torch.uint8", name  # shipped compact; the teacher normalises on its device
        assert "image_sizes" in meta, name  # what the device step needs to finish the batch
        assert isinstance(meta, dict)
    assert "input_ids" in out["grounding_dino"][1]  # the prompt travels with the pixels


def test_augmentation_registry_pipeline():
    from teacherkit import get_augmentation_registry

    pipeline = get_augmentation_registry().get_pipeline(
        characteristics=["changes_shape", "reflective_surface"],
        environment={"lighting": "variable", "camera": "fixed"}, intensity="medium", seed=0)
    image = _image()
    out = pipeline(image=image, bboxes=np.array([[10, 10, 20, 20]], np.float32), labels=np.array([1]))
    assert out["image"].shape == image.shape and len(out["bboxes"]) == len(out["labels"])


def test_peft_lora_key_names_are_accepted_and_unknown_ones_named():
    from teacherkit.config import ConfigError
    from teacherkit.seed_api import lora_settings

    lora = lora_settings({"r": 16, "lora_alpha": 32, "lora_dropout": 0.0})
    assert (lora.r, lora.alpha, lora.dropout) == (16, 32, 0.0)
    with pytest.raises(ConfigError, match="'lora_rank'"):
        lora_settings({"lora_rank": 4})


def _dino_batch(teacher):
    from teacherkit.data.coco import load_coco
    from teacherkit.data.samples import SampleDataset
    from teacherkit.seed_api import inspect_dataset

    coco = load_coco(TRAIN)
    info = inspect_dataset(coco)
    dataset = SampleDataset(coco, TRAIN.parent, info, teacher.make_preprocessor(), learns_from="boxes", train=True)
    return dataset.preprocessor.collate([dataset[0], dataset[1]])


@pytest.mark.slow
def test_training_and_checkpoint_managers(tmp_path):
    import torch

    from teacherkit import CheckpointManager, TrainingManager, get_plugin_manager, load_grounding_dino_with_lora
    from teacherkit.training.checkpoint import load_train_state

    config_path = tmp_path / "config.yaml"
    config_path.write_text("training:\n  grad_clip: 1.0\ncheckpointing:\n  patience: 1\n")
    teacher = load_grounding_dino_with_lora("tiny", 3, lora_config={"r": 16, "lora_alpha": 32},
                                            class_names=["square", "circle", "triangle"])
    lora = {n: p.detach().clone() for n, p in teacher.model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n or "modules_to_save" in n or "head" in n for n in lora)
    optimizer = torch.optim.AdamW([p for p in teacher.model.parameters() if p.requires_grad], lr=1e-2)
    host = get_plugin_manager()
    loss_fn = host.make_loss(teacher.spec, teacher.config, teacher)

    manager = TrainingManager(teacher, optimizer, config_path)
    losses = manager.training_step(_dino_batch(teacher), loss_fn)
    assert math.isfinite(losses["loss"]) and manager.updates == 1
    changed = [n for n, p in teacher.model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert changed

    checkpoints = CheckpointManager(tmp_path / "checkpoints", config_path)
    assert checkpoints.save_checkpoint(1, teacher, optimizer, {"val_loss": 1.0}) is True
    assert checkpoints.should_stop is False  # a property, as in the guide
    assert checkpoints.save_checkpoint(2, teacher, optimizer, {"val_loss": 2.0}) is False
    assert checkpoints.should_stop is True
    _, best = load_train_state(checkpoints.best_dir)
    _, last = load_train_state(checkpoints.last_dir)
    assert (best.epoch, last.epoch, last.best_epoch) == (1, 2, 1)


def test_every_call_on_the_page_is_exported_lazily():
    import re
    import subprocess
    import sys

    import teacherkit

    text = (ROOT / "docs" / "seed-api.md").read_text()
    names = set(re.findall(r"from teacherkit import ([\w, ]+)", text))
    exported = {n.strip() for line in names for n in line.split(",")}
    assert exported and exported <= set(teacherkit.__all__)
    code = ("import sys, teacherkit; from teacherkit import inspect_dataset, TrainingManager; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
