"""The seed guide's training pieces over the real machinery.

``TrainingManager(model, optimizer, config_path).training_step(batch, loss_fn)`` is one
optimisation step with the config's gradient accumulation and clipping, skipping a
non-finite loss as the loop does. ``CheckpointManager(output_dir, config_path)`` writes
``last`` (and ``best`` when the monitored metric improves) in the checkpoint format of
``teacherkit train`` (:class:`~teacherkit.training.state.TrainState` inside an atomic
folder) and says, through the ``should_stop`` property, when early stopping would end
the run. torch loads only when these are used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from teacherkit.seed_api import load_seed_config

if TYPE_CHECKING:  # pragma: no cover
    from teacherkit.plugins import PluginHost


def _module_of(model: Any) -> Any:
    """The ``torch.nn.Module`` of a :class:`~teacherkit.teachers.Teacher` or the module itself."""
    from teacherkit.teachers import Teacher

    return model.model if isinstance(model, Teacher) else model


def _forward(model: Any, batch: Any) -> Any:
    from teacherkit.teachers import Teacher

    if isinstance(model, Teacher):
        return model.forward(model.model, batch)
    return model(**batch) if isinstance(batch, dict) else model(batch)


class TrainingManager:
    """One optimisation step at a time, for a teacher (or any module) and its optimizer.

    :param config_path: a teacherkit config file (``training.grad_accumulation``,
        ``training.grad_clip``, ``training.max_nonfinite_steps`` are used); ``None``: defaults.
    """

    def __init__(self, model: Any, optimizer: Any, config_path: str | Path | None = None, *,
                 host: PluginHost | None = None) -> None:
        self.model, self.optimizer = model, optimizer
        self.config = load_seed_config(config_path, host)
        self.step = 0  # batches seen
        self.updates = 0  # optimizer steps taken
        self.skipped = 0  # consecutive non-finite losses

    def training_step(self, batch: Any, loss_fn: Any) -> dict[str, float] | None:
        """Forward, ``loss_fn(outputs, batch)``, backward, and an optimizer update every
        ``grad_accumulation`` batches. Returns the loss values (``{"loss": ...}`` plus any
        components), or ``None`` when the loss was not finite and the step was skipped."""
        import torch

        from teacherkit.data.samples import move_to_device
        from teacherkit.training.stopping import TrainingAborted

        training = self.config.training
        module = _module_of(self.model)
        module.train()
        device = next(module.parameters()).device
        batch = move_to_device(batch, device)
        losses = loss_fn(_forward(self.model, batch), batch)
        if isinstance(losses, torch.Tensor):
            losses = {"loss": losses}
        if not torch.isfinite(losses["loss"].detach()):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            if self.skipped >= training.max_nonfinite_steps:
                raise TrainingAborted(f"{self.skipped} consecutive steps with a non-finite loss; lower training.lr")
            return None
        self.skipped = 0
        (losses["loss"] / training.grad_accumulation).backward()
        self.step += 1
        if self.step % training.grad_accumulation == 0:
            if training.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), training.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.updates += 1
        return {name: float(value.detach()) for name, value in losses.items()}


class CheckpointManager:
    """``last``/``best`` checkpoints and early stopping under ``output_dir``.

    The monitored metric and its direction come from ``checkpointing.monitor`` /
    ``checkpointing.mode`` of the config (default: ``val_loss``, lower is better);
    ``checkpointing.patience`` ends the run through :attr:`should_stop`.
    """

    def __init__(self, output_dir: str | Path, config_path: str | Path | None = None, *,
                 host: PluginHost | None = None) -> None:
        from teacherkit.training.stopping import EarlyStopping, monitor_rule

        self.output_dir = Path(output_dir)
        self.config = load_seed_config(config_path, host)
        cp = self.config.checkpointing
        self.monitor, mode = monitor_rule(cp.monitor, cp.mode, primary_metric="val_loss", metric_mode="min")
        self.stopping = EarlyStopping(mode=mode, patience=cp.patience, min_delta=cp.min_delta)
        self.history: list[dict[str, Any]] = []

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without improvement."""
        return self.stopping.should_stop()

    @property
    def last_dir(self) -> Path:
        return self.output_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.output_dir / "best"

    def save_checkpoint(self, epoch: int, model: Any, optimizer: Any, metrics: dict[str, float]) -> bool:
        """Record ``metrics`` of ``epoch`` (counted from 1), write ``last`` and, when the
        monitored metric improved, ``best``. Returns whether this epoch is the new best."""
        from teacherkit.teachers import Teacher
        from teacherkit.training.checkpoint import capture_rng_state, save_checkpoint
        from teacherkit.training.state import TrainState

        improved = self.stopping.update(metrics.get(self.monitor), epoch)
        self.history.append({"epoch": epoch, **metrics})
        if isinstance(model, Teacher):
            trainable = model.trainable_state_dict()
        else:
            trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        state = TrainState(epoch=epoch, history=list(self.history), early_stopping=self.stopping.state_dict(),
                           optimizer=optimizer.state_dict(), rng=[capture_rng_state()], finished=False)
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        if improved:  # best first: "last" must never name a best epoch whose checkpoint is missing
            save_checkpoint(self.best_dir, trainable, state.to_state(), state.to_meta(name))
        save_checkpoint(self.last_dir, trainable, state.to_state(), state.to_meta(name))
        return improved
