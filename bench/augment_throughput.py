"""Images per second of a medium augmentation pipeline on 1024-px images with masks,
on one CPU core, next to the identity pipeline on the same images and to the same
transforms run through a plain albumentations ``Compose``.

The identity pipeline still does the per-sample work every pipeline does (input checks,
boxes from masks, re-indexing), so the difference between the two is the cost of the
transforms themselves.

    python bench/augment_throughput.py                 # defaults below
    python bench/augment_throughput.py --size 512 --instances 4 --json out.json
    python bench/augment_throughput.py --iterations 40 --boxes-too \
        --json bench/results/augment_throughput-DATE.json     # the docs' table

The JSON carries the machine, date, versions and command (``scripts/render_results.py``
renders it into docs/performance.md) and, per annotation kind, each pipeline's CPU-time
ratio to the plain albumentations reference measured in the same run.
"""

from __future__ import annotations

import os

# one core: set before numpy/cv2 start their thread pools
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

MEDIUM_REQUEST = {
    "characteristics": ["changes_shape", "reflective_surface"],
    "environment": {"lighting": "variable", "camera": "fixed"},
    "intensity": "medium",
}


def make_samples(count: int, size: int, instances: int, seed: int) -> list[dict]:
    """Synthetic scenes of filled shapes (with per-shape masks) on a noisy background."""
    from teacherkit.data.synthetic import draw_shapes_image

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    categories = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "triangle"}]
    samples = []
    for _ in range(count):
        pixels, objects = draw_shapes_image(rng, size, size, categories, max_objects=instances,
                                            min_objects=instances, size_range=(0.06, 0.14))
        pixels = np.clip(pixels.astype(np.int16) + noise.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
        masks = np.stack([o["mask"] for o in objects]) if objects else np.zeros((0, size, size), np.uint8)
        n = len(objects)
        samples.append({
            "image": pixels,
            "boxes": np.zeros((n, 4), np.float32),  # set from the masks in main()
            "labels": np.array([o["category_id"] - 1 for o in objects], np.int64),
            "category_ids": np.array([o["category_id"] for o in objects], np.int64),
            "annotation_ids": np.arange(n, dtype=np.int64),
            "iscrowd": np.zeros(n, np.int64),
            "masks": masks,
            "extra": {},
        })
    return samples


def measure(augment, samples: list[dict], iterations: int, warmup: int = 3) -> tuple[float, float]:
    """(images/s by wall clock, images/s by this process's CPU time). On a shared machine
    the CPU-time figure is the fairer "per core" number; both are printed."""
    for i in range(warmup):
        augment(samples[i % len(samples)], i)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(iterations):
        augment(samples[i % len(samples)], 1000 + i)
    return iterations / (time.perf_counter() - wall), iterations / (time.process_time() - cpu)


class PlainAlbumentations:
    """Reference: the same transforms in a plain albumentations ``Compose`` fed the mask
    stack and the boxes the usual way (no packing, no box/mask rule)."""

    def __init__(self, transforms):
        import albumentations as A

        self.compose = A.Compose(transforms, bbox_params=A.BboxParams(format="coco", label_fields=["labels"],
                                                                      clip=True, filter_invalid_bboxes=True))

    def __call__(self, sample: dict, seed: int) -> dict:
        self.compose.set_random_seed(seed)
        data = {"image": sample["image"], "bboxes": sample["boxes"], "labels": sample["labels"]}
        if sample["masks"] is not None and len(sample["masks"]):
            data["masks"] = sample["masks"]
        return self.compose(**data)


def ratios_to_reference(rows: list[dict]) -> None:
    """Add each row's CPU-time speed relative to plain albumentations on the same annotations."""
    reference = {r["annotations"]: r["images_per_s_cpu"] for r in rows if r["pipeline"] == "albumentations"}
    for row in rows:
        ref = reference.get(row["annotations"])
        row["vs_albumentations"] = round(row["images_per_s_cpu"] / ref, 3) if ref else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="Image side in pixels.")
    parser.add_argument("--instances", type=int, default=6, help="Masked instances per image.")
    parser.add_argument("--images", type=int, default=8, help="Distinct images cycled through.")
    parser.add_argument("--iterations", type=int, default=60, help="Timed samples per pipeline.")
    parser.add_argument("--boxes-too", action="store_true", help="Also time the same images as boxes only.")
    parser.add_argument("--json", help="Write the figures to this JSON file.")
    args = parser.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from teacherkit_augment.characteristics import BUILTIN_CHARACTERISTICS
    from teacherkit_augment.pipeline import SampleAugmenter
    from teacherkit_augment.registry import AugmentationRegistry

    registry = AugmentationRegistry(BUILTIN_CHARACTERISTICS)
    pipelines = {
        "identity": SampleAugmenter(registry.get_pipeline()),
        "medium": SampleAugmenter(registry.get_pipeline(**MEDIUM_REQUEST)),
    }
    pipelines["albumentations"] = PlainAlbumentations(registry.transforms(**MEDIUM_REQUEST))
    samples = make_samples(args.images, args.size, args.instances, seed=0)
    from teacherkit_augment.pipeline import boxes_from_masks

    for sample in samples:  # real boxes, so the plain reference moves boxes as well as masks
        sample["boxes"] = boxes_from_masks(sample["masks"])
    rows = []
    variants = [("masks", samples)]
    if args.boxes_too:
        boxes_only = []
        for s in samples:
            boxes_only.append({**s, "masks": None})
        variants.append(("boxes", boxes_only))
    for kind, data in variants:
        for name, augment in pipelines.items():
            wall, cpu = measure(augment, data, args.iterations)
            rows.append({"pipeline": name, "annotations": kind, "images_per_s_wall": round(wall, 2),
                         "images_per_s_cpu": round(cpu, 2), "ms_cpu_per_image": round(1000 / cpu, 1)})
    ratios_to_reference(rows)
    print(f"{args.size}x{args.size} px, {args.instances} instances, 1 core "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores visible)")
    print(f"medium = {json.dumps(MEDIUM_REQUEST)}")
    print(f"{'pipeline':14} {'annotations':12} {'img/s (wall)':>13} {'img/s (cpu)':>12} {'ms cpu/img':>11} "
          f"{'vs albumentations':>18}")
    for row in rows:
        print(f"{row['pipeline']:14} {row['annotations']:12} {row['images_per_s_wall']:>13} "
              f"{row['images_per_s_cpu']:>12} {row['ms_cpu_per_image']:>11} {row['vs_albumentations']:>17}x")
    if args.json:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_throughput import run_record

        record = {"kind": "augment_throughput", **run_record("bench/augment_throughput.py", argv),
                  "settings": {"size": args.size, "instances": args.instances, "images": args.images,
                               "iterations": args.iterations, "threads": 1},
                  "args": vars(args), "request": MEDIUM_REQUEST, "rows": rows}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
