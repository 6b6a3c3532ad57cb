"""Validation at COCO train2017 scale versus pycocotools' own loading.

Generates a train2017-shaped annotation file (118,287 images, ~6.8 annotations per image,
mostly polygons with ~25 points, ~1% uncompressed-RLE crowds, 80 categories with COCO's
gapped ids) and measures, each in a fresh subprocess so peak memory is honest:

* ``pycocotools.coco.COCO(file)`` (json.load + index), the baseline;
* ``teacherkit.data.validate.validate_coco(file, check_images=False)``, every check;
* ``teacherkit.data.coco.load_coco(file)``, the typed load training uses.

Usage::

    python bench/validate_scale.py                 # full scale (~450 MB file, a few minutes)
    python bench/validate_scale.py --images 2000   # CI smoke test
    python bench/validate_scale.py --json          # machine-readable figures

Target: validation <= 0.5x pycocotools' load time, peak RSS <= pycocotools'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
SIZES = [(640, 480), (640, 427), (480, 640), (640, 425), (500, 375), (427, 640)]


def _polygon(rng: np.random.Generator, width: int, height: int) -> tuple[list[float], list[float], float]:
    """A star-shaped (so simple) polygon inside the image: coords, bbox, shoelace area."""
    points = int(rng.integers(8, 43))
    radius = float(rng.uniform(8, min(width, height) / 3))
    cx = float(rng.uniform(radius, width - radius))
    cy = float(rng.uniform(radius, height - radius))
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = radius * rng.uniform(0.5, 1.0, points)
    xs = np.round(cx + radii * np.cos(angles), 2)
    ys = np.round(cy + radii * np.sin(angles), 2)
    area = 0.5 * abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(np.roll(xs, -1), ys)))
    coords = np.empty(2 * points)
    coords[0::2], coords[1::2] = xs, ys
    x0, y0 = float(xs.min()), float(ys.min())
    return coords.tolist(), [x0, y0, round(float(xs.max()) - x0, 2), round(float(ys.max()) - y0, 2)], round(area, 2)


def _crowd(rng: np.random.Generator, width: int, height: int) -> tuple[dict, list[float], float]:
    """An uncompressed RLE of a few vertical stripes (column-major runs)."""
    x0 = int(rng.integers(0, width // 2))
    cols = int(rng.integers(5, width // 3))
    y0 = int(rng.integers(0, height // 2))
    rows = int(rng.integers(5, height // 2))
    counts = [x0 * height + y0]
    for _ in range(cols - 1):
        counts += [rows, height - rows]
    counts += [rows, height * width - sum(counts) - rows]
    return ({"size": [height, width], "counts": counts}, [float(x0), float(y0), float(cols), float(rows)],
            float(rows * cols))


def generate(path: Path, num_images: int, anns_per_image: float, seed: int = 0) -> dict[str, int]:
    """Write the synthetic file in chunks (the generator never holds it all)."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num_images):
        w, h = SIZES[i % len(SIZES)]
        images.append({"license": 1, "file_name": f"{i + 1:012d}.jpg", "coco_url": "", "height": h, "width": w,
                       "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": i + 1})
    counts = rng.poisson(anns_per_image, num_images)
    ann_id = 1
    with open(path, "wb") as fh:
        fh.write(b'{"info":{"description":"teacherkit synthetic train2017-shaped"},"licenses":[{"id":1,"name":"x"}],')
        fh.write(b'"images":' + msgspec.json.encode(images) + b',"annotations":[')
        first = True
        chunk: list[dict] = []
        for index, image in enumerate(images):
            for _ in range(int(counts[index])):
                w, h = image["width"], image["height"]
                if rng.random() < 0.01:
                    seg, bbox, area = _crowd(rng, w, h)
                    crowd = 1
                else:
                    parts = [_polygon(rng, w, h) for _ in range(2 if rng.random() < 0.1 else 1)]
                    seg = [p[0] for p in parts]
                    xs = [p[1][0] for p in parts] + [p[1][0] + p[1][2] for p in parts]
                    ys = [p[1][1] for p in parts] + [p[1][1] + p[1][3] for p in parts]
                    bbox = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
                    area, crowd = sum(p[2] for p in parts), 0
                chunk.append({"segmentation": seg, "area": area, "iscrowd": crowd, "image_id": image["id"],
                              "bbox": bbox, "category_id": COCO_CATEGORY_IDS[int(rng.integers(0, 80))],
                              "id": ann_id})
                ann_id += 1
            if len(chunk) >= 20000 or index == len(images) - 1:
                if chunk:
                    body = msgspec.json.encode(chunk)[1:-1]
                    fh.write(body if first else b"," + body)
                    first = False
                chunk = []
        categories = [{"supercategory": "thing", "id": cid, "name": f"class_{cid}"} for cid in COCO_CATEGORY_IDS]
        fh.write(b'],"categories":' + msgspec.json.encode(categories) + b"}")
    return {"images": num_images, "annotations": ann_id - 1, "bytes": path.stat().st_size}


