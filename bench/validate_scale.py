"""Validation and inspection at COCO train2017 scale versus pycocotools' own loading.

Generates train2017-shaped annotation files (118,287 images, ~6.8 annotations per image,
mostly polygons with ~25 points, ~1% uncompressed-RLE crowds, 80 categories with COCO's
gapped ids) and measures, each in a fresh subprocess so that CPU time and peak memory are
honest:

* ``pycocotools.coco.COCO(file)`` (json.load + index), the baseline;
* ``teacherkit.data.validate.validate_coco(file, check_images=False)``, every check;
* ``teacherkit.data.inspect.inspect_dataset(file)``, what ``teacherkit inspect`` does;
* ``teacherkit.data.coco.load_coco(file)``, the typed load training uses.

Two files: ``consistent`` (areas and boxes agree with the polygons) and ``bbox_areas``
(every polygon annotation's ``area`` is its bbox's w*h, as many converters write it, so
each draws an ``area.inconsistent`` warning).

Usage::

    python bench/validate_scale.py                 # full scale (~450 MB per file, minutes)
    python bench/validate_scale.py --images 2000   # CI smoke test
    python bench/validate_scale.py --json-out bench/results/validate_scale-DATE.json

Targets (issue 20), CPU seconds and peak RSS as a multiple of pycocotools': validation
<= 0.5x CPU and <= 1x RSS on the consistent file, <= 1x CPU on the bbox_areas file;
inspect <= 0.5x RSS.
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
from datetime import datetime, timezone
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


def generate(path: Path, num_images: int, anns_per_image: float, seed: int = 0,
             bbox_areas: bool = False) -> dict[str, int]:
    """Write the synthetic file in chunks (the generator never holds it all).

    ``bbox_areas``: every polygon annotation's ``area`` is its bbox's w*h, as many
    converters write it, so that each draws an ``area.inconsistent`` warning."""
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
                    if bbox_areas:
                        area = round(bbox[2] * bbox[3], 2)
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
import contextlib, io, json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
if which == "pycocotools":
    from pycocotools.coco import COCO
    def work():
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(path)
        return {"images": len(coco.imgs), "annotations": len(coco.anns)}
elif which == "validate":
    from teacherkit.data.validate import validate_coco
    import teacherkit.data.annotation_checks, pycocotools.mask
    def work():
        report = validate_coco(path, check_images=False)
        return {"errors": len(report.errors), "warnings": len(report.warnings), "codes": dict(report.codes())}
elif which == "inspect":
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.plugins import get_plugin_manager
    host = get_plugin_manager()
    def work():
        info = inspect_dataset(path, host=host)
        return {"annotations": info.num_annotations, "kinds": info.annotation_kinds}
else:
    from teacherkit.data.coco import load_coco
    def work():
        return {"annotations": len(load_coco(path).annotations)}
base = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
detail = work()
wall = time.perf_counter() - t
used = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # forked workers, if any, count too
cpu = (used.ru_utime + used.ru_stime - base.ru_utime - base.ru_stime + kids.ru_utime + kids.ru_stime)
print(json.dumps({"cpu_seconds": cpu, "wall_seconds": wall, "peak_rss_mb": max(used.ru_maxrss, kids.ru_maxrss) / 1024,
                  "baseline_rss_mb": base.ru_maxrss / 1024, **detail}))
"""

#: What runs on each file, and the label it prints under.
TOOLS = {"pycocotools": "pycocotools COCO(file)", "validate": "teacherkit validate", "inspect": "teacherkit inspect",
         "load_coco": "teacherkit load_coco"}
#: The targets of issue 20, per file: (tool, what, at most x pycocotools).
TARGETS = {"consistent": [("validate", "cpu", 0.5), ("validate", "rss", 1.0), ("inspect", "rss", 0.5)],
           "bbox_areas": [("validate", "cpu", 1.0)]}


