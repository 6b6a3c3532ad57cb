"""Polygons that reach absurdly far past their image (a vertex at -6.8e16, found by the
property test of validation, which then exhausted the machine's memory): pycocotools walks each
edge pixel by pixel, so they are clipped before rasterising (``masks.rasterisable_polygons``).
Checked against pycocotools' own rasterisation where it can still do the unclipped polygon."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import numpy as np

from teacherkit.data.masks import FAR_SIDES, rasterisable_polygons, segmentation_to_mask
from teacherkit.testing import make_coco_dataset

FAR = -6.84240327769851e16


def test_validation_of_a_vertex_far_away_finishes_in_bounded_memory(tmp_path):
    """Before the clip, validating this file died of a segmentation fault (or the OOM killer)."""
    path = make_coco_dataset(tmp_path, num_images=4, mask_format="mixed", keypoints=True, seed=11)
    data = json.loads(path.read_text())
    polygon_ann = next(a for a in data["annotations"] if isinstance(a["segmentation"], list))
    polygon_ann["segmentation"][0][1] = FAR
    bad = tmp_path / "far.json"
    bad.write_text(json.dumps(data))
    code = ("import json, sys\nfrom teacherkit.data.validate import validate_coco\n"
            "from teacherkit.data.fix import fix_coco\n"
            "data = json.load(open(sys.argv[1]))\n"
            "print(sorted({f.code for f in validate_coco(data, check_images=False).findings}))\n"
            "fixed, _ = fix_coco(data)\n"
            "print(sorted({f.code for f in validate_coco(fixed, check_images=False).findings}))\n")

    def limit() -> None:  # 3 GiB of address space: a runaway rasterisation fails instead of swapping
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    done = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = done.stdout.splitlines()
    assert "polygon.exceeds_image" in before and "polygon.exceeds_image" not in after  # --fix clips it


def test_a_sample_with_such_a_polygon_decodes_to_the_image_size():
    polygon = [10.0, 10.0, 40.0, FAR, 70.0, 50.0, 20.0, 55.0]
    mask = segmentation_to_mask([polygon], 60, 80)
    assert mask.shape == (60, 80) and 0 < mask.sum() < 60 * 80


def test_clipped_polygons_rasterise_as_pycocotools_does_unclipped_within_a_few_edge_pixels():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(1)
    height, width = 60, 80
    clipped = 0
    for _ in range(400):
        k = int(rng.integers(3, 9))
        xs, ys = rng.uniform(-12 * width, 13 * width, k), rng.uniform(-12 * height, 13 * height, k)
        xs[0], ys[0] = rng.uniform(0, width), rng.uniform(0, height)  # one vertex inside the image
        poly = [float(v) for xy in zip(xs, ys, strict=True) for v in xy]
        got = rasterisable_polygons([poly], height, width)
        near = max(abs(xs).max() / width, abs(ys).max() / height) <= FAR_SIDES
        if near:
            assert got == [poly]  # the usual polygon is passed on as it is: the same bits as before
            continue
        clipped += 1
        want = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], height, width)))
        have = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(got, height, width))) if got \
            else np.zeros((height, width), np.uint8)
        assert (want != have).sum() <= 0.01 * height * width  # measured worst: 29 of 4800 px (0.6%)
    assert clipped > 300


def test_unusable_polygons_are_left_out_not_rasterised():
    inside = [1.0, 1.0, 5.0, 1.0, 5.0, 5.0]
    outside = [1e12, 1e12, 2e12, 1e12, 2e12, 2e12]  # all of it past the clip box: nothing left
    nan = [1.0, float("nan"), 5.0, 1.0, 5.0, 5.0, 1e12, 0.0]
    assert rasterisable_polygons([inside, outside, nan], 10, 10) == [inside]