_MEASURE = r"""
import json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
if which == "pycocotools":
    from pycocotools.coco import COCO
    import contextlib, io
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    detail = {"annotations": len(coco.anns)}
elif which == "validate":
    from teacherkit.data.validate import validate_coco
    import teacherkit.data.annotation_checks, pycocotools.mask
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    report = validate_coco(path, check_images=False)
    detail = {"errors": len(report.errors), "warnings": len(report.warnings), "codes": dict(report.codes())}
else:
    from teacherkit.data.coco import load_coco
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    dataset = load_coco(path)
    detail = {"annotations": len(dataset.annotations)}
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak / 1024, "baseline_rss_mb": base / 1024, **detail}))
"""


def measure(which: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, which, str(path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{which} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=118_287, help="number of images (default: train2017's)")
    parser.add_argument("--anns-per-image", type=float, default=6.8, help="mean annotations per image")
    parser.add_argument("--file", type=Path, help="reuse or keep the generated file at this path")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    tmp = None
    if args.file is None:
        tmp = tempfile.TemporaryDirectory(prefix="tk-bench-")
        path = Path(tmp.name) / "instances_synthetic.json"
    else:
        path = args.file
    try:
        if path.exists():
            shape = {"bytes": path.stat().st_size}
        else:
            t = time.perf_counter()
            shape = generate(path, args.images, args.anns_per_image)
            shape["generate_seconds"] = round(time.perf_counter() - t, 1)
        results = {name: measure(name, path) for name in ("pycocotools", "validate", "load_coco")}
    finally:
        if tmp is not None:
            tmp.cleanup()
    base = results["pycocotools"]
    ratios = {name: {"time_ratio": r["seconds"] / base["seconds"], "rss_ratio": r["peak_rss_mb"] / base["peak_rss_mb"]}
              for name, r in results.items()}
    out = {"file": shape, "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
           "results": results, "ratios_vs_pycocotools": ratios}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"file: {shape.get('images', '?')} images, {shape.get('annotations', '?')} annotations, "
          f"{shape['bytes'] / 1e6:.0f} MB   ({out['machine']})")
    print(f"{'':24}{'seconds':>10}{'peak RSS MB':>14}{'time x':>9}{'RSS x':>8}")
    for name, label in (("pycocotools", "pycocotools COCO(file)"), ("validate", "teacherkit validate"),
                        ("load_coco", "teacherkit load_coco")):
        r = results[name]
        print(f"{label:24}{r['seconds']:>10.2f}{r['peak_rss_mb']:>14.0f}{ratios[name]['time_ratio']:>9.2f}"
              f"{ratios[name]['rss_ratio']:>8.2f}")
    v = results["validate"]
    print(f"validation findings: {v['errors']} errors, {v['warnings']} warnings {v['codes']}")
    ok = ratios["validate"]["time_ratio"] <= 0.5 and ratios["validate"]["rss_ratio"] <= 1.0
    print(f"target (validate <= 0.5x time, <= 1x peak RSS): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
