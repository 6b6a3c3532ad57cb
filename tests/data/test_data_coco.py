"""Typed loading, masks, inspection and the teachers chosen from the data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from teacherkit import hookimpl
from teacherkit.cli import run
from teacherkit.data.coco import CocoDataset, load_coco
from teacherkit.data.inspect import get_required_models, inspect_dataset
from teacherkit.data.masks import decode_rle_string, mask_to_bbox, mask_to_rle, segmentation_to_mask
from teacherkit.errors import DataError
from teacherkit.testing import make_coco_dataset

# pycocotools calls numpy with a keyword numpy 2 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("fmt", ["polygon", "rle", "uncompressed_rle", "mixed"])
def test_load_keeps_pycocotools_meaning(fmt: str, tiny_coco) -> None:
    from pycocotools.coco import COCO

    path = tiny_coco(mask_format=fmt, num_images=3)
    dataset = load_coco(path)
    reference = COCO(str(path))
    assert len(dataset.annotations) == len(reference.anns) > 0
    for ann in dataset.annotations:
        ref = reference.anns[ann.id]
        image = dataset.image_by_id(ann.image_id)
        mask = segmentation_to_mask(ann.segmentation, image.height, image.width)
        assert mask.dtype == np.uint8 and mask.shape == (image.height, image.width)
        assert np.array_equal(mask, reference.annToMask(ref))
        assert ann.bbox == pytest.approx(ref["bbox"]) and ann.iscrowd == ref["iscrowd"]
    assert dataset.annotations_for(1) == [a for a in dataset.annotations if a.image_id == 1]
    assert dataset.annotations_for(12345) == []
    # to_dict gives a plain COCO dict that round-trips
    again = CocoDataset.from_dict(json.loads(json.dumps(dataset.to_dict())))
    assert again.to_dict() == dataset.to_dict()


def test_masks_helpers_match_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    mask = (rng.random((37, 53)) > 0.6).astype(np.uint8)
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [37, 53]
    assert np.array_equal(segmentation_to_mask(rle, 37, 53), mask)
    assert np.array_equal(segmentation_to_mask({**rle, "counts": rle["counts"].encode()}, 37, 53), mask)
    ref = mask_utils.encode(np.asfortranarray(mask))
    runs = decode_rle_string(rle["counts"])
    assert sum(runs) == 37 * 53 and sum(runs[1::2]) == int(mask.sum())
    assert mask_to_bbox(mask) == pytest.approx(list(mask_utils.toBbox(ref)))
    assert mask_to_bbox(np.zeros((4, 4), np.uint8)) == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="invalid character"):
        decode_rle_string("ab!")
    with pytest.raises(ValueError, match="ends inside"):
        decode_rle_string("0o")  # 'o' has the continuation bit set and nothing follows
    with pytest.raises(ValueError, match="differs"):
        segmentation_to_mask(rle, 53, 37)


def test_load_errors_name_file_and_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(DataError, match=r"bad\.json.*byte 24 \(line 2, column 12\)"):
        load_coco(bad)
    bad.write_bytes(b'{"images": [], "categories": [], "annotations": [{"id": 1, "image_id": 1, '
                    b'"category_id": 1, "bbox": "x"}]}')
    with pytest.raises(DataError, match=r"\$\.annotations\[0\]\.bbox"):
        load_coco(bad)
    bad.write_bytes('{"images": [], "categories": [{"id": 1, "name": "caf\xe9"}]}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 .* byte 52"):
        load_coco(bad)
    bad.write_bytes(b'{"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1},'
                    b'{"id": 1, "file_name": "b", "width": 1, "height": 1}], "categories": []}')
    with pytest.raises(DataError, match=r"duplicate image id 1 at \$\.images\[1\]"):
        load_coco(bad)
    with pytest.raises(DataError, match="not found"):
        load_coco(tmp_path / "missing.json")


def test_load_is_lenient_on_content(tmp_path: Path) -> None:
    path = make_coco_dataset(tmp_path, num_images=2)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [1, 2, 3]  # validation reports it; loading drops it
    data["annotations"][1]["bbox"] = [500, 500, 10, 10]  # outside: kept, validation reports it
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())
    dataset = load_coco(path)
    assert dataset.annotations[0].bbox is None
    assert dataset.annotations[1].bbox == [500, 500, 10, 10]


def test_inspect_gapped_ids_and_counts(tmp_path: Path) -> None:
    cats = [{"id": 0, "name": "zero"}, {"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    path = make_coco_dataset(tmp_path, num_images=5, categories=cats, masks=False, empty_images=1)
    info = inspect_dataset(path)
    assert info.annotation_kinds == ["boxes"] and info.has_boxes and not info.has_masks
    assert info.class_mapping == {0: 0, 3: 1, 7: 2}
    assert info.class_names == ["zero", "three", "seven"]
    assert [info.category_id_of(i) for i in range(3)] == [0, 3, 7]
    assert info.num_images == 5 and info.images_without_annotations == 1
    data = json.loads(path.read_text())
    assert sum(info.per_class_counts.values()) == info.num_annotations == len(data["annotations"])
    masks_only = inspect_dataset(make_coco_dataset(tmp_path / "m", boxes=False, num_images=2))
    assert masks_only.annotation_kinds == ["masks"]


class KeypointPlugin:
    @hookimpl
    def teacherkit_detect_annotations(self, dataset):
        return ["test_points"] if any(a.keypoints for a in dataset.annotations) else []

    @hookimpl
    def teacherkit_register_teachers(self):
        from teacherkit.config import TeacherConfig
        from teacherkit.teachers import TeacherSpec

        class PoseConfig(TeacherConfig):
            pass

        return [TeacherSpec(name="pose_teacher", learns_from="test_points", config_model=PoseConfig)]


def test_plugins_add_kinds_and_teachers(tmp_path: Path, plugin_host, register_plugin) -> None:
    path = make_coco_dataset(tmp_path, num_images=2, keypoints=True, masks=False)
    before = inspect_dataset(path, host=plugin_host)
    assert "test_points" not in before.annotation_kinds
    assert "pose_teacher" not in get_required_models(before, host=plugin_host)
    register_plugin(KeypointPlugin())
    info = inspect_dataset(load_coco(path), host=plugin_host)
    assert {"boxes", "test_points"} <= set(info.annotation_kinds)
    chosen = get_required_models(info, host=plugin_host)
    assert "pose_teacher" in chosen
    expected = [s.name for s in plugin_host.teachers().values() if s.learns_from in info.annotation_kinds]
    assert chosen == expected


def test_inspect_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_coco_dataset(tmp_path, num_images=3, categories=[{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}])
    assert run(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["class_mapping"] == {"4": 0, "9": 1} and data["has_masks"] and data["num_images"] == 3
    assert isinstance(data["teachers"], list)
    assert run(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "teachers that would train" in text and "dog" in text
    (tmp_path / "broken.json").write_text("{")
    assert run(["inspect", str(tmp_path / "broken.json")]) == 2
    assert "broken.json" in capsys.readouterr().err


@pytest.mark.slow
def test_data_commands_do_not_import_torch() -> None:
    code = ("import sys; "
            "import teacherkit.data.commands, teacherkit.data.validate, teacherkit.data.inspect; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('torch', 'transformers'))]")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
