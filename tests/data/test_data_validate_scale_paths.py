"""The fast paths of validation and inspection at scale give what the plain paths give.

* Area findings are confirmed in bulk (a star-shape test and a raster bound) instead of
  rasterising each flagged annotation: the findings must equal a per-annotation reference
  computed here with pycocotools' own masks.
* ``inspect`` reads annotations lazily: its output must equal inspecting a ``load_coco``
  dataset, and it must refuse what ``load_coco`` refuses.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from teacherkit.data import polygon_batch
from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset, load_for_inspection
from teacherkit.data.validate import validate_coco
from teacherkit.errors import DataError
from teacherkit.testing import make_coco_dataset

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WIDTH, HEIGHT = 320, 240


def _star(rng: np.random.Generator, cx: float, cy: float, radius: float, points: int, low: float) -> list[float]:
    angles = np.sort(rng.uniform(0, 2 * math.pi, points))
    radii = radius * rng.uniform(low, 1.0, points)
    coords = np.empty(2 * points)
    coords[0::2] = np.round(cx + radii * np.cos(angles), 2)
    coords[1::2] = np.round(cy + radii * np.sin(angles), 2)
    return coords.tolist()


def _shapes(rng: np.random.Generator) -> list[list[float]]:
    """One annotation's polygons: star-shaped ones of all sizes, self-intersecting ones,
    ones past the image edge, pairs that overlap."""
    kind = int(rng.integers(0, 6))
    radius = float(rng.choice([1.5, 4.0, 12.0, 40.0, 90.0]))
    cx, cy = rng.uniform(radius, WIDTH - radius), rng.uniform(radius, HEIGHT - radius)
    if kind == 0:  # a bowtie with unequal lobes: crosses itself, its shoelace area misleads
        x, y, s = cx - radius / 2, cy - radius / 2, radius
        return [[x, y, x + s, y + s, x + s, y, x, y + s / 2]]
    if kind == 1:  # a pentagram: goes round twice
        return [[v for a in range(5) for v in (cx + radius * math.cos(a * 4 * math.pi / 5),
                                                cy + radius * math.sin(a * 4 * math.pi / 5))]]
    if kind == 2:  # two overlapping polygons
        return [_star(rng, cx, cy, radius, 12, 0.5), _star(rng, cx + radius / 3, cy, radius, 9, 0.5)]
    if kind == 3:  # past the image edge (clipped when rasterised)
        return [_star(rng, WIDTH - 2.0, cy, radius, 14, 0.6)]
    return [_star(rng, cx, cy, radius, int(rng.integers(3, 40)), 0.05 if kind == 4 else 0.6)]


def _raster_area(polygons: list[list[float]]) -> float:
    return float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(polygons, HEIGHT, WIDTH))))


def _shoelace(poly: list[float]) -> float:
    xs, ys = poly[0::2], poly[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def _reference_reports(polygons: list[list[float]], area: float, raster: float) -> bool:
    """Whether validation reports ``area``, computed per annotation: the estimate from the
    polygons that enclose some area flags it (overlap puts the union between the largest
    polygon and the sum) and pycocotools' raster area of all the polygons disagrees."""
    shoelace = [a for a in map(_shoelace, polygons) if a > 1e-6]
    flags = bool(shoelace) and (area < 0.75 * max(shoelace) - 4.0 or area > 1.25 * sum(shoelace) + 4.0)
    return flags and abs(area - raster) > 0.25 * max(area, raster) + 4.0


