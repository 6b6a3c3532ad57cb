"""The training loop of one teacher, on accelerate.

accelerate provides the device, mixed precision and DDP (``accelerate launch`` or
``torchrun``); this module provides the steps: a resumable sampler position, gradient
accumulation with ``no_sync``, clipping, warmup + cosine schedule and skipping non-finite
steps. What happens around the steps (evaluation, early stopping, ``best``/``last``
checkpoints, logging) are hooks (:mod:`teacherkit.training.hooks`); where the run stands is
one :class:`~teacherkit.training.state.TrainState`, saved and restored as a whole.

Before its first optimizer step a fresh run scores the untouched model as epoch 0, the base
(LoRA's B matrices start at zero and trained heads start from the base weights, so the model
before training *is* the base). Epoch 0 goes through the same end-of-epoch hooks as a trained
epoch, so it can be the best; when no epoch beats it, the base is kept and the run says so.
``checkpointing.score_base: false`` skips epoch 0.

Ctrl-C (SIGINT) and SIGTERM stop at the next optimizer-step boundary and save ``last``, so
``--resume`` continues with exactly the samples, RNG states and optimizer moments the run
would have used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from teacherkit.training.checkpoint import (
    capture_rng_state,
    load_train_state,
    nonfinite_tensors,
    restore_rng_state,
)
from teacherkit.training.dataset import EpochKeyed, EpochSampler, batches_per_epoch, move_to_device
from teacherkit.training.hooks import CheckpointHook, EarlyStoppingHook, EvaluationHook, Hook, LoggingHook
from teacherkit.training.loaders import RunLoaders
from teacherkit.training.settings import LoopSettings
from teacherkit.training.state import PartialEpoch, TrainState
from teacherkit.training.stopping import (
    EarlyStopping,
    Interrupted,
    StopFlag,
    TrainingAborted,
)
from teacherkit.workers import ignore_stop_signals

__all__ = ["BASE_KEPT", "Interrupted", "LoopResult", "LoopSettings", "StopFlag", "TeacherLoop", "TrainingAborted",
           "ignore_stop_signals", "peak_memory_gib", "warmup_cosine"]


#: What the run says when the base model (epoch 0) stays the best.
BASE_KEPT = "no epoch beat the base model (epoch 0): kept the base as best"


@dataclass
class LoopResult:
    """One teacher's run. ``best_epoch`` 0 with ``base_kept`` means no trained epoch beat
    the base: the adapter kept is the untouched one. ``base_metric`` is the monitored
    metric of epoch 0 (``None`` when the run did not score it, e.g. resumed past it in an
    experiment from before epoch 0 was scored)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    base_metric: float | None = None
    base_kept: bool = False
    epochs_run: int = 0
    stopped_early: bool = False
    nonfinite_steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    peak_memory_gib: float = 0.0


