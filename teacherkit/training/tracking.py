"""Metric history, TensorBoard scalars and images, and the tables and figures of one
teacher's epochs (drawn by :mod:`teacherkit.reporting.results`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def scalar_items(metrics: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics dict (nested per-class dicts flattened)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{key}/{sub}"] = float(v)
    return out


class TensorBoardLog:
    """Writes scalars under ``logs/<teacher>/``; a no-op off the main process."""

    def __init__(self, directory: Path | None) -> None:
        self.writer = None
        if directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(directory))

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def image(self, tag: str, pixels: Any, step: int) -> None:
        """An RGB ``[H, W, 3]`` uint8 picture (a prediction grid) under ``tag``."""
        if self.writer is not None:
            self.writer.add_image(tag, pixels, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def write_results(history: list[dict[str, Any]], teacher_dir: Path, *, title: str, table: bool = True,
                  figure: bool = True) -> None:
    """``results.csv`` (``table``) and ``results.png`` (``figure``) of one teacher's epoch
    rows, in its folder (:class:`teacherkit.reporting.paths.ReportPaths`)."""
    from teacherkit.reporting.paths import ReportPaths
    from teacherkit.reporting.results import plot_results, write_results_csv

    paths = ReportPaths(Path(teacher_dir))
    if table:
        write_results_csv(history, paths.results_csv)
    if figure:
        plot_results(history, paths.results_png, title=title)


def write_curves(history: list[dict[str, Any]], path: Path, *, title: str, metric: str) -> None:
    """The epoch figure of ``results.png`` at ``path`` (``metric``, the monitored one, is
    named in the title)."""
    from teacherkit.reporting.results import plot_results

    plot_results(history, path, title=f"{title}; monitored: {metric}")
