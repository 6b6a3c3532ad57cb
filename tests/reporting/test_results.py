"""results.csv and results.png from an epoch history (epoch 0 = the base, when scored)."""

from __future__ import annotations

import pytest
from PIL import Image

from teacherkit.reporting.results import (
    panels_of,
    plot_results,
    read_results_csv,
    results_table,
    write_results_csv,
)


def history(epochs: int = 3, *, with_base: bool = True) -> list[dict]:
    rows = []
    if with_base:  # the base model, scored before training: metrics, no training losses
        rows.append({"epoch": 0, "bbox_AP": 0.1, "bbox_AP50": 0.2,
                     "bbox_per_class_AP": {"circle": 0.1, "square": None}})
    for e in range(1, epochs + 1):
        rows.append({"epoch": e, "train_loss": 2.0 / e, "train_loss_ce": 1.0 / e, "train_cardinality_error": 5.0 - e,
                     "seconds": 1.5, "peak_mem_gib": 0.25, "lr": 1e-3 / e, "bbox_AP": 0.1 + 0.1 * e,
                     "bbox_AP50": 0.2 + 0.1 * e, "bbox_num_predictions": 10 * e, "best": 0.1 + 0.1 * e,
                     "bbox_per_class_AP": {"circle": 0.2 * e / 3, "square": None}})
    return rows


def test_csv_has_one_row_per_epoch_including_the_base(tmp_path):
    path = tmp_path / "t" / "results.csv"
    write_results_csv(history(3), path)
    rows = read_results_csv(path)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]  # epochs + 1
    header = path.read_text().splitlines()[0].split(",")
    assert header[0] == "epoch"
    assert {"train_loss", "train_cardinality_error", "lr", "bbox_AP", "bbox_per_class_AP/circle",
            "bbox_per_class_AP/square", "bbox_num_predictions", "seconds"} <= set(header)
    assert rows[0]["train_loss"] is None and rows[0]["bbox_AP"] == pytest.approx(0.1)  # base: no loss logged
    assert rows[2]["train_loss"] == 1.0 and rows[3]["lr"] == pytest.approx(1e-3 / 3)
    assert rows[3]["bbox_per_class_AP/circle"] == pytest.approx(0.2)
    assert all(r["bbox_per_class_AP/square"] is None for r in rows)  # undefined stays undefined, never 0
    assert not list(path.parent.glob("*.tmp"))


def test_every_digit_round_trips_and_a_redone_epoch_keeps_its_last_row(tmp_path):
    rows = history(2, with_base=False)
    rows.append({**rows[-1], "bbox_AP": 0.123456789012345})  # epoch 2 again (a resumed run redid it)
    path = tmp_path / "results.csv"
    write_results_csv(rows, path)
    back = read_results_csv(path)
    assert [r["epoch"] for r in back] == [1, 2]
    assert back[1]["bbox_AP"] == 0.123456789012345


def test_panels_separate_losses_from_diagnostics_and_metrics():
    columns, _rows = results_table(history(2))
    panels = panels_of(columns)
    assert panels["loss"] == ["train_loss", "train_loss_ce"]
    assert panels["diagnostics"] == ["train_cardinality_error"]  # not a loss: its own panel
    assert panels["lr"] == ["lr"]
    assert panels["bbox_AP"] == ["bbox_AP", "bbox_AP50"]  # one panel per family
    # bookkeeping, per-class columns and counts stay in the CSV only
    assert not {"epoch", "seconds", "best", "bbox_num_predictions", "bbox_per_class_AP/circle"} & set(panels)


def test_coco_families_share_a_panel():
    names = ["bbox_AP", "bbox_AP50", "bbox_APs", "bbox_AR1", "bbox_AR100", "bbox_ARl", "segm_AP", "mIoU", "mDice",
             "keypoint_error_px"]
    panels = panels_of(["epoch", *names])
    assert panels == {"bbox_AP": ["bbox_AP", "bbox_AP50", "bbox_APs"],
                      "bbox_AR": ["bbox_AR1", "bbox_AR100", "bbox_ARl"],
                      "segm_AP": ["segm_AP"], "mIoU": ["mIoU"], "mDice": ["mDice"],
                      "keypoint_error_px": ["keypoint_error_px"]}


def test_sam_parts_are_losses():
    panels = panels_of(["epoch", "train_loss", "train_focal", "train_dice", "train_iou", "mIoU", "val_loss"])
    assert panels["loss"] == ["train_loss", "train_focal", "train_dice", "train_iou", "val_loss"]
    assert "diagnostics" not in panels and list(panels)[-1] == "mIoU"


def test_results_png_has_a_panel_per_group(tmp_path):
    path = tmp_path / "results.png"
    plot_results(history(3), path, title="grounding_dino")
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = img.size
    # 4 panels (loss, diagnostics, lr, bbox_AP family) in a row of 4, 360x280 each at 100 dpi
    assert (width, height) == (1440, 280)
