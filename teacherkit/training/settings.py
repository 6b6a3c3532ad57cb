"""What the loop of one teacher runs with, resolved once from the config and the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teacherkit.training.stopping import Mode, monitor_rule


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_ratio: float
    grad_accumulation: int
    grad_clip: float | None
    num_workers: int
    seed: int
    max_nonfinite_steps: int
    log_every: int
    monitor: str
    mode: Mode
    patience: int | None
    min_delta: float

    @classmethod
    def from_config(cls, cfg: Any, spec: Any) -> LoopSettings:
        """Settings of teacher ``spec`` under the resolved config ``cfg``: its own
        ``epochs``/``batch_size``/``lr`` where set, else the ``training`` values; the
        monitored metric by :func:`~teacherkit.training.stopping.monitor_rule`."""
        training, checkpointing = cfg.training, cfg.checkpointing
        tcfg = cfg.teacher(spec.name)
        monitor, mode = monitor_rule(checkpointing.monitor, checkpointing.mode,
                                     primary_metric=spec.primary_metric, metric_mode=spec.metric_mode)
        return cls(
            epochs=tcfg.epochs or training.epochs,
            batch_size=tcfg.batch_size or training.batch_size,
            lr=tcfg.lr or training.lr,
            weight_decay=training.weight_decay,
            warmup_ratio=training.warmup_ratio,
            grad_accumulation=training.grad_accumulation,
            grad_clip=training.grad_clip,
            num_workers=training.num_workers,
            seed=training.seed,
            max_nonfinite_steps=training.max_nonfinite_steps,
            log_every=training.log_every,
            monitor=monitor,
            mode=mode,
            patience=checkpointing.patience,
            min_delta=checkpointing.min_delta,
        )
