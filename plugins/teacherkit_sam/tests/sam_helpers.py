"""Helpers of the SAM plugin's tests: samples read from COCO files the way the core's
dataset presents them (RGB image, xywh boxes, (N, H, W) masks), samples built from
explicit masks, and a few plain training steps.

Imported by name (``from sam_helpers import ...``): pytest puts this folder on
``sys.path`` because it has no ``__init__.py`` (a package named ``tests`` would clash
with the repository's own ``tests`` package), so the name is unique to this plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def load_samples(json_path: Path) -> list[dict[str, Any]]:
    """Every image of a COCO file as a :class:`teacherkit.types.Sample`."""
    from PIL import Image

    from teacherkit.data.masks import segmentation_to_mask

    data = json.loads(Path(json_path).read_text())
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    mapping = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    samples = []
    for img in data["images"]:
        h, w = img["height"], img["width"]
        anns = by_image.get(img["id"], [])
        masks = np.stack([segmentation_to_mask(a["segmentation"], h, w, where=f"annotation {a['id']}") for a in anns]
                         ) if anns else np.zeros((0, h, w), np.uint8)
        samples.append({
            "image": np.asarray(Image.open(Path(json_path).parent / img["file_name"]).convert("RGB")),
            "image_id": img["id"],
            "file_name": img["file_name"],
            "orig_size": (h, w),
            "boxes": np.array([a.get("bbox", [0, 0, 0, 0]) for a in anns], np.float32).reshape(-1, 4),
            "labels": np.array([mapping[a["category_id"]] for a in anns], np.int64),
            "category_ids": np.array([a["category_id"] for a in anns], np.int64),
            "annotation_ids": np.array([a["id"] for a in anns], np.int64),
            "iscrowd": np.array([a.get("iscrowd", 0) for a in anns], np.int64),
            "masks": masks,
            "extra": {},
        })
    return samples


def make_sample(masks: np.ndarray, *, boxes: np.ndarray | None = None, image_id: int = 1, seed: int | None = None,
                image: np.ndarray | None = None) -> dict[str, Any]:
    """A Sample from explicit ``(N, H, W)`` masks (boxes default to the masks' tight boxes)."""
    masks = np.asarray(masks, dtype=np.uint8)
    n, h, w = masks.shape
    if boxes is None:
        boxes = np.zeros((n, 4), np.float32)
        for i, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            if len(xs):
                boxes[i] = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    if image is None:
        image = np.random.default_rng(image_id).integers(0, 255, (h, w, 3), dtype=np.uint8)
    return {
        "image": image, "image_id": image_id, "file_name": f"img{image_id}.png", "orig_size": (h, w),
        "boxes": np.asarray(boxes, np.float32), "labels": np.zeros(n, np.int64),
        "category_ids": np.arange(n, dtype=np.int64) + 1,
        "annotation_ids": np.arange(n, dtype=np.int64) + 100 * image_id,
        "iscrowd": np.zeros(n, np.int64), "masks": masks, "extra": {} if seed is None else {"seed": seed},
    }


def train_steps(teacher: Any, samples: list[dict[str, Any]], steps: int, lr: float = 3e-3) -> list[float]:
    """Plain AdamW steps on one batch of ``samples`` (the seed changes per step, as the
    trainer's per-epoch seed does); returns the losses."""
    import torch

    pre, loss_fn = teacher.make_preprocessor(), teacher.make_loss()
    params = [p for p in teacher.model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr)
    teacher.model.train()
    losses = []
    for step in range(steps):
        items = [pre({**s, "extra": {"seed": step * 1000 + i}}, train=True) for i, s in enumerate(samples)]
        batch = pre.collate(items)
        loss = loss_fn(teacher.forward(teacher.model, batch), batch)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    return losses
