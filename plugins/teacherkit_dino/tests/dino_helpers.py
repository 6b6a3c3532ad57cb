"""Helpers for the Grounding DINO plugin tests: dataset facts, samples read from COCO
files written by ``teacherkit.testing.make_coco_dataset``, tiny teachers and batches.

Imported by name (``from dino_helpers import ...``): pytest puts this folder on
``sys.path`` because it has no ``__init__.py`` (a package named ``tests`` would clash
with the repository's own ``tests`` package), so the name is unique to this plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.data.info import DatasetInfo


def info_from_categories(categories: list[dict[str, Any]], source: str = "test.json") -> DatasetInfo:
    cats = sorted(categories, key=lambda c: int(c["id"]))
    return DatasetInfo(
        annotation_kinds=["boxes"], categories=[{"id": int(c["id"]), "name": c["name"]} for c in cats],
        class_names=[c["name"] for c in cats], class_mapping={int(c["id"]): i for i, c in enumerate(cats)},
        source=source,
    )


def load_coco_samples(json_path: Path) -> tuple[DatasetInfo, list[dict[str, Any]]]:
    """The dataset's ``DatasetInfo`` and one ``teacherkit.types.Sample`` per image."""
    from PIL import Image

    data = json.loads(Path(json_path).read_text())
    info = info_from_categories(data["categories"], source=str(json_path))
    samples = []
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        pixels = np.asarray(Image.open(Path(json_path).parent / image["file_name"]).convert("RGB"))
        samples.append({
            "image": pixels, "image_id": image["id"], "file_name": image["file_name"],
            "orig_size": pixels.shape[:2],
            "boxes": np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4),
            "labels": np.asarray([info.class_mapping[a["category_id"]] for a in anns], dtype=np.int64),
            "category_ids": np.asarray([a["category_id"] for a in anns], dtype=np.int64),
            "annotation_ids": np.asarray([a["id"] for a in anns], dtype=np.int64),
            "iscrowd": np.asarray([a.get("iscrowd", 0) for a in anns], dtype=np.int64),
            "masks": None,
        })
    return info, samples


def make_teacher(info: DatasetInfo, **overrides: Any):
    """A tiny-preset teacher built through the plugin's load hook."""
    from teacherkit_dino import plugin
    from teacherkit_dino.config import GroundingDinoConfig

    settings = {"base": "tiny", "shortest_edge": 64, "longest_edge": 96, **overrides}
    config = GroundingDinoConfig(**settings)
    return plugin.teacherkit_load_model(teacher=plugin.TEACHER, config=config, dataset_info=info, workdir=None)


def shapes_info() -> DatasetInfo:
    """Gapped ids and id 0 on purpose: the phrase ↔ category map must not assume 1..n."""
    return info_from_categories([{"id": 0, "name": "square"}, {"id": 7, "name": "circle"},
                                 {"id": 3, "name": "triangle"}])


def random_sample(rng: np.random.Generator, image_id: int, labels: list[int], size=(48, 64)) -> dict[str, Any]:
    h, w = size
    boxes = []
    for _ in range(len(labels)):
        x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        boxes.append([x, y, rng.uniform(4, w / 2), rng.uniform(4, h / 2)])
    n = len(labels)
    return {
        "image": rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "image_id": image_id, "orig_size": (h, w),
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
        "category_ids": np.zeros(n, dtype=np.int64), "annotation_ids": np.arange(n), "iscrowd": np.zeros(n),
        "masks": None,
    }


def batch_for(teacher, seed=0, n=2):
    """A collated evaluation batch of ``n`` random samples for ``teacher``."""
    pre = teacher.make_preprocessor()
    rng = np.random.default_rng(seed)
    return pre.collate([pre(random_sample(rng, i + 1, [i % 3, 2]), train=False) for i in range(n)])


def tuned_lora_teacher(**overrides):
    """A tiny LoRA teacher whose trainable weights moved (as training would move them)."""
    import torch

    teacher = make_teacher(shapes_info(), finetune="lora", **overrides)
    with torch.no_grad():  # stand in for training: move every trainable weight
        for p in teacher.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return teacher


def two_image_batch(teacher: Any) -> dict[str, Any]:
    """A collated batch of two random 70x90 images with two boxes each, through the
    teacher's own preprocessor (evaluation transforms)."""
    import torch

    pre = teacher.make_preprocessor()
    rng = torch.Generator().manual_seed(3)
    samples = []
    for i in range(2):
        image = (torch.rand(70, 90, 3, generator=rng) * 255).to(torch.uint8).numpy()
        samples.append({"image": image, "image_id": i, "file_name": f"{i}.png", "orig_size": (70, 90),
                        "boxes": np.asarray([[5.0, 6.0, 30.0, 20.0], [40.0, 30.0, 20.0, 25.0]], dtype=np.float32),
                        "labels": np.asarray([1, 2]), "category_ids": np.asarray([7, 3]),
                        "annotation_ids": np.asarray([2 * i, 2 * i + 1]), "iscrowd": np.asarray([0, 0]),
                        "masks": None, "extra": {"seed": i}})
    return pre.collate([pre(s, train=False) for s in samples])
