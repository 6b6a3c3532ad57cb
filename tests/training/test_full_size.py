"""One ``teacherkit train`` step at the real sizes, on the CPU, on every CI run.

The bases are the real architectures at full size with random weights, built here as local
folders (nothing is downloaded): transformers' default ``GroundingDinoConfig`` (Swin-T
backbone, BERT-base text encoder: the grounding-dino-tiny architecture) with the shipped
example tokenizer (its ids fit BERT's vocabulary), and ``SamConfig()`` (ViT-B) with the
shipped SAM processor config. Each teacher trains one step of one image at the default
input sizes (shorter side 800 up to 1333 for Grounding DINO, 1024 for SAM), is scored on a
one-image validation file after that step, and must leave an adapter whose weights have the
full-size shapes. The base is not scored first (``checkpointing.score_base=false``): that
pass would run the same prediction code at the same sizes again, a third of each test's time.
The teachers run in separate tests (``--models``) so each fits a CI slot.

The images are square, so Grounding DINO sees 800x800 pixels (a 3:5 image would reach the
1333 cap and cost two thirds more CPU time for the same code path).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from teacherkit.cli import run
from teacherkit.data.synthetic import make_coco_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pretrained"
IMAGE_SIZE = (64, 64)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    root = tmp_path_factory.mktemp("full-size")
    # one training image (one step), one validation image, evaluated after the epoch; at 1024 px
    # / 800 px each forward and backward is seconds of CPU, so the sizes, not the batch, are
    # what this test is about
    data = {split: make_coco_dataset(root / split, num_images=n, size=IMAGE_SIZE, seed=seed, max_objects=1)
            for split, seed, n in (("train", 51, 1), ("val", 52, 1))}
    return root, data


def _grounding_dino_base(folder: Path) -> Path:
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GroundingDinoForObjectDetection(GroundingDinoConfig())
    model.config.architectures = ["GroundingDinoForObjectDetection"]
    model.save_pretrained(folder)
    tokenizer = EXAMPLES / "grounding_dino"
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(tokenizer / name, folder / name)
    return folder


def _sam_base(folder: Path) -> Path:
    import torch
    from transformers import SamConfig, SamModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SamModel(SamConfig()).save_pretrained(folder)
    shutil.copy(EXAMPLES / "sam" / "processor_config.json", folder / "processor_config.json")
    return folder


def _train(full_size, name: str, base: Path) -> Path:
    root, data = full_size
    out = root / f"exp-{name}"
    assert run(["train", "--data", str(data["train"]), "--val", str(data["val"]), "--output", str(out),
                "--models", name, "--epochs", "1", "--batch-size", "1", "--num-workers", "0", "--quiet",
                "--set", f"teachers.{name}.base={base}", "--set", "augmentation.enabled=false",
                "--set", "checkpointing.score_base=false"]) == 0
    meta = json.loads((out / "metadata.json").read_text())["teachers"][name]
    assert meta["best_epoch"] == 1 and meta["base_metric"] is None  # scored once, after the step
    assert meta["best_metric"] is not None
    return out


def _adapter_shapes(out: Path, name: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    adapter = out / "teachers" / name / "adapter"
    files = sorted(adapter.glob("*.safetensors"))
    assert files, f"no adapter weights in {adapter}"
    shapes = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            shapes.update({key: tuple(f.get_slice(key).get_shape()) for key in f.keys()})
    return shapes


@pytest.mark.slow
def test_grounding_dino_trains_a_step_at_full_size(full_size, tmp_path):
    out = _train(full_size, "grounding_dino", _grounding_dino_base(tmp_path / "grounding-dino-swin-t"))
    saved = yaml.safe_load((out / "teacher_config.yaml").read_text())["teachers"]["grounding_dino"]
    assert (saved["shortest_edge"], saved["longest_edge"], saved["finetune"]) == (800, 1333, "lora")
    shapes = _adapter_shapes(out, "grounding_dino")
    lora_a = [s for k, s in shapes.items() if "decoder.layers.5.self_attn.query" in k and "lora_A" in k]
    assert lora_a == [(16, 256)]  # six decoder layers of width 256: the Swin-T model's
    head = [s for k, s in shapes.items() if "bbox_embed" in k and k.endswith("layers.0.weight")]
    assert head and all(s == (256, 256) for s in head)
    assert not (out / "teachers" / "grounding_dino" / "base").exists()  # a local base is not copied


@pytest.mark.slow
def test_sam_trains_a_step_at_full_size(full_size, tmp_path):
    out = _train(full_size, "sam", _sam_base(tmp_path / "sam-vit-b"))
    saved = yaml.safe_load((out / "teacher_config.yaml").read_text())["teachers"]["sam"]
    assert (saved["image_size"], saved["finetune"], saved["mode"]) == (1024, "lora", "lora")
    shapes = _adapter_shapes(out, "sam")
    qkv = {s for k, s in shapes.items() if ".attn.qkv.lora_A" in k}
    assert qkv == {(16, 768)}  # ViT-B: width 768
    assert sum(".attn.qkv.lora_A" in k for k in shapes) == 12  # twelve encoder blocks
