"""Synthetic COCO datasets of coloured shapes with real image files.

Used by the tests (through :mod:`teacherkit.testing`), the shipped examples and the
benchmarks; needs only numpy, Pillow and pycocotools, never pytest.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

SHAPES = ("square", "circle", "triangle")
MaskFormat = Literal["polygon", "rle", "uncompressed_rle", "mixed"]


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[float]:
    if shape == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif shape == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    else:
        pts = [(cx + r * math.cos(2 * math.pi * k / 24), cy + r * math.sin(2 * math.pi * k / 24)) for k in range(24)]
    return [round(float(v), 2) for p in pts for v in p]


def draw_shapes_image(
    rng: random.Random,
    width: int,
    height: int,
    categories: Sequence[dict[str, Any]],
    max_objects: int = 3,
    min_objects: int = 1,
    background: tuple[int, int, int] | None = None,
    size_range: tuple[float, float] = (0.12, 0.25),
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """An RGB image with non-overlapping filled shapes and, per shape, its polygon,
    category id and binary mask. Shape kind follows the category name when it is a
    known shape (square/circle/triangle), otherwise cycles through them."""
    from PIL import Image, ImageDraw

    bg = background or tuple(rng.randint(0, 60) for _ in range(3))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    objects: list[dict[str, Any]] = []
    placed: list[tuple[float, float, float]] = []
    n = rng.randint(min_objects, max_objects)
    for _ in range(n):
        cat = rng.choice(list(categories))
        shape = cat["name"] if cat["name"] in SHAPES else SHAPES[int(cat["id"]) % len(SHAPES)]
        for _attempt in range(30):
            r = rng.uniform(*size_range) * min(width, height)
            cx = rng.uniform(r + 1, width - r - 1)
            cy = rng.uniform(r + 1, height - r - 1)
            if all(math.hypot(cx - x, cy - y) > r + rr + 2 for x, y, rr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        poly = _shape_polygon(shape, cx, cy, r)
        colour = tuple(rng.randint(120, 255) for _ in range(3))
        draw.polygon(list(zip(poly[0::2], poly[1::2])), fill=colour)
        mask_img = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask_img).polygon(list(zip(poly[0::2], poly[1::2])), fill=1)
        objects.append({"category_id": int(cat["id"]), "polygon": poly, "mask": np.asarray(mask_img, dtype=np.uint8)})
    return np.asarray(img), objects


def _mask_bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F")
    counts: list[int] = []
    current, run = 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = int(v), 0
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _annotation(obj: dict[str, Any], ann_id: int, image_id: int, k: int, *, boxes: bool, masks: bool,
                mask_format: MaskFormat, keypoints: bool) -> dict[str, Any]:
    """The COCO annotation of one drawn shape (``k``: its index in the image, which picks
    the format when ``mask_format`` is ``"mixed"``)."""
    from pycocotools import mask as mask_utils

    mask = obj["mask"]
    ann: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": obj["category_id"], "iscrowd": 0,
                           "area": float(mask.sum())}
    if boxes:
        ann["bbox"] = _mask_bbox(mask)
    if masks:
        fmt = mask_format if mask_format != "mixed" else ("polygon", "rle", "uncompressed_rle")[k % 3]
        if fmt == "polygon":
            ann["segmentation"] = [obj["polygon"]]
        elif fmt == "rle":
            rle = mask_utils.encode(np.asfortranarray(mask))
            ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:
            ann["segmentation"] = _uncompressed_rle(mask)
            ann["iscrowd"] = 1
    if keypoints:
        x, y, w, h = _mask_bbox(mask)
        ann["keypoints"] = [x + w / 2, y + h / 2, 2]
        ann["num_keypoints"] = 1
    return ann


def make_coco_dataset(
    root: Path,
    *,
    num_images: int = 4,
    size: tuple[int, int] = (96, 128),
    categories: Sequence[dict[str, Any]] | Sequence[str] = SHAPES,
    boxes: bool = True,
    masks: bool = True,
    mask_format: MaskFormat = "polygon",
    keypoints: bool = False,
    seed: int = 0,
    image_ext: str = "png",
    json_name: str = "annotations.json",
    empty_images: int = 0,
    max_objects: int = 3,
) -> Path:
    """Write a small COCO dataset of coloured shapes to ``root`` and return the JSON path.

    Images are real files next to the JSON (``file_name`` relative to that folder).
    ``categories`` may be names (ids 1..n) or dicts with ``id``/``name`` (gapped ids, id
    0). ``boxes=False`` omits ``bbox`` (masks-only data); ``masks=False`` omits
    ``segmentation``. ``mask_format="mixed"`` alternates polygon, RLE and uncompressed
    RLE (the latter marked ``iscrowd=1``, as COCO does).
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    cats = [{"id": int(c["id"]), "name": str(c["name"]), "supercategory": c.get("supercategory", "shape")}
            for c in (c if isinstance(c, dict) else {"id": i + 1, "name": c} for i, c in enumerate(categories))]
    height, width = size
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    ann_id = 1
    for index in range(num_images):
        image_id = index + 1
        empty = index >= num_images - empty_images
        pixels, objects = draw_shapes_image(rng, width, height, cats, max_objects=max_objects,
                                            min_objects=0 if empty else 1)
        if empty:
            objects = []
        file_name = f"img_{index:04d}.{image_ext}"
        Image.fromarray(pixels).save(root / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for k, obj in enumerate(objects):
            annotations.append(_annotation(obj, ann_id, image_id, k, boxes=boxes, masks=masks,
                                           mask_format=mask_format, keypoints=keypoints))
            ann_id += 1
    if keypoints:
        for cat in cats:
            cat.update(keypoints=["centre"], skeleton=[])
    data = {"info": {"description": "teacherkit synthetic shapes", "version": "1.0"}, "images": images,
            "annotations": annotations, "categories": cats}
    path = root / json_name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
