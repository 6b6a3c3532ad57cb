"""What the loop of one teacher runs with, resolved once from the config and the teacher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teacherkit.errors import TeacherkitError
from teacherkit.training.stopping import Mode, monitor_rule
from teacherkit.training.tracking import configured_trackers


def configured_batch_size(cfg: Any, name: str) -> int | str:
    """Teacher ``name``'s batch size under ``cfg``: its own where set, else
    ``training.batch_size``; ``"auto"`` when it is to be searched for."""
    return cfg.teacher(name).batch_size or cfg.training.batch_size


def scaled_lr(lr: float, images_per_update: int, reference: int) -> float:
    """The linear scaling rule: the learning rate grows with the images of one update."""
    return lr * images_per_update / reference


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
    score_base: bool = True
    trackers: tuple[str, ...] = ("tensorboard",)

    @classmethod
    def from_config(cls, cfg: Any, spec: Any, *, batch_size: int | None = None, processes: int = 1) -> LoopSettings:
        """Settings of teacher ``spec`` under the resolved config ``cfg``: its own
        ``epochs``/``batch_size``/``lr`` where set, else the ``training`` values; the
        monitored metric by :func:`~teacherkit.training.stopping.monitor_rule`.

        :param batch_size: the size ``--batch-size auto`` found (required when the config
            says ``auto``).
        :param processes: processes training together; with ``training.scale_lr`` the
            learning rate is scaled by the images of one update over all of them
            (``batch_size × grad_accumulation × processes``) divided by
            ``training.scale_lr_reference``.
        """
        training, checkpointing = cfg.training, cfg.checkpointing
        tcfg = cfg.teacher(spec.name)
        monitor, mode = monitor_rule(checkpointing.monitor, checkpointing.mode,
                                     primary_metric=spec.primary_metric, metric_mode=spec.metric_mode)
        size = batch_size if batch_size is not None else configured_batch_size(cfg, spec.name)
        if not isinstance(size, int):
            raise TeacherkitError(f"{spec.name}: batch size {size!r} must be searched for before training "
                                  "(teacherkit.training.batch_size.search_batch_size)")
        lr = tcfg.lr or training.lr
        if training.scale_lr:
            lr = scaled_lr(lr, size * training.grad_accumulation * processes, training.scale_lr_reference)
        return cls(
            epochs=tcfg.epochs or training.epochs,
            batch_size=size,
            lr=lr,
            weight_decay=training.weight_decay,
            warmup_ratio=training.warmup_ratio,
            grad_accumulation=training.grad_accumulation,
            grad_clip=training.grad_clip,
            trackers=tuple(configured_trackers(training)),
            num_workers=training.num_workers,
            seed=training.seed,
            max_nonfinite_steps=training.max_nonfinite_steps,
            log_every=training.log_every,
            monitor=monitor,
            mode=mode,
            patience=checkpointing.patience,
            min_delta=checkpointing.min_delta,
            score_base=checkpointing.score_base,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """What trackers that keep hyperparameters record: every setting but the trackers
        themselves (a tuple), ``None``s left out (MLflow keeps strings; "None" says nothing)."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k != "trackers" and v is not None}
