"""The training loop of one teacher, on accelerate.

accelerate provides the device, mixed precision and DDP (``accelerate launch`` or
``torchrun``); this module provides the rest: a resumable sampler position, gradient
accumulation with ``no_sync``, clipping, warmup + cosine schedule, skipping non-finite
steps, evaluation every epoch, ``last``/``best`` checkpoints and early stopping.

Ctrl-C (SIGINT) and SIGTERM stop at the next optimizer-step boundary and save ``last``, so
``--resume`` continues with exactly the samples, RNG states and optimizer moments the run
would have used.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teacherkit.errors import TeacherkitError
from teacherkit.training.checkpoint import (
    CheckpointManager,
    EarlyStopping,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from teacherkit.training.dataset import EpochSampler, batches_per_epoch, move_to_device
from teacherkit.training.tracking import TensorBoardLog, scalar_items


class TrainingAborted(TeacherkitError):
    exit_code = 1


class Interrupted(TeacherkitError):
    """Training stopped on request after saving ``last``; ``--resume`` continues it."""

    exit_code = 130


@dataclass
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
    mode: str
    patience: int | None
    min_delta: float


@dataclass
class LoopResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    nonfinite_steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    peak_memory_gib: float = 0.0


class StopFlag:
    """Set by SIGINT/SIGTERM (or by ``after_steps`` in tests); checked at step boundaries."""

    def __init__(self, after_steps: int | None = None) -> None:
        self.requested = False
        self.after_steps = after_steps
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

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
    """Trains one built teacher. ``run()`` returns a :class:`LoopResult`."""

    def __init__(
        self,
        *,
        teacher: Any,
        loss_fn: Any,
        train_set: Any,
        val_set: Any,
        evaluate: Any,
        settings: LoopSettings,
        accelerator: Any,
        checkpoints: CheckpointManager,
        adapter_dir: Path,
        log_dir: Path | None,
        reporter: Any,
        stop: StopFlag,
        resume: bool,
    ) -> None:
        self.teacher = teacher
        self.loss_fn = loss_fn
        self.train_set = train_set
        self.val_set = val_set
        self.evaluate_fn = evaluate
        self.s = settings
        self.acc = accelerator
        self.ckpt = checkpoints
        self.adapter_dir = adapter_dir
        self.reporter = reporter
        self.stop = stop
        self.resume = resume
        self.tb = TensorBoardLog(log_dir if accelerator.is_main_process else None)
        self.ckpt.stopping = EarlyStopping(mode=settings.mode, patience=settings.patience, min_delta=settings.min_delta)

    # -- set-up ------------------------------------------------------------------------------
    def _loader(self, dataset: Any, sampler: EpochSampler, collate: Any) -> Any:
        import torch
        from torch.utils.data import DataLoader

        generator = torch.Generator().manual_seed(self.s.seed + sampler.epoch)  # worker seeds independent of torch RNG
        return DataLoader(
            dataset,
            batch_size=self.s.batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.s.num_workers,
            pin_memory=self.acc.device.type == "cuda",
            generator=generator,
            persistent_workers=False,
        )

    def run(self) -> LoopResult:
        import torch

        acc, s = self.acc, self.s
        result = LoopResult()
        optimizer = torch.optim.AdamW(
            _param_groups(self.teacher.model, s.weight_decay), lr=s.lr,
            fused=acc.device.type == "cuda",  # one kernel for all parameters (measured in bench/)
        )
        per_epoch = batches_per_epoch(len(EpochSampler(len(self.train_set), seed=s.seed, shuffle=True,
                                                       rank=acc.process_index, world_size=acc.num_processes)),
                                      s.batch_size)
        updates_per_epoch = math.ceil(per_epoch / s.grad_accumulation)
        total_updates = max(1, updates_per_epoch * s.epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_updates, s.warmup_ratio))
        model, optimizer = acc.prepare(self.teacher.model, optimizer)

        start_epoch, start_batch, global_step = 0, 0, 0
        partial: dict[str, Any] = {"sums": {}, "count": 0}
        if self.resume and self.ckpt.last_dir.exists():
            trainable, state, meta = load_checkpoint(self.ckpt.last_dir)
            self.teacher.load_trainable_state_dict(trainable)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler") is not None and acc.scaler is not None:
                acc.scaler.load_state_dict(state["scaler"])
            self.ckpt.stopping.load_state_dict(state["early_stopping"])
            result.history = list(state["history"])
            result.nonfinite_steps = int(state["nonfinite_steps"])
            start_epoch, start_batch, global_step = int(state["epoch"]), int(state["batch"]), int(state["step"])
            partial = state.get("partial_epoch") or partial
            rng = state["rng"][acc.process_index] if acc.process_index < len(state["rng"]) else state["rng"][0]
            restore_rng_state(rng)
            if meta.get("finished"):
                self.reporter.line(f"   already finished at epoch {start_epoch}; nothing to resume")
                result.best_metric, result.best_epoch = self.ckpt.stopping.best, self.ckpt.stopping.best_epoch
                result.epochs_run = start_epoch
                return result
            self.reporter.line(f"   resuming at epoch {start_epoch + 1}, batch {start_batch}, step {global_step}")
        else:
            torch.manual_seed(s.seed)

        sampler = EpochSampler(len(self.train_set), seed=s.seed, shuffle=True, rank=acc.process_index,
                               world_size=acc.num_processes)
        consecutive_bad = 0
        images_seen, train_seconds = 0, 0.0
        wall_start = time.perf_counter()
        epoch = start_epoch
        try:
            for epoch in range(start_epoch, s.epochs):
                first_batch = start_batch if epoch == start_epoch else 0
                sampler.set_epoch(epoch, start=first_batch * s.batch_size)
                self.train_set.set_epoch(epoch)
                self.teacher.on_epoch_start(epoch)
                loader = self._loader(self.train_set, sampler, self.train_set.preprocessor.collate)
                model.train()
                resumed_here = epoch == start_epoch and first_batch > 0
                sums: dict[str, float] = dict(partial["sums"]) if resumed_here else {}
                counted = int(partial["count"]) if resumed_here else 0
                self._partial = {"sums": sums, "count": counted}
                epoch_start = time.perf_counter()
                batch_index = first_batch
                with self.reporter.epoch_progress(epoch, s.epochs, per_epoch) as progress:
                    if first_batch:
                        progress.update(first_batch, {})
                    for batch in loader:
                        batch = move_to_device(batch, acc.device)
                        sync = (batch_index + 1) % s.grad_accumulation == 0 or batch_index + 1 == per_epoch
                        with acc.autocast():
                            outputs = self.teacher.forward(model, batch)
                            losses = self.loss_fn(outputs, batch)
                        loss = losses["loss"]
                        finite = torch.isfinite(loss.detach()).float()
                        if acc.num_processes > 1:
                            finite = acc.reduce(finite, reduction="mean")
                        # One host read per step, taken here where the forward has already run: the
                        # finite check and every loss value in one transfer. Reading the values after
                        # the optimizer step instead would make the host wait for the backward too,
                        # leaving the device idle while the next batch is prepared.
                        names = list(losses)
                        read = torch.stack([finite, *(losses[k].detach().float().reshape(()) for k in names)]).tolist()
                        values = dict(zip(names, read[1:]))
                        if read[0] < 1.0:
                            # every rank skips together, so DDP's collectives stay matched
                            optimizer.zero_grad(set_to_none=True)
                            result.nonfinite_steps += 1
                            consecutive_bad += 1
                            if consecutive_bad >= s.max_nonfinite_steps:
                                raise TrainingAborted(
                                    f"{self.teacher.spec.name}: {consecutive_bad} consecutive steps with a non-finite "
                                    f"loss (epoch {epoch + 1}, batch {batch_index}); lower training.lr, check the data "
                                    f"with 'teacherkit validate', or try training.mixed_precision=no"
                                )
                            batch_index += 1
                            progress.update(1, {"loss": float("nan")})
                            continue
                        consecutive_bad = 0
                        if sync:
                            acc.backward(loss / s.grad_accumulation)
                        else:
                            with acc.no_sync(model):
                                acc.backward(loss / s.grad_accumulation)
                        if sync:
                            if s.grad_clip:
                                acc.clip_grad_norm_(model.parameters(), s.grad_clip)
                            optimizer.step()
                            scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                            global_step += 1
                        for key, value in values.items():
                            sums[key] = sums.get(key, 0.0) + value
                        counted += 1
                        self._partial = {"sums": sums, "count": counted}
                        images_seen += len(batch.get("image_ids", [])) or s.batch_size
                        batch_index += 1
                        progress.update(1, {"loss": values["loss"]})
                        if sync and global_step % s.log_every == 0:
                            self.tb.scalars("train", values, global_step)
                            self.tb.scalars("train", {"lr": scheduler.get_last_lr()[0]}, global_step)
                        if sync and self.stop.check(global_step) and batch_index < per_epoch:
                            self._save(optimizer, scheduler, result, epoch, batch_index, global_step, finished=False)
                            raise Interrupted(
                                f"{self.teacher.spec.name}: stopped at epoch {epoch + 1}, batch {batch_index}; "
                                f"checkpoint saved to {self.ckpt.last_dir}; continue with --resume"
                            )
                epoch_seconds = time.perf_counter() - epoch_start
                train_seconds += epoch_seconds
                if acc.num_processes > 1:  # epoch means over every rank's batches
                    from accelerate.utils import gather_object

                    parts = gather_object([(sums, counted)])
                    counted = sum(c for _s, c in parts)
                    sums = {k: sum(p.get(k, 0.0) for p, _c in parts) for k in sums}
                metrics = self._evaluate(model)
                row: dict[str, Any] = {"epoch": epoch + 1}
                row.update({f"train_{k}": v / max(counted, 1) for k, v in sums.items()})
                row.update(metrics)
                row["seconds"] = round(epoch_seconds, 2)
                row["peak_mem_gib"] = round(peak_memory_gib(acc.device), 3)
                monitored = row.get(s.monitor)
                if monitored is None:
                    raise TrainingAborted(
                        f"checkpointing.monitor {s.monitor!r} is not a metric of {self.teacher.spec.name}; "
                        f"available: {', '.join(k for k in row if k not in ('epoch',))}"
                    )
                improved = self.ckpt.stopping.update(float(monitored), epoch + 1)
                row["best"] = self.ckpt.stopping.best
                result.history.append(row)
                self.tb.scalars("val", scalar_items(metrics), epoch + 1)
                self.tb.scalars("epoch", {"images_per_second": counted * s.batch_size / max(epoch_seconds, 1e-9),
                                          "peak_memory_gib": row["peak_mem_gib"]}, epoch + 1)
                stop_now = self.ckpt.should_stop() or epoch + 1 == s.epochs
                self._save(optimizer, scheduler, result, epoch + 1, 0, global_step, finished=stop_now)
                if improved:
                    self._save_best()
                self.reporter.epoch_row(self._display_row(row))
                if self.ckpt.should_stop() and epoch + 1 < s.epochs:
                    result.stopped_early = True
                    self.reporter.line(
                        f"   early stop: {s.monitor} has not improved by {s.min_delta} for {s.patience} epochs "
                        f"(best {self.ckpt.stopping.best:.4f} at epoch {self.ckpt.stopping.best_epoch})"
                    )
                    epoch += 1
                    break
                if self.stop.requested:
                    raise Interrupted(
                        f"{self.teacher.spec.name}: stopped after epoch {epoch + 1}; continue with --resume")
            else:
                epoch = s.epochs
        finally:
            self.tb.close()
        result.epochs_run = epoch
        result.best_metric = self.ckpt.stopping.best
        result.best_epoch = self.ckpt.stopping.best_epoch
        result.seconds = time.perf_counter() - wall_start
        result.images_per_second = images_seen * acc.num_processes / max(train_seconds, 1e-9)
        result.peak_memory_gib = peak_memory_gib(acc.device)
        return result

    @staticmethod
    def _display_row(row: dict[str, Any]) -> dict[str, Any]:
        keep = {"epoch", "train_loss", "seconds", "peak_mem_gib", "best"}
        out = {}
        for key, value in row.items():
            metric_like = key.split("_")[-1] in {"AP", "AP50", "mIoU", "mDice", "loss"}
            if key in keep or (isinstance(value, float) and metric_like):
                out[key] = value
        return out

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, model: Any) -> dict[str, Any]:
        import torch
        from accelerate.utils import broadcast_object_list, gather_object

        acc = self.acc
        if self.val_set is None:
            return {}
        sampler = EpochSampler(len(self.val_set), seed=0, shuffle=False, rank=acc.process_index,
                               world_size=acc.num_processes)
        loader = self._loader(self.val_set, sampler, self.val_set.preprocessor.collate)
        model.eval()
        predictions: list[dict[str, Any]] = []
        loss_sum, loss_count = 0.0, 0
        want_loss = self.teacher.spec.evaluation == "none" or self.s.monitor == "val_loss"
        rng = capture_rng_state()  # evaluation must not shift the training RNG stream
        with torch.no_grad():
            for batch in loader:
                batch = move_to_device(batch, acc.device)
                with acc.autocast():
                    if want_loss:
                        loss_sum += float(self.loss_fn(self.teacher.forward(model, batch), batch)["loss"])
                        loss_count += 1
                    for per_image in self.teacher.predict(model, batch):
                        predictions.extend(per_image)
        restore_rng_state(rng)
        model.train()
        if acc.num_processes > 1:
            predictions = gather_object(predictions)
            losses = gather_object([(loss_sum, loss_count)])
            loss_sum, loss_count = sum(x[0] for x in losses), sum(x[1] for x in losses)
        metrics: dict[str, Any] = {}
        if acc.is_main_process:
            metrics = self.evaluate_fn(_dedupe(predictions))
            if want_loss:
                metrics["val_loss"] = loss_sum / max(loss_count, 1)
        if acc.num_processes > 1:
            box = [metrics]
            broadcast_object_list(box, from_process=0)
            metrics = box[0]
        return metrics

    # -- persistence --------------------------------------------------------------------------
    def _save(self, optimizer: Any, scheduler: Any, result: LoopResult, epoch: int, batch: int, step: int,
              *, finished: bool) -> None:
        from accelerate.utils import gather_object

        acc = self.acc
        rng = capture_rng_state()
        rngs = gather_object([rng]) if acc.num_processes > 1 else [rng]
        if acc.is_main_process:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": acc.scaler.state_dict() if acc.scaler is not None else None,
                "rng": rngs,
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "early_stopping": self.ckpt.stopping.state_dict(),
                "history": result.history,
                "nonfinite_steps": result.nonfinite_steps,
                # loss sums of a part-done epoch, so its mean after a resume covers every batch
                "partial_epoch": getattr(self, "_partial", None) if batch else None,
            }
            meta = {
                "teacher": self.teacher.spec.name,
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "finished": finished,
                "best": self.ckpt.stopping.best,
                "best_epoch": self.ckpt.stopping.best_epoch,
                "last_metrics": result.history[-1] if result.history else {},
            }
            self.ckpt.save("last", self.teacher.trainable_state_dict(), state, meta)
        acc.wait_for_everyone()

    def _save_best(self) -> None:
        import shutil

        from teacherkit.atomic import atomic_replace_dir

        if self.acc.is_main_process:
            self.ckpt.copy_last_to_best()
            tmp = self.adapter_dir.with_name(f".{self.adapter_dir.name}.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            self.teacher.save_adapter(tmp)
            atomic_replace_dir(tmp, self.adapter_dir)
        self.acc.wait_for_everyone()


def _dedupe(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Padding of the last shard repeats images across ranks; keep one copy of each."""
    seen: set[Any] = set()
    out = []
    for pred in predictions:
        key = (pred.get("image_id"), pred.get("annotation_id"), tuple(pred.get("bbox", ()) or ()),
               pred.get("category_id"), pred.get("score"))
        if key in seen:
            continue
        seen.add(key)
        out.append(pred)
    return out