def _flagged_dataset(tmp_path: Path, count: int, seed: int) -> tuple[Path, set[tuple[str, int]]]:
    """A file of polygon annotations with areas of every kind (bbox w*h, the raster area,
    near the tolerance), and the area findings a per-annotation reference expects."""
    rng = np.random.default_rng(seed)
    annotations, expected = [], set()
    for i in range(count):
        polygons = _shapes(rng)
        xs = [v for p in polygons for v in p[0::2]]
        ys = [v for p in polygons for v in p[1::2]]
        x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
        bbox = [x0, y0, min(max(xs), WIDTH) - x0, min(max(ys), HEIGHT) - y0]
        raster = _raster_area(polygons)
        choice = int(rng.integers(0, 4))
        area = [bbox[2] * bbox[3], raster, 0.75 * raster - 4 + float(rng.uniform(-3, 3)),
                (raster + 4) / 0.75 + float(rng.uniform(-3, 3))][choice]
        area = round(max(area, 0.0), 2)
        annotations.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": bbox, "segmentation": polygons,
                            "area": area, "iscrowd": 0})
        if _reference_reports(polygons, area, raster):
            expected.add((f"$.annotations[{i}].area", i + 1))
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": WIDTH, "height": HEIGHT}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": annotations}
    path = tmp_path / "flagged.json"
    path.write_text(json.dumps(data))
    return path, expected


@pytest.mark.parametrize("batch_numbers", [400, polygon_batch.BATCH_NUMBERS])
def test_area_findings_equal_a_per_annotation_raster_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                batch_numbers: int) -> None:
    monkeypatch.setattr(polygon_batch, "BATCH_NUMBERS", batch_numbers)  # many batches, or one
    path, expected = _flagged_dataset(tmp_path, 1500, seed=3)
    report = validate_coco(path, check_images=False)
    found = {(f.location.json_path, f.location.annotation_id) for f in report.findings
             if f.code == "area.inconsistent"}
    assert found == expected
    assert len(expected) > 300  # the file exercises the path it tests
    for f in report.findings:
        if f.code == "area.inconsistent":
            assert re.fullmatch(r"area [0-9.e+]+ but the polygons cover about \d+ px", f.message), f.message
            assert f.location.image_id == 1 and f.severity == "warning" and f.fixable


