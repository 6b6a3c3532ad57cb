"""``TrainState``: everything a checkpoint holds besides the weights, in one dataclass that
saving writes and resuming reads, so the two cannot drift apart.

``state.pt`` is :meth:`TrainState.to_state` (plain containers and tensors, loadable with
``torch.load(weights_only=True)``); ``meta.json`` is :meth:`TrainState.to_meta`, the same
position and metrics for people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PartialEpoch:
    """Loss sums of the batches done in an epoch a stop cut short, so the epoch's mean
    after ``--resume`` covers every batch."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def means(self) -> dict[str, float]:
        return {key: value / max(self.count, 1) for key, value in self.sums.items()}


@dataclass
class TrainState:
    """Where a teacher's training stands.

    ``epoch`` counts finished epochs; ``batch`` the batches done in the next one (0 at an
    epoch boundary, when ``partial`` is None). ``history`` has one row per epoch, starting
    with epoch 0, the base model scored before training (0 finished epochs, and ``best``
    may name it). ``optimizer``/``scheduler``/``scaler``/``rng`` are the engine states
    (``rng`` one entry per process), filled in just before saving."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_steps: int = 0
    early_stopping: dict[str, Any] = field(default_factory=dict)
    partial: PartialEpoch | None = None
    finished: bool = False
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> float | None:
        return self.early_stopping.get("best")

    @property
    def best_epoch(self) -> int | None:
        return self.early_stopping.get("best_epoch")

    @property
    def base(self) -> dict[str, Any] | None:
        """The row of epoch 0 (the base model), ``None`` when this run did not score it."""
        return next((row for row in self.history if row.get("epoch") == 0), None)

    def base_metric(self, monitor: str) -> float | None:
        value = (self.base or {}).get(monitor)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def to_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng": self.rng,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "early_stopping": dict(self.early_stopping),
            "history": list(self.history),
            "nonfinite_steps": self.nonfinite_steps,
            "partial_epoch": {"sums": dict(self.partial.sums), "count": self.partial.count}
            if self.partial is not None else None,
            "finished": self.finished,
        }

    def to_meta(self, teacher: str) -> dict[str, Any]:
        return {
            "teacher": teacher,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "finished": self.finished,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "last_metrics": self.history[-1] if self.history else {},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TrainState:
        partial = state.get("partial_epoch")
        return cls(
            epoch=int(state["epoch"]),
            batch=int(state["batch"]),
            step=int(state["step"]),
            history=list(state["history"]),
            nonfinite_steps=int(state["nonfinite_steps"]),
            early_stopping=dict(state["early_stopping"]),
            partial=PartialEpoch(dict(partial["sums"]), int(partial["count"])) if partial else None,
            finished=bool(state.get("finished", False)),
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            scaler=state.get("scaler"),
            rng=list(state["rng"]),
        )

    def rng_for(self, process_index: int) -> dict[str, Any]:
        """This process's RNG state (process 0's when the run had fewer processes)."""
        return self.rng[process_index] if process_index < len(self.rng) else self.rng[0]
