"""Which metric picks the best epoch, whether it should rise or fall, and when to stop.

Two small pieces the loop's hooks use and the checkpoint records: :func:`monitor_rule`
(the configured or the teacher's own metric, and its direction) and
:class:`EarlyStopping` (best so far, epochs without improvement).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from teacherkit.errors import TeacherkitError

Mode = Literal["max", "min"]


class TrainingAborted(TeacherkitError):
    """Training cannot go on (non-finite loss or weights, a monitor that is not a metric);
    the last good checkpoint is kept."""

    exit_code = 1


class Interrupted(TeacherkitError):
    """Training stopped on request after saving ``last``; ``--resume`` continues it."""

    exit_code = 130


def monitor_rule(monitor: str | None, mode: str | None, *, primary_metric: str,
                 metric_mode: str) -> tuple[str, Mode]:
    """``(metric name, "max" | "min")`` that picks a teacher's best epoch.

    - ``monitor`` (``checkpointing.monitor``) names the metric; null takes the teacher's
      ``primary_metric``. ``"loss"`` means the validation loss, ``"val_loss"``.
    - ``mode`` (``checkpointing.mode``) wins when given. Otherwise a metric whose name ends
      in ``loss`` falls (``min``), the teacher's own primary metric goes the way the
      teacher declares (``metric_mode``), and any other metric (AP, IoU, ...) rises.
    """
    chosen = monitor or primary_metric
    if chosen == "loss":
        chosen = "val_loss"
    if mode is not None:
        return chosen, _mode(mode)
    if chosen.endswith("loss"):
        return chosen, "min"
    if chosen == primary_metric:
        return chosen, _mode(metric_mode)
    return chosen, "max"


def _mode(value: str) -> Mode:
    if value not in ("max", "min"):
        raise ValueError(f"metric mode must be 'max' or 'min', got {value!r}")
    return "max" if value == "max" else "min"


@dataclass
class EarlyStopping:
    """Tracks the monitored metric; says when an epoch is the best and when to stop.

    Its :meth:`state_dict` is part of every checkpoint, so a resumed run stops where the
    uninterrupted one would have."""

    mode: Mode = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; return True when it improves on the best."""
        if value is None or not math.isfinite(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0  # type: ignore[arg-type]
        else:
            self.bad_epochs += 1
        return improved

    def forget_best(self) -> None:
        """Drop the best (its checkpoint is gone); the next finite value becomes the best."""
        self.best, self.best_epoch = None, None

    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
