"""Property tests: random mutations of valid COCO never crash validation or --fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teacherkit.data.findings import CHECKS
from teacherkit.data.fix import fix_coco
from teacherkit.data.validate import validate_coco
from teacherkit.testing import make_coco_dataset

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                                  st.dictionaries(st.text(max_size=6), inner,
                                                                                  max_size=4)),
                           max_leaves=12)

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = make_coco_dataset(tmp_path_factory.mktemp("prop"), num_images=4, mask_format="mixed", keypoints=True,
                             seed=11)
    return json.loads(Path(path).read_text())


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node[:6]):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _mutate(data: dict[str, Any], path: tuple, action: str, value: Any) -> dict[str, Any]:
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if action == "replace":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif action == "append" and isinstance(parent[key], list):
        parent[key].append(value)
    return data


mutation = st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "delete", "duplicate", "append"]), json_values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(mutation, min_size=1, max_size=3))
def test_random_mutations_never_crash(valid: dict[str, Any], mutations: list) -> None:
    data = copy.deepcopy(valid)
    for pick, action, value in mutations:
        paths = _paths(data)
        data = _mutate(data, paths[1:][pick % (len(paths) - 1)], action, value)  # never the root itself
    report = validate_coco(data, check_images=False)
    assert all(f.code in CHECKS and f.severity == CHECKS[f.code].severity for f in report.findings)
    assert all(f.location.json_path.startswith("$") for f in report.findings)
    if True:
        fixed, repairs = fix_coco(data)
        after = validate_coco(fixed, check_images=False)
        assert not [f for f in after.findings if f.fixable], [f.to_dict() for f in after.findings if f.fixable]
        assert all(r.code in CHECKS for r in repairs)


FIELDS = ["id", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd"]
wrong_typed = st.one_of(st.text(min_size=1, max_size=5), st.dictionaries(st.just("k"), st.integers(), min_size=1),
                        st.lists(st.text(max_size=2), min_size=1, max_size=3))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 100), st.sampled_from(FIELDS), wrong_typed)
def test_wrong_typed_annotation_fields_are_found(valid: dict[str, Any], index: int, field: str, value: Any) -> None:
    data = copy.deepcopy(valid)
    i = index % len(data["annotations"])
    data["annotations"][i][field] = value
    report = validate_coco(data, check_images=False)
    assert report.errors
    assert any(f.location.json_path.startswith(f"$.annotations[{i}]") for f in report.errors)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["images", "categories", "annotations"]), st.integers(0, 100),
       st.sampled_from(["id", "file_name", "width", "height", "name"]), wrong_typed)
def test_wrong_typed_entries_are_found(valid: dict[str, Any], key: str, index: int, field: str, value: Any) -> None:
    data = copy.deepcopy(valid)
    entry = data[key][index % len(data[key])]
    if field not in entry:
        return
    if field in ("file_name", "name") and isinstance(value, str):
        value = [value]  # any string is a valid name
    entry[field] = value
    assert validate_coco(data, check_images=False).errors


@pytest.mark.parametrize("compressed", [False, True])
def test_fix_takes_no_area_from_runs_that_do_not_cover_the_image(valid: dict[str, Any], compressed: bool) -> None:
    """Found by the property test above: an RLE with a run deleted (rle.bad_counts, not
    fixable) still rasterises in pycocotools, shifted or inverted; --fix used that area and
    validation then found it inconsistent with the box, again and again. The box's area is
    the estimate when the mask is unusable."""
    from pycocotools import mask as mask_utils

    data = copy.deepcopy(valid)
    crowd = next(a for a in data["annotations"] if isinstance(a["segmentation"], dict)
                 and isinstance(a["segmentation"]["counts"], list))
    counts = crowd["segmentation"]["counts"][1:]  # the first run gone: every later run flips
    if compressed:
        h, w = crowd["segmentation"]["size"]
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        counts = rle["counts"].decode()
    crowd["segmentation"]["counts"] = counts
    crowd["area"] = None
    fixed, _ = fix_coco(data)
    after = validate_coco(fixed, check_images=False)
    assert "rle.bad_counts" in {f.code for f in after.findings}  # still there: not fixable
    assert not [f for f in after.findings if f.fixable], [f.to_dict() for f in after.findings if f.fixable]
    repaired = next(a for a in fixed["annotations"] if a["id"] == crowd["id"])
    assert repaired["area"] == crowd["bbox"][2] * crowd["bbox"][3]
