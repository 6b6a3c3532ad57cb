"""A tiny trained experiment shared by the inference tests: both teachers, LoRA on the
random tiny bases (so merge and adapter scaling have something to do), one epoch."""

from __future__ import annotations

import pytest

from teacherkit.testing import train_tiny_pair


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-exp")
    out = train_tiny_pair(root, sets=(
        "training.lr=5e-3", "teachers.grounding_dino.finetune=lora", "teachers.sam.finetune=lora",
        # one epoch of random tiny models rarely beats the base on val, and these tests need the
        # trained adapter: pick the best epoch by the training loss (the base has none)
        "checkpointing.monitor=train_loss", "checkpointing.mode=min"))
    train, test = root / "train" / "annotations.json", root / "test" / "annotations.json"
    return {"path": out, "train": train, "test": test, "root": root}
