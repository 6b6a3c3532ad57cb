"""Two synthetic domains for the pretrained-teacher quick start (seeded, byte-identical).

Both domains share one label space (``square``, ``circle``, ``triangle``, ids 1-3) and
128×128 RGB images, with boxes and masks for every object:

- **Domain A** (the source the shipped base is pretrained on): large, bright shapes on a
  plain dark background; nothing else in the picture.
- **Domain B** (the target the quick start adapts to): smaller shapes in any colour, on
  striped, checkered or gradient backgrounds with clutter (lines, dots, crosses) that is
  not an object; and one class changes its look: a ``circle`` is now a **ring** (a hollow
  annulus, whose mask has a hole). A base that only saw domain A finds fewer objects here,
  mistakes clutter for shapes and fills the rings.

Segmentations are polygons in domain A and compressed RLE in domain B (rings have holes).

    python examples/domains.py --out /tmp/domains        # both domains, all splits
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CATEGORIES = [
    {"id": 1, "name": "square", "supercategory": "shape"},
    {"id": 2, "name": "circle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
IMAGE_SIZE = 128


@dataclass(frozen=True)
class Domain:
    """How one domain draws its images."""

    name: str
    radius: tuple[float, float]  # object half-size as a fraction of the image side
    objects: tuple[int, int]  # objects per image (min, max)
    textured: bool  # striped/checkered/gradient background with clutter
    rings: bool  # circles drawn as hollow rings
    seed_offset: int  # keeps the two domains' random streams apart


DOMAIN_A = Domain("domain_a", radius=(0.12, 0.24), objects=(1, 3), textured=False, rings=False, seed_offset=0)
DOMAIN_B = Domain("domain_b", radius=(0.09, 0.17), objects=(1, 4), textured=True, rings=True, seed_offset=10_000)
DOMAINS = {"a": DOMAIN_A, "b": DOMAIN_B}

#: images per split and the seed of each split; the same numbers give the same files
SPLITS: dict[str, dict[str, tuple[int, int]]] = {
    "domain_a": {"train": (480, 1), "val": (48, 2), "test": (64, 3)},
    "domain_b": {"train": (96, 1), "val": (32, 2), "test": (64, 3)},
}


# -- drawing -----------------------------------------------------------------------------------


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    return [(cx + r * math.cos(2 * math.pi * k / 32), cy + r * math.sin(2 * math.pi * k / 32)) for k in range(32)]


def _background(rng: random.Random, domain: Domain) -> Any:
    """A plain dark background (A) or a textured, mid-tone one with clutter (B)."""
    from PIL import Image, ImageDraw

    size = IMAGE_SIZE
    if not domain.textured:
        return Image.new("RGB", (size, size), tuple(rng.randint(0, 60) for _ in range(3)))
    base = tuple(rng.randint(40, 200) for _ in range(3))
    other = tuple(min(255, max(0, c + rng.choice((-1, 1)) * rng.randint(20, 45))) for c in base)
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    kind = rng.choice(("stripes", "checker", "gradient"))
    if kind == "stripes":
        period = rng.randint(6, 16)
        for k in range(-size, 2 * size, period):
            draw.polygon([(k, 0), (k + period // 2, 0), (k + period // 2 + size, size), (k + size, size)], fill=other)
    elif kind == "checker":
        cell = rng.randint(8, 20)
        for y in range(0, size, cell):
            for x in range(0, size, cell):
                if (x // cell + y // cell) % 2:
                    draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=other)
    else:
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)
        ramp = t[None, :, None] if rng.random() < 0.5 else t[:, None, None]
        pixels = np.asarray(base, np.float32) * (1 - ramp) + np.asarray(other, np.float32) * ramp
        img = Image.fromarray(np.broadcast_to(pixels, (size, size, 3)).astype(np.uint8))
        draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):  # clutter: not objects, never annotated
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        what = rng.random()
        if what < 0.5:
            draw.line([(x, y), (rng.uniform(0, size), rng.uniform(0, size))], fill=colour, width=rng.randint(1, 3))
        elif what < 0.8:
            d = rng.uniform(1.5, 4)
            draw.ellipse([x - d, y - d, x + d, y + d], fill=colour)
        else:
            d = rng.uniform(4, 9)
            draw.line([(x - d, y), (x + d, y)], fill=colour, width=2)
            draw.line([(x, y - d), (x, y + d)], fill=colour, width=2)
    return img


def _object_colour(rng: random.Random, domain: Domain, background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Bright colours in A; any colour in B, but far enough from the background to be seen."""
    if not domain.textured:
        return tuple(rng.randint(120, 255) for _ in range(3))  # type: ignore[return-value]
    while True:
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if sum(abs(a - b) for a, b in zip(colour, background)) >= 150:
            return colour  # type: ignore[return-value]


