"""A real (tiny) training run leaves the report's files: results.csv/png per teacher, the
prediction grids of the same validation images, the curves, TensorBoard pictures, and a
page ``teacherkit report`` can build."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teacherkit.cli import run
from teacherkit.reporting.curves import recorded_threshold
from teacherkit.reporting.grids import GRID_IMAGES
from teacherkit.reporting.paths import ReportPaths
from teacherkit.reporting.report import build_report
from teacherkit.reporting.results import read_results_csv

EPOCHS = 2
FAST = ["--preset", "tiny", "--epochs", str(EPOCHS), "--batch-size", "3", "--num-workers", "0", "--quiet",
        "--set", "teachers.grounding_dino.shortest_edge=64", "--set", "teachers.grounding_dino.longest_edge=64",
        "--set", "teachers.sam.image_size=64"]


def _epochs_logged(rows):
    epochs = [r["epoch"] for r in rows]
    # epoch 0: the base, scored before training (results.csv rows = epochs + 1)
    assert epochs == list(range(0, EPOCHS + 1)), epochs
    return [r for r in rows if r["epoch"] >= 1]


def _tensorboard_images(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    return events.Tags()["images"], events


@pytest.mark.slow
def test_a_tiny_run_leaves_every_report_file(tiny_coco, tmp_path):
    train = tiny_coco(num_images=6, size=(64, 64), seed=11)
    # 9 = 3 full batches: a last batch of one 64 px image trips a GroupNorm of the tiny GDINO (1x1 map)
    val = tiny_coco(num_images=9, size=(64, 64), seed=12)
    out = tmp_path / "exp"
    assert run(["train", "--data", str(train), "--val", str(val), "--output", str(out), *FAST]) == 0
    gt = json.loads(val.read_text())
    for name, curves in (("grounding_dino", ("pr_curve", "f1_curve", "confusion_matrix")),
                         ("sam", ("iou_histogram", "iou_per_class"))):
        paths = ReportPaths.of(out, name)
        rows = _epochs_logged(read_results_csv(paths.results_csv))
        assert all(r["train_loss"] is not None and r["lr"] is not None for r in rows)
        assert paths.results_png.is_file()
        for tag in ("last", "best"):
            info = json.loads(paths.grid_info(tag).read_text())
            assert info["count"] == GRID_IMAGES and len({e["image_id"] for e in info["images"]}) == GRID_IMAGES
        assert json.loads(paths.grid_info("last").read_text())["epoch"] == EPOCHS
        for curve in curves:
            assert paths.curve(curve).is_file(), curve
        tags, events = _tensorboard_images(out / "logs" / name)
        assert "val/predictions" in tags and [e.step for e in events.Images("val/predictions")] == [0, 1, 2]
    record = json.loads(ReportPaths.of(out, "grounding_dino").curves_json.read_text())
    assert 0.0 <= recorded_threshold(out / "teachers" / "grounding_dino") <= 1.0
    matrix = np.asarray(record["confusion"]["matrix"])
    per_class = [sum(1 for a in gt["annotations"] if a["category_id"] == c["id"]) for c in gt["categories"]]
    assert matrix[:, :-1].sum(axis=0).tolist() == per_class  # every validation object counted once
    assert matrix.sum() == record["confusion"]["matched"] + record["confusion"]["missed"] + \
        record["confusion"]["false_detections"]
    page = build_report(out)
    assert page.count("<img ") == 6 + 5 and "sam" in page and "grounding_dino" in page
