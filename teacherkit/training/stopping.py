"""Which metric picks the best epoch, whether it should rise or fall, and when to stop.

Two small pieces the loop's hooks use and the checkpoint records: :func:`monitor_rule`
(the configured or the teacher's own metric, and its direction) and
:class:`EarlyStopping` (best so far, epochs without improvement); and the ways a run stops
before its last epoch: :class:`StopFlag` (a signal asked), :class:`Interrupted`,
:class:`TrainingAborted`.
"""

from __future__ import annotations

import math
import signal
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

    Epoch 0 is the base model, scored before any training: it sets the bar (and is the
    best when no epoch beats it) but, not being a trained epoch, never uses up patience.
    Its :meth:`state_dict` is part of every checkpoint, so a resumed run stops where the
    uninterrupted one would have."""

    mode: Mode = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; return True when it improves on the best (the
        first finite value always does, so a finite base is the best until beaten)."""
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
        elif epoch > 0:  # a base whose metric is undefined is no training epoch that failed
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


class StopFlag:
    """Set by SIGINT/SIGTERM (or by ``after_steps`` in tests); checked at step boundaries.

    ``timeout`` and Slurm send SIGTERM to the whole process group: the DataLoader workers
    ignore it (:func:`ignore_stop_signals`) and this process stops them once ``last`` is
    saved. The exit code says which signal it was (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, after_steps: int | None = None) -> None:
        self.requested = False
        self.signum: int | None = None
        self.after_steps = after_steps
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested:  # a second signal stops at once, keeping the checkpoints already saved
            self.signum = signum
            raise self.interrupted("stopped at once by a second signal; the last saved checkpoint is kept, "
                                   "continue with --resume")
        self.requested = True
        self.signum = signum

    def interrupted(self, message: str) -> Interrupted:
        """An :class:`Interrupted` whose exit code is 128 + the signal (130 without one)."""
        exc = Interrupted(message)
        exc.exit_code = 128 + (self.signum or signal.SIGINT)
        return exc

    def __enter__(self) -> StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def check(self, global_step: int) -> bool:
        return self.requested or (self.after_steps is not None and global_step >= self.after_steps)