def draw_image(rng: random.Random, domain: Domain) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One image and its objects: ``{"category_id", "mask" (H, W) uint8, "polygon" or None}``."""
    from PIL import Image, ImageDraw

    size = IMAGE_SIZE
    img = _background(rng, domain)
    clean = img.copy()  # what shows through a ring's hole
    draw = ImageDraw.Draw(img)
    placed: list[tuple[float, float, float]] = []
    objects: list[dict[str, Any]] = []
    for _ in range(rng.randint(*domain.objects)):
        cat = rng.choice(CATEGORIES)
        for _attempt in range(40):
            r = rng.uniform(*domain.radius) * size
            cx, cy = rng.uniform(r + 1, size - r - 1), rng.uniform(r + 1, size - r - 1)
            if all(math.hypot(cx - x, cy - y) > r + rr + 3 for x, y, rr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        colour = _object_colour(rng, domain, clean.getpixel((int(cx), int(cy))))
        mask_img = Image.new("L", (size, size), 0)
        mask_draw = ImageDraw.Draw(mask_img)
        poly = _polygon(cat["name"], cx, cy, r)
        draw.polygon(poly, fill=colour)
        mask_draw.polygon(poly, fill=1)
        ring = cat["name"] == "circle" and domain.rings
        if ring:  # the changed look: punch the middle out of the image and the mask
            hole = _polygon("circle", cx, cy, r * rng.uniform(0.45, 0.65))
            hole_img = Image.new("L", (size, size), 0)
            ImageDraw.Draw(hole_img).polygon(hole, fill=255)
            img.paste(clean, mask=hole_img)
            mask_draw.polygon(hole, fill=0)
        objects.append({"category_id": cat["id"], "mask": np.asarray(mask_img, np.uint8),
                        "polygon": None if domain.textured else [round(v, 2) for p in poly for v in p]})
    return np.asarray(img), objects


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]


def write_split(root: Path, domain: Domain, split: str, num_images: int, seed: int) -> Path:
    """Write ``root/images/<split>_NNNN.png`` and ``root/<split>.json``; returns the JSON path."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + domain.seed_offset)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(num_images):
        pixels, objects = draw_image(rng, domain)
        file_name = f"images/{split}_{index:04d}.png"
        Image.fromarray(pixels).save(root / file_name, optimize=True)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for obj in objects:
            mask = obj["mask"]
            if obj["polygon"] is not None:
                segmentation: Any = [obj["polygon"]]
                # box and area from the polygon as pycocotools rasterises it (what readers decode)
                rles = mask_utils.frPyObjects(segmentation, IMAGE_SIZE, IMAGE_SIZE)
                mask = mask_utils.decode(mask_utils.merge(rles))
            else:
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category_id"],
                "bbox": _bbox(mask), "area": float(mask.sum()), "iscrowd": 0, "segmentation": segmentation,
            })
    data = {
        "info": {"description": f"teacherkit synthetic {domain.name} ({split})", "version": "1.0"},
        "images": images, "annotations": annotations, "categories": CATEGORIES,
    }
    path = root / f"{split}.json"
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def write_domain(root: Path, domain: Domain, splits: dict[str, tuple[int, int]] | None = None) -> dict[str, Path]:
    """Every split of ``domain`` under ``root`` (``SPLITS`` unless given)."""
    splits = splits if splits is not None else SPLITS[domain.name]
    return {split: write_split(root, domain, split, n, seed) for split, (n, seed) in splits.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="parent of domain_a/ and domain_b/")
    parser.add_argument("--domains", default="a,b", help="which domains to write (a, b or a,b)")
    args = parser.parse_args(argv)
    for key in args.domains.split(","):
        domain = DOMAINS[key.strip()]
        for split, path in write_domain(args.out / domain.name, domain).items():
            print(f"wrote {path} ({split})")


if __name__ == "__main__":
    main()
