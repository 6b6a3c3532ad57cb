"""``results.csv`` and ``results.png``: one teacher's epoch history as a table and a figure.

A history row is what the training loop records per epoch (``epoch``, ``train_*`` loss
parts, ``lr``, validation metrics, nested per-class dicts). Epoch 0, when present, is the
base model scored before training; it has metrics but no training losses.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_bytes, atomic_write_text

#: Columns that describe the run rather than the model: kept in the CSV, not plotted.
BOOKKEEPING = ("epoch", "seconds", "peak_mem_gib", "best")
#: A ``train_`` part whose name holds one of these is a diagnostic, not a term of the loss
#: (Grounding DINO's ``cardinality_error`` counts boxes; it is never minimised).
DIAGNOSTIC_MARKERS = ("error", "accuracy", "acc_")


def flatten_row(row: dict[str, Any]) -> dict[str, float | int | None]:
    """Every scalar of a history row; per-class dicts become ``key/class`` columns, ``None``
    (an undefined AP) stays ``None``. Strings and lists are left out."""
    out: dict[str, float | int | None] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if inner is None or (isinstance(inner, (int, float)) and not isinstance(inner, bool)):
                    out[f"{key}/{sub}"] = inner
        elif value is None or isinstance(value, bool):
            out[key] = None if value is None else int(value)
        elif isinstance(value, (int, float)):
            out[key] = value
    return out


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Column names in first-seen order, ``epoch`` first, then the training losses (which
    the base's row, epoch 0, lacks: they stay next to ``epoch`` all the same)."""
    names: dict[str, None] = {"epoch": None}
    for row in rows:
        names.update(dict.fromkeys(row))
    train = [n for n in names if n.startswith("train_")]
    return ["epoch", *train, *(n for n in names if n != "epoch" and not n.startswith("train_"))]


def results_table(history: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, flat rows)`` sorted by epoch; a repeated epoch keeps its last row (a
    resumed run that redid an epoch)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in history:
        by_epoch[int(row["epoch"])] = flatten_row(row)
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    return columns_of(rows), rows


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)  # repr: every digit round-trips


def write_results_csv(history: Sequence[dict[str, Any]], path: Path) -> None:
    """One row per epoch with every logged scalar (empty cell = not logged that epoch)."""
    columns, rows = results_table(history)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    atomic_write_text(path, buffer.getvalue())


def read_results_csv(path: Path) -> list[dict[str, float | int | None]]:
    """The rows of a ``results.csv`` (numbers parsed, empty cells as ``None``)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, float | int | None] = {}
            for key, text in raw.items():
                if text in ("", None):
                    row[key] = None
                else:
                    number = float(text)
                    row[key] = int(number) if key == "epoch" else number
            rows.append(row)
    return rows


#: Size- and count-split COCO numbers (``bbox_APs``, ``bbox_AR100``) share a panel with their family.
_FAMILY = re.compile(r"^(?P<family>(?:.+_)?(?:AP|AR))(?:\d+|[sml])?$")


def panels_of(columns: Sequence[str]) -> dict[str, list[str]]:
    """Which columns go in which panel of ``results.png``: ``loss`` (training loss parts and
    ``val_loss``), ``diagnostics`` (training parts that are not losses), ``lr``, then one
    panel per metric family (``bbox_AP`` with AP50, AP75, APs...; ``bbox_AR``; ``mIoU``);
    per-class columns and counts are left to the CSV."""
    panels: dict[str, list[str]] = {"loss": [], "diagnostics": [], "lr": []}
    for name in columns:
        if name in BOOKKEEPING:
            continue
        if name == "lr":
            panels["lr"].append(name)
        elif name.startswith("train_"):
            is_diagnostic = any(marker in name for marker in DIAGNOSTIC_MARKERS)
            panels["diagnostics" if is_diagnostic else "loss"].append(name)
        elif name == "val_loss":
            panels["loss"].append(name)
        elif "/" not in name and not name.startswith("num_") and "_num_" not in name:
            match = _FAMILY.match(name)
            panels.setdefault(match["family"] if match else name, []).append(name)
    return {k: v for k, v in panels.items() if v}


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], float(r[key])) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_results(history: Sequence[dict[str, Any]], path: Path, *, title: str) -> None:
    """``results.png``: one panel each for the losses, the non-loss parts, the learning
    rate and every headline metric, over epochs (epoch 0 = the base, when present)."""
    from matplotlib.ticker import MaxNLocator

    from teacherkit.reporting.figures import figure_png, subplot_grid

    columns, rows = results_table(history)
    panels = panels_of(columns)
    fig, axes = subplot_grid(max(len(panels), 1), cols=4, size=(3.6, 2.8))
    for ax, (name, keys) in zip(axes, panels.items()):
        for key in keys:
            epochs, values = _series(rows, key)
            label = key.removeprefix("train_")
            ax.plot(epochs, values, marker="o", markersize=3, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        if name == "loss" and all(v > 0 for k in keys for v in _series(rows, k)[1]):
            ax.set_yscale("log")
        if len(keys) > 1:
            ax.legend(fontsize=6)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    atomic_write_bytes(path, figure_png(fig))
