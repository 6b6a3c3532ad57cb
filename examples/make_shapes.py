"""Regenerate the shipped example dataset ``examples/shapes`` (seeded, byte-identical).

Coloured squares, circles and triangles on dark backgrounds, 128×128 pixels, with boxes and
polygon masks: small enough to ship (~200 KB) and learnable on a CPU in a couple of minutes.

    python examples/make_shapes.py [--out examples/shapes]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from teacherkit.data.synthetic import make_coco_dataset

SPLITS = {"train": (96, 1), "val": (24, 2)}  # images, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "shapes")
    args = parser.parse_args()
    for split, (num_images, seed) in SPLITS.items():
        folder = args.out / split
        if folder.exists():
            shutil.rmtree(folder)
        path = make_coco_dataset(folder, num_images=num_images, size=(128, 128), seed=seed, max_objects=3,
                                 json_name="annotations.json")
        print(f"wrote {path} ({num_images} images)")


if __name__ == "__main__":
    main()
