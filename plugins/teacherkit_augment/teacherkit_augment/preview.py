"""``teacherkit augment preview``: a PNG grid of augmented samples to look at before
training.

Samples are built from a COCO file the way training builds them (boxes, masks where the
annotation has a segmentation, contiguous labels), run through the same
``augment(sample, seed)`` callable training uses, and drawn with their masks (tinted)
and boxes (outlined, labelled) on fixed-size tiles.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teacherkit.atomic import atomic_write_bytes
from teacherkit.errors import DataError, OutputExistsError

#: Outline colours by class index; distinct at a glance on dark and light images.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 220, 64), (64, 128, 255), (255, 200, 0), (255, 0, 255),
    (0, 230, 230), (255, 128, 0), (160, 96, 255), (128, 255, 128), (255, 128, 192),
)
MASK_ALPHA = 0.45
BOX_WIDTH = 2
BACKGROUND = (24, 24, 24)


@dataclass
class PreviewSource:
    """What the preview needs from a dataset: samples to augment and class names."""

    samples: list[dict[str, Any]]
    class_names: list[str]


def load_samples(data: Path, images_dir: Path | None = None, *, limit: int | None = None) -> PreviewSource:
    """Up to ``limit`` samples (annotated images first, in file order) of a COCO file,
    built by the sample dataset training uses (:class:`teacherkit.data.samples.SampleDataset`),
    so the preview shows exactly what training would augment: crowd regions skipped, masks
    decoded when the file has any (instances without one get an empty mask and keep their
    box), boxes derived from masks where ``bbox`` is missing."""
    from teacherkit.data.coco import load_coco
    from teacherkit.data.info import DatasetInfo
    from teacherkit.data.samples import SampleDataset

    data = Path(data)
    coco = load_coco(data)
    folder = Path(images_dir) if images_dir is not None else data.parent
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder")
    if not coco.images:
        raise DataError(f"{data}: no images to preview")
    categories = sorted(coco.categories, key=lambda c: c.id)
    info = DatasetInfo(categories=[{"id": c.id, "name": c.name} for c in categories],
                       class_names=[c.name for c in categories],
                       class_mapping={c.id: i for i, c in enumerate(categories)})
    has_masks = any(ann.segmentation for ann in coco.annotations)
    dataset = SampleDataset(coco, folder, info, None, learns_from="boxes", train=False, with_masks=has_masks)
    order = sorted(range(len(dataset)), key=lambda i: not coco.annotations_for(dataset.images[i].id))
    samples: list[dict[str, Any]] = []
    for index in order[: limit or None]:
        try:
            sample = dataset.raw_sample(index)
        except ValueError as exc:  # a segmentation pycocotools cannot decode
            raise DataError(f"{data}: image {dataset.images[index].file_name}: {exc}") from exc
        sample["extra"] = {}
        if sample["masks"] is not None and not sample["masks"].any():
            sample["masks"] = None  # no segmentation in this image: the box path, as for boxes-only data
        samples.append(dict(sample))
    return PreviewSource(samples, [c.name for c in categories])


def draw_tile(sample: dict[str, Any], tile: int, class_names: Sequence[str]) -> Any:
    """One ``tile`` × ``tile`` PIL image: the sample letterboxed, masks tinted, boxes
    outlined in their class colour with the class name."""
    from PIL import Image, ImageDraw

    pixels = np.asarray(sample["image"])
    height, width = pixels.shape[:2]
    scale = min(tile / width, tile / height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.asarray(Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    labels = np.asarray(sample.get("labels", np.zeros(0, np.int64)))
    masks = sample.get("masks")
    if masks is not None:
        for mask, label in zip(masks, labels):
            small = np.asarray(Image.fromarray(mask * 255).resize((new_w, new_h), Image.NEAREST)) > 0
            colour = np.array(PALETTE[int(label) % len(PALETTE)], dtype=np.float32)
            canvas[small] = (1 - MASK_ALPHA) * canvas[small] + MASK_ALPHA * colour
    image = Image.new("RGB", (tile, tile), BACKGROUND)
    left, top = (tile - new_w) // 2, (tile - new_h) // 2
    image.paste(Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8)), (left, top))
    draw = ImageDraw.Draw(image)
    for (x, y, w, h), label in zip(np.asarray(sample["boxes"]).reshape(-1, 4), labels):
        colour = PALETTE[int(label) % len(PALETTE)]
        x0, y0 = left + x * scale, top + y * scale
        x1, y1 = left + (x + w) * scale, top + (y + h) * scale
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=BOX_WIDTH)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        draw.text((x0 + 3, max(top, y0 - 11)), name, fill=colour)
    return image


def render_grid(source: PreviewSource, augment: Any, *, n: int = 16, tile: int = 256, seed: int = 0) -> Any:
    """``n`` tiles in a near-square grid; tile ``i`` shows sample ``i mod len(samples)``
    augmented with seed ``seed + i``, so the same arguments give the same grid."""
    from PIL import Image

    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = Image.new("RGB", (cols * tile, rows * tile), BACKGROUND)
    for i in range(n):
        sample = source.samples[i % len(source.samples)]
        augmented = augment(sample, seed + i) if augment is not None else sample
        grid.paste(draw_tile(augmented, tile, source.class_names), ((i % cols) * tile, (i // cols) * tile))
    return grid


def write_png(image: Any, out: Path, *, overwrite: bool) -> None:
    """Write ``image`` to ``out`` atomically; refuse to replace a file without ``overwrite``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(out, buffer.getvalue())