def warmup_cosine(total_steps: int, warmup_ratio: float):
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def peak_memory_gib(device: Any) -> float:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TeacherLoop:
    """Trains one built teacher. ``run()`` returns a :class:`LoopResult`.

    :param layout: the teacher's folders (:class:`teacherkit.layout.TeacherLayout`).
    :param extra_hooks: run after the built-in evaluation, early-stopping, checkpoint and
        logging hooks.
    """

    def __init__(self, *, teacher: Any, loss_fn: Any, train_set: Any, val_set: Any, evaluate: Any,
                 settings: LoopSettings, accelerator: Any, layout: Any, reporter: Any, stop: StopFlag,
                 resume: bool, extra_hooks: Sequence[Hook] = ()) -> None:
        self.teacher, self.loss_fn, self.train_set = teacher, loss_fn, train_set
        self.s, self.acc, self.layout = settings, accelerator, layout
        self.reporter, self.stop, self.resume = reporter, stop, resume
        self.stopping = EarlyStopping(mode=settings.mode, patience=settings.patience, min_delta=settings.min_delta)
        self.state = TrainState()
        self.checkpoints = CheckpointHook(layout)
        # order matters: score the epoch, decide best/stop, save, then report what was saved
        logging = LoggingHook(layout.logs if accelerator.is_main_process else None, settings.trackers,
                              hyperparameters=settings.hyperparameters())
        self.hooks: list[Hook] = [EvaluationHook(val_set, evaluate), EarlyStoppingHook(), self.checkpoints,
                                  logging, *extra_hooks]
        self.resumed = self.improved = self.stop_training = False
        self.partial = PartialEpoch()
        self.consecutive_bad = 0
        self.epoch_images = self.images_seen = 0
        self.train_seconds = 0.0
        # one loader per split for the whole run (training, and validation through its hook)
        self.loaders = RunLoaders(num_workers=settings.num_workers, seed=settings.seed,
                                  pin_memory=accelerator.device.type == "cuda")

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> LoopResult:
        self._build()
        self._restore()
        wall_start = time.perf_counter()
        try:
            for hook in self.hooks:
                hook.after_restore(self)
            if self.state.finished:
                self.reporter.line(f"   already finished at epoch {self.state.epoch}; nothing to resume")
                return self._result(wall_start)
            # a resumed run is past its first step: its epoch 0, if scored, is in the history
            if not self.resumed and self.s.score_base:
                self._base_epoch()
                if self.stop.requested:
                    raise self.stop.interrupted(f"{self.teacher.spec.name}: stopped after scoring the base model "
                                                "(epoch 0), before any training; --resume starts it afresh")
            for epoch in range(self.state.epoch, self.s.epochs):
                self._train_epoch(epoch)
                self._end_epoch(epoch)
                if self.stop_training:
                    break
                if self.stop.requested and not self.state.finished:
                    raise self.stop.interrupted(
                        f"{self.teacher.spec.name}: stopped after epoch {epoch + 1}; continue with --resume")
        finally:
            self.loaders.close()  # the workers ignore SIGINT/SIGTERM: they stop when told, here
            for hook in self.hooks:
                hook.after_train(self)
        if self.stopping.best_epoch == 0 and self.state.epoch > 0:
            self.reporter.line(f"   {self.teacher.spec.name}: {BASE_KEPT}")
        return self._result(wall_start)

    def _build(self) -> None:
        import torch

        acc, s = self.acc, self.s
        optimizer = torch.optim.AdamW(
            _param_groups(self.teacher.model, s.weight_decay), lr=s.lr,
            fused=acc.device.type == "cuda",  # one kernel for all parameters (measured in bench/)
        )
        self.sampler = EpochSampler(len(self.train_set), seed=s.seed, shuffle=True, rank=acc.process_index,
                                    world_size=acc.num_processes, keyed=True)
        self.keyed_train_set = EpochKeyed(self.train_set)  # the epoch reaches persistent workers with each index
        self.per_epoch = batches_per_epoch(len(self.sampler), s.batch_size)
        total_updates = max(1, math.ceil(self.per_epoch / s.grad_accumulation) * s.epochs)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_updates, s.warmup_ratio))
        self.model, self.optimizer = acc.prepare(self.teacher.model, optimizer)

    def _restore(self) -> None:
        """Load ``last`` on ``--resume`` (after putting back a ``last.old`` a crash left)."""
        import torch

        from teacherkit.atomic import recover_dir

        if self.acc.is_main_process:
            for folder in (self.layout.last, self.layout.best, self.layout.adapter):
                recover_dir(folder)
        self.acc.wait_for_everyone()
        if not (self.resume and self.layout.last.exists()):
            torch.manual_seed(self.s.seed)
            return
        trainable, state = load_train_state(self.layout.last)
        self.teacher.load_trainable_state_dict(trainable)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if state.scaler is not None and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(state.scaler)
        self.stopping.load_state_dict(state.early_stopping)
        restore_rng_state(state.rng_for(self.acc.process_index))
        self.state, self.resumed = state, True
        if not state.finished:
            self.reporter.line(f"   resuming at epoch {state.epoch + 1}, batch {state.batch}, step {state.step}")

    def _train_epoch(self, epoch: int) -> None:
        s = self.s
        first_batch = self.state.batch if epoch == self.state.epoch else 0
        self.partial = self.state.partial if first_batch and self.state.partial else PartialEpoch()
        self.sampler.set_epoch(epoch, start=first_batch * s.batch_size)
        self.train_set.set_epoch(epoch)  # the main process's copy; the workers' copies follow the keys
        self.teacher.on_epoch_start(epoch)
        loader = self.loaders.get("train", self.keyed_train_set, s.batch_size, lambda: self.sampler)
        self.model.train()
        started, self.epoch_images = time.perf_counter(), 0
        batch_index = first_batch
        with self.reporter.epoch_progress(epoch, s.epochs, self.per_epoch) as progress:
            if first_batch:
                progress.update(first_batch, {})
            for batch in loader:
                images = len(batch.get("image_ids", [])) or s.batch_size
                sync = (batch_index + 1) % s.grad_accumulation == 0 or batch_index + 1 == self.per_epoch
                values = self._step(batch, sync, epoch, batch_index)
                batch_index += 1
                progress.update(1, {"loss": values["loss"] if values else float("nan")})
                if values is None:
                    continue
                self.partial.add(values)
                self.images_seen += images
                self.epoch_images += s.batch_size
                if sync:
                    for hook in self.hooks:
                        hook.after_step(self, values)
                    if self.stop.check(self.state.step) and batch_index < self.per_epoch:
                        self._interrupt(epoch, batch_index)
        self.epoch_seconds = time.perf_counter() - started
        self.train_seconds += self.epoch_seconds

    def _step(self, batch: Any, sync: bool, epoch: int, batch_index: int) -> dict[str, float] | None:
        """Forward, backward and (on ``sync``) an optimizer update; the loss values, or
        ``None`` when the loss was not finite on some process and every process skipped."""
        import torch

        acc, s = self.acc, self.s
        batch = move_to_device(batch, acc.device)
        with acc.autocast():
            losses = self.loss_fn(self.teacher.forward(self.model, batch), batch)
        loss = losses["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if acc.num_processes > 1:
            finite = acc.reduce(finite, reduction="mean")
        # One host read per step, taken here where the forward has already run: the finite
        # check and every loss value in one transfer. Reading the values after the optimizer
        # step instead would make the host wait for the backward too, leaving the device idle
        # while the next batch is prepared.
        names = list(losses)
        read = torch.stack([finite, *(losses[k].detach().float().reshape(()) for k in names)]).tolist()
        if read[0] < 1.0:
            self._skip_step(epoch, batch_index)  # every rank skips together: DDP's collectives stay matched
            return None
        self.consecutive_bad = 0
        if sync:
            acc.backward(loss / s.grad_accumulation)
            if s.grad_clip:
                acc.clip_grad_norm_(self.model.parameters(), s.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
        else:
            with acc.no_sync(self.model):
                acc.backward(loss / s.grad_accumulation)
        return dict(zip(names, read[1:]))

    def _skip_step(self, epoch: int, batch_index: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.state.nonfinite_steps += 1
        self.consecutive_bad += 1
        if self.consecutive_bad >= self.s.max_nonfinite_steps:
            raise TrainingAborted(
                f"{self.teacher.spec.name}: {self.consecutive_bad} consecutive steps with a non-finite loss "
                f"(epoch {epoch + 1}, batch {batch_index}); lower training.lr, check the data with "
                f"'teacherkit validate', or try training.mixed_precision=no; the last good checkpoint is kept "
                f"in {self.layout.last}"
            )

    def _interrupt(self, epoch: int, batch_index: int) -> None:
        self.check_weights(f"epoch {epoch + 1}, batch {batch_index}")
        self.state.batch, self.state.partial, self.state.finished = batch_index, self.partial, False
        self.checkpoints.save(self, self.layout.last)
        raise self.stop.interrupted(
            f"{self.teacher.spec.name}: stopped at epoch {epoch + 1}, batch {batch_index}; "
            f"checkpoint saved to {self.layout.last}; continue with --resume"
        )

    def _base_epoch(self) -> None:
        """Epoch 0: the model before its first optimizer step, scored and recorded like an
        epoch (it may become ``best``), with no training loss and no training time."""
        self.partial, self.epoch_seconds, self.epoch_images = PartialEpoch(), 0.0, 0
        row: dict[str, Any] = {"epoch": 0, "train_loss": None, "seconds": None,
                               "peak_mem_gib": round(peak_memory_gib(self.acc.device), 3)}
        self._record_epoch(row)

    def _end_epoch(self, epoch: int) -> None:
        sums, counted = self.partial.sums, self.partial.count
        if self.acc.num_processes > 1:  # epoch means over every rank's batches
            from accelerate.utils import gather_object

            parts = gather_object([(sums, counted)])
            counted = sum(c for _s, c in parts)
            sums = {k: sum(p.get(k, 0.0) for p, _c in parts) for k in sums}
        self.check_weights(f"the end of epoch {epoch + 1}")
        row: dict[str, Any] = {"epoch": epoch + 1, **{f"train_{k}": v / max(counted, 1) for k, v in sums.items()}}
        row["seconds"] = round(self.epoch_seconds, 2)
        row["peak_mem_gib"] = round(peak_memory_gib(self.acc.device), 3)
        self._record_epoch(row)

    def _record_epoch(self, row: dict[str, Any]) -> None:
        """Score ``row`` (hooks), record it in the state as the last finished epoch, then
        let the hooks act on it (best/last checkpoints, logs)."""
        self.improved = False
        for hook in self.hooks:
            hook.score_epoch(self, row)
        state = self.state
        state.history.append(row)
        state.epoch, state.batch, state.partial = row["epoch"], 0, None
        state.finished = self.stopping.should_stop() or row["epoch"] == self.s.epochs
        for hook in self.hooks:
            hook.after_epoch(self, row)

    # -- state ---------------------------------------------------------------------------------
    def check_weights(self, where: str) -> None:
        """Stop before saving weights that hold NaN or infinity: the last good checkpoint stays."""
        bad = nonfinite_tensors(self.teacher.trainable_state_dict())
        if bad:
            raise TrainingAborted(
                f"{self.teacher.spec.name}: trainable weights became non-finite at {where} "
                f"({len(bad)} tensors, e.g. {', '.join(bad[:3])}); nothing was saved from this point, the last "
                f"good checkpoint is kept in {self.layout.last}; lower training.lr or training.grad_clip"
            )

    def capture_state(self) -> TrainState:
        """The loop's :class:`TrainState` with the engine states filled in (a collective:
        every process calls it)."""
        from accelerate.utils import gather_object

        rng = capture_rng_state()
        state = self.state
        state.rng = gather_object([rng]) if self.acc.num_processes > 1 else [rng]
        state.optimizer = self.optimizer.state_dict()
        state.scheduler = self.scheduler.state_dict()
        state.scaler = self.acc.scaler.state_dict() if self.acc.scaler is not None else None
        state.early_stopping = self.stopping.state_dict()
        return state

    def _result(self, wall_start: float) -> LoopResult:
        return LoopResult(
            history=self.state.history, best_metric=self.stopping.best, best_epoch=self.stopping.best_epoch,
            base_metric=self.state.base_metric(self.s.monitor), base_kept=self.stopping.best_epoch == 0,
            epochs_run=self.state.epoch, stopped_early=self.stop_training,
            nonfinite_steps=self.state.nonfinite_steps, seconds=time.perf_counter() - wall_start,
            images_per_second=self.images_seen * self.acc.num_processes / max(self.train_seconds, 1e-9),
            peak_memory_gib=peak_memory_gib(self.acc.device),
        )
