"""A tiny trained experiment shared by the inference tests: both teachers, LoRA on the
random tiny bases (so merge and adapter scaling have something to do), one epoch."""

from __future__ import annotations

import pytest

from teacherkit.testing import make_coco_dataset


@pytest.fixture(scope="session")
def tiny_experiment(tmp_path_factory):
    from teacherkit.config import resolve_config
    from teacherkit.plugins import get_plugin_manager
    from teacherkit.training.trainer import TeacherTrainer

    root = tmp_path_factory.mktemp("tiny-exp")
    train = make_coco_dataset(root / "train", num_images=6, size=(64, 64), seed=31)
    test = make_coco_dataset(root / "test", num_images=3, size=(64, 64), seed=32)
    host = get_plugin_manager()
    config = resolve_config(host.config_model(), preset="tiny", sets=[
        "training.epochs=1", "training.batch_size=3", "training.num_workers=0", "training.lr=5e-3",
        "teachers.grounding_dino.finetune=lora", "teachers.sam.finetune=lora",
        "teachers.grounding_dino.shortest_edge=96", "teachers.grounding_dino.longest_edge=96",
        "teachers.grounding_dino.box_threshold=0.0", "teachers.grounding_dino.text_threshold=0.0",
        "teachers.grounding_dino.max_detections=5", "teachers.sam.image_size=64",
        # one epoch of random tiny models rarely beats the base on val, and these tests need the
        # trained adapter: pick the best epoch by the training loss (the base has none)
        "checkpointing.monitor=train_loss", "checkpointing.mode=min"])
    out = root / "exp"
    TeacherTrainer(train, test, None, out, config, host=host, quiet=True).train()
    return {"path": out, "train": train, "test": test, "root": root}
