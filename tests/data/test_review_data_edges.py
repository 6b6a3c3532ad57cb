"""Edge inputs found in review of the fast validation and lazy-segmentation paths.

* The chunk path must flush its polygon batch where checking one annotation at a time
  does: the batches decide the order of the findings, so which of them ``--examples``
  and the CLI table show first.
* JSON integers beyond float range (``math.isfinite`` raises on them) are findings, not a
  traceback, on both paths.
* ``load_coco`` names the first malformed field in file order, segmentations included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teacherkit.data import polygon_batch, validate
from teacherkit.data.coco import load_coco
from teacherkit.data.findings import Report
from teacherkit.data.fix import fix_coco
from teacherkit.data.validate import validate_coco
from teacherkit.errors import DataError
from tests.data.test_validate_fast_paths import _key, _one_at_a_time

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

IMAGES = [{"id": 1, "file_name": "1.jpg", "width": 320, "height": 240}]
CATEGORIES = [{"id": 1, "name": "a"}]
HUGE = 10 ** 400  # a JSON integer no float holds: msgspec and json.loads give a Python int


def _annotation(aid: int, **fields: Any) -> dict[str, Any]:
    ann = {"id": aid, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
           "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]], "area": 400}
    return {**ann, **fields}


def _write(tmp_path: Path, annotations: list[Any], images: list[Any] = IMAGES) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"images": images, "categories": CATEGORIES, "annotations": annotations}))
    return path


def _mixed(tmp_path: Path, seed: int, n: int) -> Path:
    """Polygon annotations, some with areas the polygon batch reports, between boxes
    without mask and RLEs whose areas are reported at once."""
    rng = np.random.default_rng(seed)
    annotations = []
    for i in range(n):
        x, y, size = (float(v) for v in np.round(rng.uniform([0, 0, 4], [200, 150, 60]), 2))
        area = round(size * size * float(rng.choice([1.0, 1.0, 3.0])), 2)
        ann = _annotation(i + 1, bbox=[x, y, size, size], area=area,
                          segmentation=[[x, y, x + size, y, x + size, y + size, x, y + size]])
        kind = rng.random()
        if kind < 0.1:
            ann["segmentation"] = None
        elif kind < 0.15:
            ann["segmentation"] = {"size": [240, 320], "counts": [0, 320 * 240]}
        annotations.append(ann)
    return _write(tmp_path, annotations)


def _both_paths(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Report, Report]:
    """The report of the chunk path, and of checking one annotation at a time."""
    fast = validate_coco(path, check_images=False)
    with monkeypatch.context() as patch:
        patch.setattr(validate, "check_chunk", _one_at_a_time)
        plain = validate_coco(path, check_images=False)
    return fast, plain


def _circle(aid: int, points: int = 1000) -> dict[str, Any]:
    angles = [2 * math.pi * k / points for k in range(points)]
    polygon = [round(v, 3) for a in angles for v in (100 + 50 * math.cos(a), 100 + 50 * math.sin(a))]
    return _annotation(aid, bbox=[50, 50, 100, 100 + aid * 1e-3], segmentation=[polygon], area=7850)


def test_findings_keep_the_order_of_one_annotation_at_a_time(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """At the default batch size: annotation 270's area is reported from a polygon batch,
    annotation 299's (a box without mask) at once. One at a time, 270's batch is still
    open when 299 is checked, so 299 comes first; the chunk path must not flush earlier."""
    annotations = [_circle(i + 1) for i in range(300)]
    annotations[270]["area"] = 20000
    annotations[299] = _annotation(300, bbox=[5, 5, 10, 10], area=900, segmentation=None)
    fast, plain = _both_paths(_write(tmp_path, annotations), monkeypatch)
    assert list(map(_key, fast.findings)) == list(map(_key, plain.findings))
    first = fast.to_dict(examples=1)["checks"][0]
    assert first["code"] == "area.inconsistent" and first["count"] == 2
    assert first["findings"][0]["location"]["json_path"] == "$.annotations[299].area"


@pytest.mark.parametrize(("seed", "chunk", "batch_numbers"), [(1, 7, 300), (2, 2048, 500), (3, 3, 60), (4, 100, 7)])
def test_mixed_files_give_the_same_findings_in_the_same_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              seed: int, chunk: int, batch_numbers: int) -> None:
    monkeypatch.setattr(polygon_batch, "BATCH_NUMBERS", batch_numbers)
    monkeypatch.setattr(validate, "CHUNK", chunk)
    fast, plain = _both_paths(_mixed(tmp_path, seed, 500), monkeypatch)
    assert list(map(_key, fast.findings)) == list(map(_key, plain.findings))


@pytest.mark.parametrize(("fields", "code", "json_path"), [
    ({"area": HUGE}, "area.bad_value", "$.annotations[0].area"),
    ({"area": HUGE, "segmentation": None}, "area.bad_value", "$.annotations[0].area"),
    ({"bbox": [10, 10, HUGE, 20]}, "bbox.non_finite", "$.annotations[0].bbox"),
    ({"bbox": [-HUGE, 10, 20, 20]}, "bbox.non_finite", "$.annotations[0].bbox"),
    ({"segmentation": [[10, 10, HUGE, 10, 30, 30]]}, "polygon.non_finite", "$.annotations[0].segmentation[0]"),
    ({"keypoints": [HUGE, 1, 2]}, "keypoints.bad_length", "$.annotations[0].keypoints"),
])
def test_integers_beyond_float_range_are_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  fields: dict[str, Any], code: str, json_path: str) -> None:
    path = _write(tmp_path, [_annotation(1, **fields), _annotation(2, bbox=[11, 10, 20, 20])])
    fast, plain = _both_paths(path, monkeypatch)
    assert list(map(_key, fast.findings)) == list(map(_key, plain.findings))
    assert [(f.location.json_path, f.severity) for f in fast.findings if f.code == code] == [(json_path, "error")]
    with pytest.raises(DataError, match="out of range"):
        load_coco(path)  # what validation reports as an error is what loading refuses
    fixed, _repairs = fix_coco(path)  # --fix runs the same checks
    assert validate_coco(fixed, check_images=False).codes()[code] == (1 if code == "keypoints.bad_length" else 0)


def test_an_image_side_beyond_float_range_is_a_bad_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = [{"id": 1, "file_name": "1.jpg", "width": HUGE, "height": 240},
              {"id": 2, "file_name": "2.jpg", "width": 10 ** 300, "height": 240}]
    path = _write(tmp_path, [_annotation(1), _annotation(2, image_id=2)], images)
    fast, plain = _both_paths(path, monkeypatch)
    assert list(map(_key, fast.findings)) == list(map(_key, plain.findings))
    bad = [f for f in fast.findings if f.code == "image.bad_field"]
    assert [f.location.json_path for f in bad] == ["$.images[0].width"]
    assert bad[0].message.endswith("expected an integer > 0 within float range")


def test_load_coco_names_the_first_malformed_field_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, [_annotation(1, segmentation="x"), _annotation(2, bbox="y")])
    with pytest.raises(DataError, match=r"\$\.annotations\[0\]\.segmentation: Expected `object \| array \| null`"):
        load_coco(path)
    path = _write(tmp_path, [_annotation(1, bbox="y"), _annotation(2, segmentation="x")])
    with pytest.raises(DataError, match=r"\$\.annotations\[0\]\.bbox: Expected `array \| null`, got `str`"):
        load_coco(path)


def test_an_annotation_built_in_code_takes_its_segmentation_as_segmentation_json():
    """docs/data.md: code that builds a CocoAnnotation passes segmentation_json= (or assigns
    .segmentation); what it wrote is what the dataset gives back and writes out."""
    from teacherkit.data.coco import CocoAnnotation, CocoCategory, CocoDataset, CocoImage

    polygon = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0]]
    built = CocoAnnotation(id=7, image_id=1, category_id=1, bbox=[1.0, 1.0, 4.0, 3.0], segmentation_json=polygon)
    assigned = CocoAnnotation(id=8, image_id=1, category_id=1, bbox=[1.0, 1.0, 4.0, 3.0])
    assigned.segmentation = {"size": [8, 8], "counts": "0?1"}
    dataset = CocoDataset([CocoImage(id=1, file_name="a.png", width=8, height=8)], [built, assigned],
                          [CocoCategory(id=1, name="thing")])
    written = dataset.to_dict()["annotations"]
    assert [a["segmentation"] for a in written] == [polygon, {"size": [8, 8], "counts": "0?1"}]
    assert CocoDataset.from_dict(dataset.to_dict()).annotations[0].segmentation == polygon
