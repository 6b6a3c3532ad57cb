"""Validation's chunk-at-a-time path gives exactly what checking one annotation at a time gives.

:func:`teacherkit.data.annotation_columns.check_chunk` accepts runs of usual annotations in
bulk and sends the rest through :meth:`AnnotationChecker.check`. Random files that mix usual
annotations with every kind of unusual one (at random places, so runs start and end
everywhere) must give the same findings, messages included, as the plain per-annotation loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teacherkit.data import annotation_columns, polygon_batch, validate
from teacherkit.data.findings import Finding, Report, finding
from teacherkit.data.validate import validate_coco

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIZES = {1: (320, 240), 2: (200, 300), 3: (64, 48)}


def _polygon(rng: np.random.Generator, width: int, height: int, simple: bool) -> list[float]:
    points = int(rng.integers(3, 14))
    radius = float(rng.uniform(3, min(width, height) / 3))
    cx, cy = float(rng.uniform(radius, width - radius)), float(rng.uniform(radius, height - radius))
    angles = np.sort(rng.uniform(0, 2 * math.pi, points)) if simple else rng.uniform(0, 2 * math.pi, points)
    radii = radius * rng.uniform(0.3, 1.0, points)
    coords = np.empty(2 * points)
    coords[0::2] = np.round(cx + radii * np.cos(angles), 2)
    coords[1::2] = np.round(cy + radii * np.sin(angles), 2)
    return coords.tolist()


def _usual(rng: np.random.Generator, aid: int) -> dict[str, Any]:
    image_id = int(rng.integers(1, 4))
    width, height = SIZES[image_id]
    polygons = [_polygon(rng, width, height, rng.random() < 0.8) for _ in range(int(rng.integers(1, 3)))]
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    bbox = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
    area = [round(bbox[2] * bbox[3] * 0.6, 2), round(bbox[2] * bbox[3], 2), int(bbox[2] * bbox[3] / 2)][
        int(rng.integers(0, 3))]
    ann = {"id": aid, "image_id": image_id, "category_id": int(rng.integers(1, 3)), "bbox": bbox,
           "segmentation": polygons, "area": area}
    if rng.random() < 0.5:
        ann["iscrowd"] = 0
    return ann


def _unusual(rng: np.random.Generator, ann: dict[str, Any], previous: list[dict[str, Any]]) -> dict[str, Any]:
    """``ann`` changed in one of the ways the bulk path must leave to the exact checks."""
    kind = int(rng.integers(0, 24))
    width, height = SIZES[ann["image_id"]]
    earlier = previous[int(rng.integers(0, len(previous)))] if previous else ann
    changes: list[dict[str, Any]] = [
        {"iscrowd": 1, "segmentation": {"size": [height, width], "counts": [5, 10, width * height - 15]}},
        {"iscrowd": True}, {"iscrowd": 1}, {"iscrowd": 0.0},
        {"id": earlier["id"]},  # a repeated id
        {"image_id": earlier["image_id"], "category_id": earlier["category_id"], "bbox": list(earlier["bbox"])},
        {"id": True}, {"image_id": float(ann["image_id"])}, {"image_id": 99}, {"category_id": 77},
        {"bbox": [width + 5, 1, 3, 3]}, {"bbox": [int(v) + 1 for v in ann["bbox"]]},
        {"bbox": [-3, -3, width + 10, 4]}, {"area": -1}, {"area": "12"}, {"area": None},
        {"keypoints": [1, 2, 2]}, {"segmentation": []}, {"segmentation": [1, 2, 3, 4, 5, 6]},
        {"segmentation": [[1, 2, 3, 4]]}, {"segmentation": [[1, 2, 3, 4, 5, 6, 7]]},
        {"bbox": [2 ** 60, 1, 3, 3]}, {"segmentation": [[1, 2, 3, "4", 5, 6]]},
        {"segmentation": [[width + 10, 5, width + 20, 5, width + 15, 9]]},
    ]
    out = {**ann, **changes[kind]}
    if kind == 16 and rng.random() < 0.5:
        out["keypoints"] = None  # null keypoints are usual
    return out


def _dataset(tmp_path: Path, seed: int, n: int) -> Path:
    rng = np.random.default_rng(seed)
    annotations: list[Any] = []
    for i in range(n):
        ann = _usual(rng, i + 1)
        if rng.random() < 0.12:
            ann = _unusual(rng, ann, annotations)
        annotations.append(ann)
    if rng.random() < 0.5:
        annotations.insert(int(rng.integers(0, n)), 42)  # not an object: its chunk goes one by one
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": w, "height": h} for i, (w, h) in SIZES.items()],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": annotations}
    path = tmp_path / f"mixed_{seed}.json"
    path.write_text(json.dumps(data))
    return path


def _one_at_a_time(checker: Any, first: int, chunk: list[Any]) -> None:
    for index, ann in enumerate(chunk, first):
        checker.check(index, ann)


def _key(f: Finding) -> tuple[Any, ...]:
    return (f.code, f.severity, f.location.json_path, f.location.image_id, f.location.annotation_id, f.message,
            f.fixable)


@pytest.mark.parametrize(("seed", "chunk", "batch_numbers"), [(0, 2048, polygon_batch.BATCH_NUMBERS), (1, 7, 300),
                                                              (2, 64, 2000), (3, 1, polygon_batch.BATCH_NUMBERS)])
def test_chunk_path_equals_one_annotation_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
                                                     chunk: int, batch_numbers: int) -> None:
    path = _dataset(tmp_path, seed, 700)
    monkeypatch.setattr(polygon_batch, "BATCH_NUMBERS", batch_numbers)
    monkeypatch.setattr(validate, "CHUNK", chunk)
    fast = validate_coco(path, check_images=False)
    monkeypatch.setattr(validate, "check_chunk", _one_at_a_time)
    plain = validate_coco(path, check_images=False)
    assert sorted(map(_key, fast.findings), key=repr) == sorted(map(_key, plain.findings), key=repr)
    codes = plain.codes()
    # the file exercises both paths: repeats, crowds, flagged areas, bad boxes
    for code in ("annotation.duplicate_id", "annotation.duplicate", "area.inconsistent", "bbox.outside_image",
                 "iscrowd.polygon_crowd", "polygon.too_short"):
        assert codes[code] > 0, code


def test_usual_annotations_are_taken_in_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean file goes through the bulk path (no annotation checked one at a time)."""
    rng = np.random.default_rng(5)
    annotations = [_usual(rng, i + 1) for i in range(300)]
    for ann in annotations:
        ann["area"] = round(ann["bbox"][2] * ann["bbox"][3] * 0.6, 2)
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": w, "height": h} for i, (w, h) in SIZES.items()],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "annotations": annotations}
    path = tmp_path / "clean.json"
    path.write_text(json.dumps(data))
    calls: list[int] = []
    original = validate.AnnotationChecker.check
    monkeypatch.setattr(validate.AnnotationChecker, "check",
                        lambda self, index, ann: (calls.append(index), original(self, index, ann)))
    validate_coco(path, check_images=False)
    # repeated objects (same image, category and box) are the only ones left to the exact path
    assert len(calls) < 5
    assert annotation_columns.CHUNK >= 256


def test_report_summaries_count_every_finding() -> None:
    findings = [finding("area.inconsistent", "x", "$.annotations[0].area"), finding("bbox.missing", "y"),
                finding("json.syntax", "z")]
    report = Report(findings=findings[:1])
    assert report.ok and not report.fatal and report.exit_code == 0
    report = Report(findings=findings[:2])
    assert not report.ok and not report.fatal and report.exit_code == 1
    report = Report(findings=findings)
    assert report.fatal and report.exit_code == 2
    assert report.codes() == {"area.inconsistent": 1, "bbox.missing": 1, "json.syntax": 1}
    checks = {c["code"]: c for c in report.to_dict()["checks"]}
    assert checks["bbox.missing"]["fixable"] == 1 and checks["json.syntax"]["fixable"] == 0