def test_every_bbox_area_annotation_of_a_scale_shaped_file_is_reported(tmp_path: Path) -> None:
    """The benchmark's every-annotation-flagged file: each polygon annotation reported
    once, as rasterising each would."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("validate_scale", Path(__file__).parents[2] / "bench" /
                                                  "validate_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "bbox_areas.json"
    bench.generate(path, 60, 6.8, bbox_areas=True)
    data = json.loads(path.read_text())
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    expected = set()
    for i, ann in enumerate(data["annotations"]):
        if isinstance(ann["segmentation"], list):
            h, w = sizes[ann["image_id"]]
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            if _reference_reports(ann["segmentation"], ann["area"], float(mask_utils.area(rle))):
                expected.add((f"$.annotations[{i}].area", ann["id"]))
    found = {(f.location.json_path, f.location.annotation_id)
             for f in validate_coco(path, check_images=False).findings if f.code == "area.inconsistent"}
    assert found == expected and len(found) > 0.9 * len(data["annotations"])


def test_raster_slack_bounds_pycocotools_for_star_shaped_polygons() -> None:
    rng = np.random.default_rng(7)
    polygons = []
    for _ in range(3000):
        radius = float(rng.choice([0.7, 2.0, 6.0, 25.0, 100.0]))
        polygons.append(_star(rng, rng.uniform(radius + 1, WIDTH - radius - 2),
                              rng.uniform(radius + 1, HEIGHT - radius - 2), radius, int(rng.integers(3, 30)),
                              float(rng.choice([0.05, 0.5, 0.95]))))
    for _ in range(1000):  # small rectangles: the most pixels cut per unit of area
        x, y = rng.uniform(1, WIDTH - 40), rng.uniform(1, HEIGHT - 40)
        w, h = rng.uniform(0.3, 30, 2)
        polygons.append([x, y, x + w, y, x + w, y + h, x, y + h])
    lens = np.array([len(p) // 2 for p in polygons])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    flat = np.concatenate(polygons)
    xs, ys = flat[0::2], flat[1::2]
    nxt = np.arange(1, len(xs) + 1)
    nxt[starts + lens - 1] = starts
    star = polygon_batch.star_shaped(xs, ys, starts, nxt)
    slack = polygon_batch.raster_slack(xs, ys, starts, nxt)
    assert star.mean() > 0.8
    for poly, is_star, bound in zip(polygons, star, slack, strict=True):
        if is_star:
            assert abs(_raster_area([poly]) - _shoelace(poly)) <= bound


@pytest.mark.parametrize("poly", [
    [0, 0, 10, 10, 10, 0, 0, 10],  # bowtie
    [v for a in range(5) for v in (50 + 40 * math.cos(a * 4 * math.pi / 5), 50 + 40 * math.sin(a * 4 * math.pi / 5))],
    [0, 0, 10, 0, 10, 10, 0, 10, 0, 0, 10, 0, 10, 10, 0, 10],  # a square traced twice
    [0, 0, 10, 0, 10, 10],  # a triangle: simple
])
def test_star_test_refuses_polygons_that_cross_themselves(poly: list[float]) -> None:
    xs, ys = np.asarray(poly[0::2], dtype=float), np.asarray(poly[1::2], dtype=float)
    nxt = np.r_[np.arange(1, len(xs)), 0]
    simple = len(poly) == 6
    assert bool(polygon_batch.star_shaped(xs, ys, np.array([0]), nxt)[0]) is simple


# -- inspect ---------------------------------------------------------------------------------

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(params=["shapes", "domain", "mixed_keypoints", "bad_boxes"])
def coco_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if request.param == "shapes":
        return EXAMPLES / "shapes" / "train" / "annotations.json"
    if request.param == "domain":
        return EXAMPLES / "domain_a" / "train.json"
    path = Path(make_coco_dataset(tmp_path, num_images=5, mask_format="mixed", keypoints=True, seed=5))
    if request.param == "bad_boxes":  # load_coco's leniencies: a short bbox, a dangling image, no segmentation
        data = json.loads(path.read_text())
        data["annotations"][0]["bbox"] = [1.0, 2.0]
        data["annotations"][1]["image_id"] = 999
        del data["annotations"][2]["segmentation"]
        path.write_text(json.dumps(data))
    return path


def test_inspect_output_equals_inspecting_the_loaded_dataset(coco_file: Path) -> None:
    lazy = inspect_dataset(coco_file).to_dict()
    loaded = inspect_dataset(load_coco(coco_file)).to_dict()
    assert lazy == loaded


def test_lazy_annotations_decode_to_what_load_coco_holds(coco_file: Path) -> None:
    lazy, loaded = load_for_inspection(coco_file), load_coco(coco_file)
    assert len(lazy.annotations) == len(loaded.annotations)
    for a, b in zip(lazy.annotations, loaded.annotations, strict=True):
        assert (a.id, a.image_id, a.category_id, a.bbox, a.area, a.iscrowd, a.num_keypoints) == \
            (b.id, b.image_id, b.category_id, b.bbox, b.area, b.iscrowd, b.num_keypoints)
        assert a.segmentation == b.segmentation and a.keypoints == b.keypoints


@pytest.mark.parametrize("key, value, where", [
    ("segmentation", "not a mask", "$.annotations[1].segmentation"),
    ("segmentation", [[1.0, "x", 3.0]], "$.annotations[1].segmentation[0][1]"),
    ("keypoints", [1.0, 2.0, "v"], "$.annotations[1].keypoints[2]"),
    ("bbox", "wide", "$.annotations[1].bbox"),
])
def test_inspect_refuses_what_load_coco_refuses(tmp_path: Path, key: str, value: Any, where: str) -> None:
    path = Path(make_coco_dataset(tmp_path, num_images=3, seed=2))
    data = json.loads(path.read_text())
    data["annotations"][1][key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(DataError):
        load_coco(path)
    with pytest.raises(DataError) as caught:
        inspect_dataset(path)
    assert str(caught.value).startswith(f"{path}: {where}: Expected")
