"""Prediction grids: the same validation images every epoch, ground truth on the left and
the teacher's predictions on the right of each pair.

Box teachers: boxes with class and score (above a display threshold, at most
``MAX_BOXES`` per image). Mask teachers: each prompted mask filled in its class colour,
with the box it was prompted with outlined. Images are scaled to ``THUMB`` pixels on the
long side once, when the samples are loaded (small ones up, so the labels stay legible),
so drawing each epoch is cheap.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Images per grid, the seed of their choice, and the long side of each panel.
GRID_IMAGES = 8
GRID_SEED = 0
THUMB = 256
MAX_BOXES = 15
PAIRS_PER_ROW = 2
CAPTION = 16
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0),
           (170, 255, 195), (128, 128, 0), (0, 0, 128), (255, 225, 25)]


def pick_indices(total: int, count: int = GRID_IMAGES, seed: int = GRID_SEED) -> list[int]:
    """``count`` indices of ``range(total)``, the same for the same arguments, sorted."""
    return sorted(random.Random(seed).sample(range(total), min(count, total)))


@dataclass
class GridSample:
    """One image scaled for the grid, with its ground truth (in original pixels; ``scale``
    maps them onto ``pixels``)."""

    image_id: int
    file_name: str
    pixels: np.ndarray
    scale: float
    orig_size: tuple[int, int]
    annotations: list[dict[str, Any]] = field(default_factory=list)


def load_samples(gt: dict[str, Any], images_dir: Path, indices: Sequence[int]) -> list[GridSample]:
    """The images at ``indices`` of ``gt["images"]``, read (EXIF-oriented) and scaled."""
    from PIL import Image

    from teacherkit.data.samples import read_image

    anns: dict[Any, list[dict[str, Any]]] = {}
    for ann in gt.get("annotations", []):
        anns.setdefault(ann["image_id"], []).append(ann)
    out = []
    for i in indices:
        info = gt["images"][i]
        pixels = read_image(Path(images_dir) / info["file_name"])
        h, w = pixels.shape[:2]
        scale = THUMB / max(h, w)
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
        out.append(GridSample(int(info["id"]), info["file_name"], pixels, scale, (h, w), anns.get(info["id"], [])))
    return out


def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _colour(category_id: int, order: dict[int, int]) -> tuple[int, int, int]:
    return PALETTE[order.get(category_id, category_id) % len(PALETTE)]


def _label(draw: Any, xy: tuple[float, float], text: str, colour: tuple[int, int, int], font: Any) -> None:
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
    draw.text(xy, text, fill=(255, 255, 255), font=font)


def _mask_thumb(segmentation: Any, sample: GridSample) -> np.ndarray:
    from PIL import Image

    from teacherkit.data.masks import segmentation_to_mask

    mask = segmentation_to_mask(segmentation, *sample.orig_size).astype(np.uint8) * 255
    h, w = sample.pixels.shape[:2]
    if mask.shape != (h, w):
        mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST))
    return mask > 127


def draw_panel(sample: GridSample, items: Sequence[dict[str, Any]], *, names: dict[int, str],
               order: dict[int, int], masks: bool, prompts: dict[int, list[float]] | None = None) -> Any:
    """The sample's image with ``items`` (annotations or predictions) drawn on it."""
    from PIL import Image, ImageDraw

    pixels = sample.pixels.astype(np.float32)
    if masks:
        for item in items:
            if item.get("segmentation"):
                region = _mask_thumb(item["segmentation"], sample)
                pixels[region] = 0.45 * pixels[region] + 0.55 * np.asarray(_colour(item["category_id"], order))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw, font, s = ImageDraw.Draw(image), _font(), sample.scale
    for item in items:
        colour = _colour(item["category_id"], order)
        box = item.get("bbox") if not masks else (prompts or {}).get(item.get("annotation_id"), item.get("bbox"))
        text = names.get(item["category_id"], str(item["category_id"]))
        if "score" in item:
            text += f" {item['score']:.2f}"
        if box is not None:
            x, y, w, h = (v * s for v in box)
            draw.rectangle((x, y, x + w, y + h), outline=(255, 255, 255) if masks else colour, width=1 if masks else 2)
            _label(draw, (x + 1, max(0.0, y - 12)), text, colour, font)
    return image


def _prediction_items(sample: GridSample, predictions: Sequence[dict[str, Any]], masks: bool,
                      threshold: float) -> list[dict[str, Any]]:
    if masks:
        return list(predictions)
    kept = sorted((p for p in predictions if p.get("score", 1.0) >= threshold and p.get("bbox") is not None),
                  key=lambda p: -p.get("score", 1.0))
    return kept[:MAX_BOXES]


def prediction_grid(samples: Sequence[GridSample], predictions: Sequence[dict[str, Any]], *,
                    categories: Sequence[dict[str, Any]], masks: bool, threshold: float = 0.0,
                    title: str = "") -> tuple[Any, dict[str, Any]]:
    """``(PIL image, layout)``: one pair (ground truth | predictions) per sample,
    ``PAIRS_PER_ROW`` pairs a row; ``layout`` lists the image ids and counts."""
    from PIL import Image, ImageDraw

    names = {c["id"]: c["name"] for c in categories}
    order = {c["id"]: i for i, c in enumerate(categories)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for pred in predictions:
        by_image.setdefault(int(pred.get("image_id", -1)), []).append(pred)
    cell_w = max((s.pixels.shape[1] for s in samples), default=THUMB)
    cell_h = max((s.pixels.shape[0] for s in samples), default=THUMB) + CAPTION
    cols = min(PAIRS_PER_ROW, max(len(samples), 1))
    rows = -(-len(samples) // cols) if samples else 0
    canvas = Image.new("RGB", (cols * 2 * cell_w + (cols - 1) * 8, CAPTION + rows * cell_h), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font()
    draw.text((4, 2), title, fill=(0, 0, 0), font=font)
    drawn = []
    for n, sample in enumerate(samples):
        x0 = (n % cols) * (2 * cell_w + 8)
        y0 = CAPTION + (n // cols) * cell_h
        prompts = {int(a["id"]): a.get("bbox") for a in sample.annotations if "id" in a}
        items = _prediction_items(sample, by_image.get(sample.image_id, []), masks, threshold)
        gt_items = [a for a in sample.annotations if a.get("segmentation") or not masks]
        for k, (panel_items, label) in enumerate(((gt_items, "truth"), (items, "predicted"))):
            panel = draw_panel(sample, panel_items, names=names, order=order, masks=masks, prompts=prompts)
            canvas.paste(panel, (x0 + k * cell_w, y0 + CAPTION))
            draw.text((x0 + k * cell_w + 2, y0 + 2), f"{label}: {Path(sample.file_name).name}"[:40],
                      fill=(0, 0, 0), font=font)
        drawn.append({"image_id": sample.image_id, "file_name": sample.file_name, "ground_truth": len(gt_items),
                      "predictions": len(items)})
    layout = {"images": drawn, "count": len(drawn), "rows": rows, "pairs_per_row": cols, "threshold": threshold,
              "panel_size": [cell_w, cell_h - CAPTION]}
    return canvas, layout
