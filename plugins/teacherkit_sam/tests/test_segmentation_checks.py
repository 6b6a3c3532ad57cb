"""Masks are checked against their image before pycocotools decodes them (issue 16:
an RLE of size [1000000, 1000000] crashed train and evaluate with a segfault)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from teacherkit.data.masks import SegmentationError, mask_to_rle, rle_to_mask, segmentation_to_mask
from teacherkit.errors import DataError

HUGE = {"size": [1000000, 1000000], "counts": "0"}


def test_huge_rle_is_refused_before_pycocotools_in_a_separate_process():
    # run where a crash cannot take the test session down: the process must exit
    # normally, with the error naming the annotation and both sizes
    code = (
        "from teacherkit.data.masks import segmentation_to_mask\n"
        f"try:\n    segmentation_to_mask({HUGE!r}, 64, 48, where='train.json annotation 5')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SegmentationError train.json annotation 5: RLE size [1000000, 1000000]")
    assert "[64, 48]" in done.stdout


def test_image_too_large_for_a_mask_is_refused_even_when_the_rle_agrees():
    with pytest.raises(DataError, match=r"annotation 5: image size \[1000000, 1000000\]"):
        segmentation_to_mask(HUGE, 1000000, 1000000, where="annotation 5")
    with pytest.raises(DataError, match="image size"):
        segmentation_to_mask([[0, 0, 10, 0, 10, 10]], 1000000, 1000000)


@pytest.mark.parametrize(("segmentation", "message"), [
    ({"size": [4, 4], "counts": [3, 20]}, "cover 23 pixels"),  # runs past the mask: pycocotools writes out of bounds
    ({"size": [4, 4], "counts": [3, -2, 15]}, "non-negative"),
    ({"size": [4, 4], "counts": "0o"}, "ends inside a run"),
    ({"size": [4, 4], "counts": "1"}, "cover 1 pixels"),
    ({"size": [4], "counts": "0"}, "RLE size"),
    ("not a mask", "expected polygons"),
])
def test_bad_rle_is_a_data_error_naming_the_annotation(segmentation, message):
    with pytest.raises(SegmentationError, match=f"annotation 3: .*{message}"):
        segmentation_to_mask(segmentation, 4, 4, where="annotation 3")


def test_good_masks_still_decode_and_rle_round_trips():
    rng = np.random.default_rng(1)
    mask = (rng.random((9, 7)) > 0.5).astype(np.uint8)
    rle = mask_to_rle(mask)
    assert np.array_equal(segmentation_to_mask(rle, 9, 7), mask)
    assert np.array_equal(rle_to_mask(rle), mask)
    # a polygon of fewer than 3 points covers nothing (pycocotools would read 4 numbers as a box)
    assert segmentation_to_mask([[1, 2, 3, 4]], 9, 7).sum() == 0
    assert segmentation_to_mask([[0, 0, 6, 0, 6, 8, 0, 8]], 9, 7).sum() > 30


def _with_bad_rle(json_path):
    """The file with its second annotation's mask replaced by an RLE of the wrong size;
    returns that annotation's id."""
    import json

    data = json.loads(json_path.read_text())
    bad = data["annotations"][1]
    bad["segmentation"] = {"size": [3, 3], "counts": [9]}
    json_path.write_text(json.dumps(data))
    return bad["id"]


def test_bad_rle_in_a_training_or_evaluation_file_names_the_file_and_annotation(tiny_coco):
    # training, evaluation and labelling all read samples through SampleDataset
    from teacherkit.data.coco import load_coco
    from teacherkit.data.inspect import inspect_dataset
    from teacherkit.data.samples import SampleDataset

    path = tiny_coco(num_images=2, size=(32, 48), seed=4)
    ann_id = _with_bad_rle(path)
    coco = load_coco(path)
    image_index = next(i for i, img in enumerate(coco.images)
                       if ann_id in {a.id for a in coco.annotations_for(img.id)})
    dataset = SampleDataset(coco, path.parent, inspect_dataset(coco), None, learns_from="masks", train=False,
                            with_masks=True)
    with pytest.raises(SegmentationError, match=rf"{path} annotation {ann_id}: RLE size \[3, 3\]"):
        dataset.raw_sample(image_index)


def test_bad_rle_in_scoring_names_the_file_and_whether_prediction_or_ground_truth(tiny_coco):
    import json

    from teacherkit.evaluation.mask_metrics import prompted_mask_metrics

    path = tiny_coco(num_images=2, size=(32, 48), seed=4)
    gt = json.loads(path.read_text())
    good = gt["annotations"][0]
    prediction = {"annotation_id": good["id"], "segmentation": {"size": [3, 3], "counts": [9]}}
    with pytest.raises(SegmentationError, match=rf"prediction for val.json annotation {good['id']}: RLE size"):
        prompted_mask_metrics(gt, [prediction], source="val.json")
    ann_id = _with_bad_rle(path)
    with pytest.raises(SegmentationError, match=rf"val.json annotation {ann_id}: RLE size"):
        prompted_mask_metrics(json.loads(path.read_text()), [], source="val.json")