def measure(which: str, path: Path) -> dict:
    """One tool on one file in a fresh interpreter: CPU seconds (user + system, the
    machine may be shared, so wall time is only informative) and peak RSS."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, which, str(path)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{which} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("teacherkit", "pycocotools", "msgspec", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_file(kind: str, path: Path, args: argparse.Namespace, tools: list[str]) -> dict:
    if path.exists():
        shape: dict = {"bytes": path.stat().st_size}
    else:
        t = time.perf_counter()
        shape = generate(path, args.images, args.anns_per_image, bbox_areas=kind == "bbox_areas")
        shape["generate_seconds"] = round(time.perf_counter() - t, 1)
    results: dict[str, dict] = {}
    for _ in range(args.repeat):  # tools take turns, so that load on a shared machine hits each alike
        for name in tools:
            figures = measure(name, path)
            if name not in results or figures["cpu_seconds"] < results[name]["cpu_seconds"]:
                results[name] = figures
    for key in ("images", "annotations"):  # a reused file
        shape.setdefault(key, results["pycocotools"][key])
    base = results["pycocotools"]
    ratios = {name: {"cpu": r["cpu_seconds"] / base["cpu_seconds"], "rss": r["peak_rss_mb"] / base["peak_rss_mb"]}
              for name, r in results.items()}
    targets = [{"tool": tool, "measure": what, "at_most": limit, "ratio": round(ratios[tool][what], 3),
                "met": ratios[tool][what] <= limit} for tool, what, limit in TARGETS[kind] if tool in ratios]
    return {"file": shape, "results": results, "ratios_vs_pycocotools": ratios, "targets": targets}


def print_file(kind: str, out: dict) -> None:
    shape, results, ratios = out["file"], out["results"], out["ratios_vs_pycocotools"]
    print(f"\n{kind} file: {shape.get('images', '?')} images, {shape.get('annotations', '?')} annotations, "
          f"{shape['bytes'] / 1e6:.0f} MB")
    print(f"{'':26}{'CPU s':>8}{'wall s':>8}{'peak RSS MB':>13}{'CPU x':>8}{'RSS x':>8}")
    for name, r in results.items():
        print(f"{TOOLS[name]:26}{r['cpu_seconds']:>8.2f}{r['wall_seconds']:>8.2f}{r['peak_rss_mb']:>13.0f}"
              f"{ratios[name]['cpu']:>8.2f}{ratios[name]['rss']:>8.2f}")
    v = results.get("validate")
    if v:
        print(f"validation findings: {v['errors']} errors, {v['warnings']} warnings {v['codes']}")
    for t in out["targets"]:
        print(f"target {t['tool']} {t['measure']} <= {t['at_most']}x pycocotools: {t['ratio']:.2f}x "
              f"{'met' if t['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=118_287, help="number of images (default: train2017's)")
    parser.add_argument("--anns-per-image", type=float, default=6.8, help="mean annotations per image")
    parser.add_argument("--files", default="consistent,bbox_areas",
                        help="which files: consistent (geometry agrees), bbox_areas (every polygon annotation's "
                             "area is its bbox's w*h, so each draws a warning); comma-separated")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per tool; the one with the least CPU time is kept (shared machines)")
    parser.add_argument("--keep", type=Path, help="generate (or reuse) the files in this folder")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--json-out", type=Path, help="also write the figures, machine, versions and command here")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.files.split(",") if k.strip()]
    unknown = set(kinds) - set(TARGETS)
    if unknown:
        parser.error(f"unknown --files {sorted(unknown)}; choose from {sorted(TARGETS)}")

    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="tk-bench-")
        folder = Path(tmp.name)
    else:
        folder = args.keep
        folder.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "validate_scale", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(["python", "bench/validate_scale.py", *(sys.argv[1:] if argv is None else argv)]),
           "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()},
           "versions": _versions(), "images": args.images, "anns_per_image": args.anns_per_image,
           "measure": "CPU seconds (user + system) and peak RSS of a fresh process per tool; the run with the "
                      f"least CPU time of {args.repeat}", "files": {}}
    try:
        for kind in kinds:
            tools = ["pycocotools", "validate", "inspect", "load_coco"] if kind == "consistent" \
                else ["pycocotools", "validate"]
            out["files"][kind] = run_file(kind, folder / f"instances_{kind}_{args.images}.json", args, tools)
    finally:
        if tmp is not None:
            tmp.cleanup()
    out["all_targets_met"] = all(t["met"] for f in out["files"].values() for t in f["targets"])
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2) + "\n")
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    m = out["machine"]
    print(f"{m['platform']}, {m['cpu_count']} CPUs; {out['versions']}")
    for kind, figures in out["files"].items():
        print_file(kind, figures)
    print(f"\nall targets {'met' if out['all_targets_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
