"""``load_coco`` keeps each segmentation as its JSON bytes and decodes it when asked.

What must not change: every value a reader sees (``ann.segmentation``, ``to_dict()``), every
file written from a loaded dataset, the errors for segmentations of the wrong type, and the
masks samples carry. The fixture holds every form: integer and float polygons, compressed
RLE, uncompressed RLE (a crowd), and missing, ``null`` and empty segmentations.

``RECORDED`` holds the SHA-256 of each output as the eager loader (segmentations decoded
into Python values at load) wrote it on this fixture; :func:`_outputs` recomputes them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest

from teacherkit.data.coco import CocoCategory, CocoDataset, load_coco
from teacherkit.data.info import DatasetInfo
from teacherkit.data.masks import mask_to_rle
from teacherkit.data.samples import SampleDataset
from teacherkit.errors import DataError

SIZES = {1: (48, 64), 2: (40, 50), 7: (32, 32)}  # image id -> (height, width)


def _uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    flat = mask.flatten(order="F")
    runs, value, run = [], 0, 0
    for pixel in flat.tolist():
        if pixel == value:
            run += 1
        else:
            runs.append(run)
            value, run = pixel, 1
    runs.append(run)
    return {"size": list(mask.shape), "counts": runs}


def coco_dict() -> dict[str, Any]:
    """Every segmentation form, and the fields around them, in one small dataset."""
    rle_mask = np.zeros(SIZES[2], np.uint8)
    rle_mask[5:20, 10:30] = 1
    crowd = np.zeros(SIZES[7], np.uint8)
    crowd[0:8, 0:16] = 1
    images = [{"id": i, "file_name": f"img_{i}.png", "width": w, "height": h} for i, (h, w) in SIZES.items()]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0,
         "segmentation": [[10, 10, 40, 10, 40, 40, 10, 40]]},
        {"id": 11, "image_id": 1, "category_id": 5, "bbox": [1.5, 2.25, 38.8, 43.35], "area": 150.5,
         "segmentation": [[1.5, 2.25, 21.625, 2.25, 21.625, 12.75], [30.1, 30.2, 40.3, 30.4, 35.5, 45.6]],
         "attributes": {"occluded": True}},
        {"id": 12, "image_id": 2, "category_id": 3, "bbox": [10, 5, 20, 15], "area": 300,
         "segmentation": mask_to_rle(rle_mask)},
        {"id": 13, "image_id": 7, "category_id": 5, "bbox": [0, 0, 16, 8], "area": 128, "iscrowd": 1,
         "segmentation": _uncompressed_rle(crowd)},
        {"id": 14, "image_id": 7, "category_id": 3, "bbox": [2, 2, 5, 5], "area": 25},
        {"id": 15, "image_id": 2, "category_id": 5, "bbox": [1, 1, 4, 4], "area": 16, "segmentation": None},
        {"id": 16, "image_id": 2, "category_id": 3, "bbox": [30, 20, 6, 6], "area": 36, "segmentation": []},
        {"id": 17, "image_id": 1, "category_id": 5, "area": 200,
         "segmentation": [[44, 20, 60, 20, 60, 40, 44, 40]]},
        {"id": 18, "image_id": 1, "category_id": 3, "bbox": [5, 30, 10, 10], "area": 100,
         "keypoints": [8, 33, 2, 0, 0, 0], "num_keypoints": 1, "score": 0.75},
    ]
    categories = [{"id": 3, "name": "cat", "supercategory": "animal"}, {"id": 5, "name": "dög"}]
    return {"info": {"description": "lazy segmentations"}, "licenses": [{"id": 1, "name": "CC"}],
            "images": images, "annotations": annotations, "categories": categories}


def write_fixture(folder: Path) -> Path:
    """The dataset as an indented UTF-8 file (whitespace inside segmentations, as many
    tools write them) next to its images."""
    from PIL import Image

    for image_id, (h, w) in SIZES.items():
        Image.fromarray(np.full((h, w, 3), 40 * image_id % 255, np.uint8)).save(folder / f"img_{image_id}.png")
    path = folder / "data.json"
    path.write_text(json.dumps(coco_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _info(coco: Any) -> DatasetInfo:
    categories = sorted(coco.categories, key=lambda c: c.id)
    return DatasetInfo(categories=[{"id": c.id, "name": c.name} for c in categories],
                       class_names=[c.name for c in categories],
                       class_mapping={c.id: i for i, c in enumerate(categories)})


def _sample_bytes(coco: Any, folder: Path, learns_from: str, with_masks: bool) -> bytes:
    dataset = SampleDataset(coco, folder, _info(coco), None, learns_from=learns_from, train=False,
                            with_masks=with_masks)
    out = b""
    for index in range(len(dataset)):
        sample = dataset.raw_sample(index)
        for key in ("boxes", "labels", "annotation_ids", "iscrowd", "masks", "keypoints"):
            value = sample[key]
            out += key.encode() + (b"-" if value is None else np.ascontiguousarray(value).tobytes())
    return out


def _loaded_outputs(path: Path, folder: Path) -> dict[str, bytes]:
    """What reads or rewrites a loaded dataset: to_dict, the replay and evaluation category
    remaps, a pickled copy, validation of the loaded dataset, samples."""
    from teacherkit.data.validate import validate_coco
    from teacherkit.evaluation.run import remap_categories
    from teacherkit.training.dataset import remap_replay

    coco = load_coco(path)
    replay = remap_replay(load_coco(path), path, [CocoCategory(id=30, name="Cat"), CocoCategory(id=50, name="DÖG")],
                          path)
    experiment = SimpleNamespace(categories=[{"id": 1, "name": "cat"}, {"id": 2, "name": "dög"}])
    report = validate_coco(coco, check_images=False)
    return {
        "to_dict": _json(coco.to_dict()),
        "from_dict": _json(CocoDataset.from_dict(json.loads(path.read_text(encoding="utf-8"))).to_dict()),
        "replay": _json(replay.to_dict()),
        "evaluate_remap": _json(remap_categories(coco, {3: 1, 5: 2}, experiment).to_dict()),
        "pickled": _json(pickle.loads(pickle.dumps(coco)).to_dict()),
        "validate": _json([[f.code, str(f.location), f.message] for f in report.findings]),
        "samples_masks": _sample_bytes(coco, folder, "masks", True),
        "samples_boxes": _sample_bytes(coco, folder, "boxes", False),
        "samples_boxes_masks": _sample_bytes(coco, folder, "boxes", True),
    }


def _bad_outputs(folder: Path) -> dict[str, bytes]:
    """Messages naming annotations whose segmentation is wrong for its image: validation of
    the loaded dataset, and the error a sample raises."""
    from teacherkit.data.validate import validate_coco

    data = coco_dict()
    data["annotations"] += [
        {"id": 19, "image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4,
         "segmentation": {"size": [50, 40], "counts": [2000]}},
        {"id": 20, "image_id": 7, "category_id": 5, "bbox": [0, 0, 2, 2], "area": 4, "segmentation": [[1, 1, 2, 2]]},
    ]
    path = folder / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    coco = load_coco(path)
    report = validate_coco(coco, check_images=False)
    with pytest.raises(DataError) as caught:
        _sample_bytes(coco, folder, "masks", True)
    return {"validate_bad": _json([[f.code, str(f.location), f.message] for f in report.findings]),
            "sample_error": str(caught.value).replace(str(folder), "<folder>").encode()}


def _file_outputs(path: Path, folder: Path) -> dict[str, bytes]:
    """What the commands that write COCO (and student) files produce: fix, split, YOLO
    conversion, label."""
    from teacherkit.data.fix import fix_coco, read_python
    from teacherkit.data.split import split_coco
    from teacherkit.inference.label_coco import write_coco
    from teacherkit.inference.student_formats import write_yolo_dataset

    fixed, repairs = fix_coco(path)
    splits = split_coco(read_python(path, []), {"a": 0.5, "b": 0.5}, seed=3)
    yolo = folder / "yolo"
    boxed = json.loads(path.read_text(encoding="utf-8"))  # conversion wants every bbox
    boxed["annotations"] = [a for a in boxed["annotations"] if "bbox" in a]
    write_yolo_dataset(boxed, folder, yolo, segments=True, link_images="copy", drop_boxes_without_mask=True)
    labels = b"".join(p.name.encode() + p.read_bytes() for p in sorted((yolo / "labels").rglob("*.txt")))
    rle = mask_to_rle(np.pad(np.ones((10, 12), np.uint8), ((3, 35), (4, 48))))
    records = {"img_1.png": {"file_name": "img_1.png", "width": 64, "height": 48, "detections": [
        {"bbox": [4, 3, 12, 10], "category_id": 3, "score": 0.9, "segmentation": rle, "mask_score": 0.8},
        {"bbox": [50, 30, 30, 30], "category_id": 5, "score": 0.5}]}}
    labelled = folder / "labels.json"
    write_coco(labelled, ["img_1.png", "img_2.png"], records.get, [{"id": 3, "name": "cat"}, {"id": 5, "name": "dög"}],
               {"source": "test"})
    return {
        "fix": _json(fixed) + _json([r.to_dict() for r in repairs]),
        "split": b"".join(msgspec.json.encode(part) for part in splits.values()),
        "yolo_seg": labels,
        "label": labelled.read_bytes(),
    }


def _outputs(folder: Path) -> dict[str, str]:
    path = write_fixture(folder)
    return {name: _digest(data) for name, data in {**_loaded_outputs(path, folder), **_bad_outputs(folder),
                                                    **_file_outputs(path, folder)}.items()}


RECORDED: dict[str, str] = {
    "to_dict": "11f996c9d425f7b2",
    "from_dict": "11f996c9d425f7b2",
    "replay": "8b1f28dfe8008d5a",
    "evaluate_remap": "f0f6370ba9e929a0",
    "pickled": "11f996c9d425f7b2",
    "validate": "e3b3a0ce7c66360b",
    "samples_masks": "cee9acaece3db90e",
    "samples_boxes": "deaf5df76d0a904a",
    "samples_boxes_masks": "ad31acc2d1c5de52",
    "validate_bad": "3a59a17157fbe882",
    "sample_error": "7ad993c499b6bbfb",
    "fix": "22c32ccb49f0bf71",
    "split": "08800bc1df786895",
    "yolo_seg": "6ec3431cab148357",
    "label": "60b596d4759b2d73",
}


def test_outputs_match_the_eager_loader_byte_for_byte(tmp_path: Path) -> None:
    assert _outputs(tmp_path) == RECORDED



# -- the values readers see --------------------------------------------------------------


class _EagerAnnotation(msgspec.Struct, omit_defaults=True):
    """How annotations were decoded before: every segmentation as Python values at load."""

    id: int
    image_id: int
    category_id: int
    bbox: list[float] | None = None
    segmentation: list[list[float]] | dict[str, Any] | None = None
    area: float | None = None
    iscrowd: int = 0
    keypoints: list[float] | None = None
    num_keypoints: int | None = None
    score: float | None = None


class _EagerFile(msgspec.Struct):
    annotations: list[_EagerAnnotation]


def _eager(path: Path) -> list[_EagerAnnotation]:
    return msgspec.json.decode(path.read_bytes(), type=_EagerFile, strict=False).annotations


def test_segmentations_stay_json_bytes_and_decode_on_every_read(tmp_path: Path) -> None:
    import gc

    path = write_fixture(tmp_path)
    coco = load_coco(path)
    for ann, eager in zip(coco.annotations, _eager(path), strict=True):
        assert not gc.is_tracked(ann)
        if eager.segmentation is None:
            assert ann.segmentation is None
            continue
        assert type(ann.segmentation_json) is msgspec.Raw
        first, second = ann.segmentation, ann.segmentation
        assert first == second == eager.segmentation
        assert first is not second  # decoded anew: nothing decoded is kept on the shared annotation
        assert type(ann.segmentation_json) is msgspec.Raw
    assert coco.annotations[0].segmentation == [[10.0, 10.0, 40.0, 10.0, 40.0, 40.0, 10.0, 40.0]]


@pytest.mark.parametrize("mask_format", ["polygon", "rle", "uncompressed_rle", "mixed"])
def test_to_dict_is_what_the_eager_decode_gives(tmp_path: Path, mask_format: str) -> None:
    from teacherkit.testing import make_coco_dataset

    path = make_coco_dataset(tmp_path, num_images=6, mask_format=mask_format, seed=7, max_objects=4)
    expected = msgspec.to_builtins(_eager(path))
    assert _json(load_coco(path).to_dict()["annotations"]) == _json(expected)
    assert _json(pickle.loads(pickle.dumps(load_coco(path))).to_dict()["annotations"]) == _json(expected)


def test_segmentation_can_be_replaced(tmp_path: Path) -> None:
    coco = load_coco(write_fixture(tmp_path))
    ann = coco.annotations[0]
    ann.segmentation = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    assert ann.segmentation == [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    ann.segmentation = None
    assert ann.segmentation is None and "segmentation" not in coco.to_dict()["annotations"][0]


@pytest.mark.parametrize(("segmentation", "message"), [
    ("abc", r"\$\.annotations\[1\]\.segmentation: Expected `object \| array \| null`, got `str`"),
    ([[1, "a", 3]], r"\$\.annotations\[1\]\.segmentation\[0\]\[1\]: Expected `float`, got `str`"),
    ([1, 2, 3], r"\$\.annotations\[1\]\.segmentation\[0\]: Expected `array`, got `int`"),
    ("[[1e400]]", r"\$\.annotations\[1\]\.segmentation\[0\]\[0\]: Number out of range"),
])
def test_a_malformed_segmentation_is_refused_at_load_as_before(tmp_path: Path, segmentation: Any,
                                                               message: str) -> None:
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1},
                            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": "SEGMENTATION"}]}
    raw = segmentation if isinstance(segmentation, str) and segmentation.startswith("[") else json.dumps(segmentation)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data).replace('"SEGMENTATION"', raw), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: " + message):
        load_coco(path)


def test_loaded_polygons_take_a_fraction_of_the_eager_memory(tmp_path: Path) -> None:
    import tracemalloc

    rng = np.random.default_rng(0)
    polygons = np.round(rng.uniform(0, 500, (3000, 60)), 2).tolist()
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 640, "height": 480}],
            "categories": [{"id": 1, "name": "x"}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "segmentation": [p]}
                            for i, p in enumerate(polygons)]}
    path = tmp_path / "polygons.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    def held(load: Any) -> int:
        tracemalloc.start()
        try:
            kept = load(path)
            size = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del kept
        return size

    assert held(load_coco) < 0.5 * held(_eager)


# -- masks for a box teacher ------------------------------------------------------------------


class _Augmentation:
    """Records the masks each sample brings; ``uses_masks`` as given (absent when ``None``)."""

    def __init__(self, uses_masks: bool | None) -> None:
        if uses_masks is not None:
            self.uses_masks = uses_masks
        self.masks: list[Any] = []

    def __call__(self, sample: Any, seed: int) -> Any:
        self.masks.append(sample["masks"])
        return sample


def _training_set(path: Path, learns_from: str, augment: Any) -> SampleDataset:
    coco = load_coco(path)
    return SampleDataset(coco, path.parent, _info(coco), lambda sample, train: sample, learns_from=learns_from,
                         train=True, augment=augment, with_masks=True)


def _with_unreadable_mask(folder: Path) -> Path:
    """The fixture plus a boxed annotation whose RLE does not fit its image: decoding its
    mask raises, so a sample that reads it shows that its masks were decoded."""
    path = write_fixture(folder)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["annotations"].append({"id": 19, "image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2], "area": 4,
                                "segmentation": {"size": [50, 40], "counts": [2000]}})
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_box_teacher_skips_masks_an_augmentation_does_not_use(tmp_path: Path) -> None:
    augment = _Augmentation(uses_masks=False)
    dataset = _training_set(_with_unreadable_mask(tmp_path), "boxes", augment)
    samples = [dataset[i] for i in range(len(dataset))]
    assert augment.masks == [None, None, None]
    first = samples[0]  # image 1: annotation 17 has no bbox, so its mask still gives the box
    assert first["annotation_ids"].tolist() == [10, 11, 17, 18]
    assert first["boxes"][2].tolist() == [44.0, 20.0, 16.0, 20.0]


@pytest.mark.parametrize("uses_masks", [True, None])
def test_a_box_teacher_decodes_masks_for_an_augmentation_that_uses_them(tmp_path: Path,
                                                                          uses_masks: bool | None) -> None:
    augment = _Augmentation(uses_masks)
    dataset = _training_set(write_fixture(tmp_path), "boxes", augment)
    first = dataset[0]
    assert augment.masks[0].shape == (4, 48, 64) and augment.masks[0][0].any()
    assert first["annotation_ids"].tolist() == [10, 11, 17, 18]
    with pytest.raises(DataError, match="annotation 19: RLE size"):
        _training_set(_with_unreadable_mask(tmp_path), "boxes", _Augmentation(uses_masks))[1]


def test_a_mask_teacher_decodes_masks_whatever_the_augmentation_says(tmp_path: Path) -> None:
    augment = _Augmentation(uses_masks=False)
    _training_set(write_fixture(tmp_path), "masks", augment)[0]
    assert augment.masks[0].shape == (3, 48, 64)

if __name__ == "__main__":  # prints the digests to record (run with the eager loader)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(_outputs(Path(tmp)), indent=1))
