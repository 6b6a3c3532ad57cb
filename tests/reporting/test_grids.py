"""Prediction grids: the same seeded images, ground truth | predictions per pair, and the
files of one evaluation (last always, best and curves when best)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from teacherkit.data.synthetic import make_coco_dataset
from teacherkit.reporting import grids
from teacherkit.reporting.grids import CAPTION, PALETTE, THUMB, load_samples, pick_indices, prediction_grid
from teacherkit.reporting.paths import ReportPaths
from teacherkit.reporting.pictures import EvaluationPictures


@pytest.fixture
def shapes(tmp_path):
    path = make_coco_dataset(tmp_path / "val", num_images=11, size=(64, 96), seed=5)
    return json.loads(path.read_text()), path.parent


def perfect_boxes(gt, score=0.9):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": score}
            for a in gt["annotations"]]


def test_the_choice_is_seeded_and_stable():
    assert pick_indices(100) == pick_indices(100) == sorted(pick_indices(100))
    assert len(pick_indices(100)) == grids.GRID_IMAGES and len(set(pick_indices(100))) == grids.GRID_IMAGES
    assert pick_indices(100, seed=1) != pick_indices(100)
    assert pick_indices(3) == [0, 1, 2]


def test_grid_has_one_pair_per_chosen_image(shapes):
    gt, folder = shapes
    indices = pick_indices(len(gt["images"]))
    samples = load_samples(gt, folder, indices)
    assert [s.image_id for s in samples] == [gt["images"][i]["id"] for i in indices]
    assert samples[0].pixels.shape == (round(64 * THUMB / 96), THUMB, 3)
    assert samples[0].scale == pytest.approx(THUMB / 96)
    image, layout = prediction_grid(samples, perfect_boxes(gt), categories=gt["categories"], masks=False,
                                    threshold=0.5, title="grounding_dino")
    assert layout["count"] == 8 and layout["rows"] == 4 and layout["pairs_per_row"] == 2
    cell_w, cell_h = layout["panel_size"]
    assert image.size == (2 * 2 * cell_w + 8, CAPTION + 4 * (cell_h + CAPTION))
    per_image = {img["id"]: 0 for img in gt["images"]}
    for a in gt["annotations"]:
        per_image[a["image_id"]] += 1
    assert [e["predictions"] for e in layout["images"]] == [per_image[s.image_id] for s in samples]
    assert [e["ground_truth"] for e in layout["images"]] == [per_image[s.image_id] for s in samples]


def test_threshold_and_cap_decide_which_boxes_are_drawn(shapes):
    gt, folder = shapes
    samples = load_samples(gt, folder, [0])
    many = [{"image_id": samples[0].image_id, "category_id": gt["categories"][0]["id"], "bbox": [1, 1, 5, 5],
             "score": s} for s in np.linspace(0.05, 0.95, 40)]
    _image, layout = prediction_grid(samples, many, categories=gt["categories"], masks=False, threshold=0.5)
    assert layout["images"][0]["predictions"] == grids.MAX_BOXES  # 20 pass the threshold; 15 drawn
    _image, layout = prediction_grid(samples, many, categories=gt["categories"], masks=False, threshold=0.99)
    assert layout["images"][0]["predictions"] == 0


def test_predicted_boxes_are_drawn_in_their_class_colour(shapes):
    gt, folder = shapes
    sample = load_samples(gt, folder, [0])[0]
    ann = next(a for a in gt["annotations"] if a["image_id"] == sample.image_id)
    pred = {"image_id": sample.image_id, "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 0.9}
    order = {c["id"]: i for i, c in enumerate(gt["categories"])}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    plain = np.asarray(grids.draw_panel(sample, [], names=names, order=order, masks=False))
    drawn = np.asarray(grids.draw_panel(sample, [pred], names=names, order=order, masks=False))
    assert np.array_equal(plain, sample.pixels)
    x, y, w, h = (v * sample.scale for v in ann["bbox"])
    # the bottom edge (the label sits on the top one), a few pixels either side of where it falls
    around_edge = drawn[int(y + h) - 2:int(y + h) + 3, int(x + w / 2)]
    assert PALETTE[order[ann["category_id"]]] in [tuple(p) for p in around_edge]


def test_mask_grid_fills_the_prompted_masks(shapes):
    from teacherkit.data.masks import mask_to_rle, segmentation_to_mask

    gt, folder = shapes
    samples = load_samples(gt, folder, [0, 1])
    preds = []
    for a in gt["annotations"]:
        if a["image_id"] in (samples[0].image_id, samples[1].image_id):
            mask = segmentation_to_mask(a["segmentation"], 64, 96)
            preds.append({"image_id": a["image_id"], "annotation_id": a["id"], "category_id": a["category_id"],
                          "segmentation": mask_to_rle(mask), "score": 0.8})
    image, layout = prediction_grid(samples, preds, categories=gt["categories"], masks=True)
    assert layout["count"] == 2 and sum(e["predictions"] for e in layout["images"]) == len(preds)
    pixels = np.asarray(image)
    cell_w = layout["panel_size"][0]
    truth = pixels[2 * CAPTION:, :cell_w]
    predicted = pixels[2 * CAPTION:, cell_w:2 * cell_w]
    assert np.abs(truth.astype(int) - predicted.astype(int)).mean() < 8  # perfect masks: the panels agree


def test_evaluation_pictures_keep_last_and_best(shapes, tmp_path):
    gt, folder = shapes
    paths = ReportPaths(tmp_path / "teachers" / "grounding_dino")
    pictures = EvaluationPictures(paths, gt, folder, "bbox", "grounding_dino")
    grid = pictures.write(perfect_boxes(gt, 0.7), tag="last", best=True, epoch=1)
    assert grid is not None and grid.ndim == 3 and grid.shape[2] == 3
    assert paths.grid("last").is_file() and paths.grid("best").is_file() and paths.curves_json.is_file()
    assert json.loads(paths.curves_json.read_text())["best_f1"] == pytest.approx(1.0)
    pictures.write([], tag="last", best=False, epoch=2)  # a worse epoch: only last changes
    last, best = (json.loads(paths.grid_info(t).read_text()) for t in ("last", "best"))
    assert (last["epoch"], best["epoch"]) == (2, 1)
    assert last["count"] == best["count"] == 8
    assert [e["image_id"] for e in last["images"]] == [e["image_id"] for e in best["images"]]  # the same images
    assert sum(e["predictions"] for e in best["images"]) > 0 == sum(e["predictions"] for e in last["images"])
    assert json.loads(paths.curves_json.read_text())["epoch"] == 1  # the curves are the best epoch's
    with Image.open(paths.grid("last")) as img:
        assert img.size == (grid.shape[1], grid.shape[0])
    assert not list(paths.pictures.glob("*.tmp"))


def test_teachers_without_pictures(shapes, tmp_path):
    gt, folder = shapes
    paths = ReportPaths(tmp_path / "kp")
    assert EvaluationPictures(paths, gt, folder, "none", "kp").write([], best=True) is None
    assert not paths.pictures.exists()
