"""Metric history, TensorBoard scalars and the curves PNG of one teacher."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_bytes


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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def write_curves(history: list[dict[str, Any]], path: Path, *, title: str, metric: str) -> None:
    """Training-loss components and the monitored metric per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    loss_keys = sorted({k for row in history for k in row if k.startswith("train_")})
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    for key in loss_keys:
        ax_loss.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key[len("train_"):])
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log" if all(row.get("train_loss", 1) > 0 for row in history) else "linear")
    if loss_keys:
        ax_loss.legend(fontsize=8)
    ax_metric.plot(epochs, [row.get(metric, float("nan")) for row in history], marker="o", color="tab:green")
    ax_metric.set_xlabel("epoch")
    ax_metric.set_ylabel(metric)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
