"""Behaviour around the training loop: evaluation, early stopping, checkpoints, logging.

:class:`~teacherkit.training.loop.TeacherLoop` runs the steps and calls, in list order:

``after_restore``  once, after ``--resume`` loaded ``last`` (or nothing was loaded);
``after_step``     after every optimizer update, with the step's loss values;
``score_epoch``    at the end of an epoch, to add to its metrics row;
``after_epoch``    once the row is complete and recorded in the loop's ``TrainState``;
``after_train``    always, last (``finally``).

``score_epoch`` and ``after_epoch`` also run for epoch 0, the base model scored before the
first step (a fresh run only); its row has ``train_loss``, ``seconds`` and ``lr`` ``None``.

Hook state that must survive a resume lives in the loop's ``TrainState`` (early stopping
is the only one), so it is written with the checkpoint and read back from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from teacherkit.training.stopping import TrainingAborted
from teacherkit.training.tracking import DEFAULT_TRACKERS, TrackerLog, scalar_items, write_results
from teacherkit.training.validation import validate

if TYPE_CHECKING:
    from teacherkit.layout import TeacherLayout
    from teacherkit.training.loop import TeacherLoop


class Hook:
    """Does nothing at every point; subclasses override what they need."""

    def after_restore(self, loop: TeacherLoop) -> None:
        pass

    def after_step(self, loop: TeacherLoop, values: dict[str, float]) -> None:
        pass

    def score_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        pass

    def after_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        pass

    def after_train(self, loop: TeacherLoop) -> None:
        pass


class EvaluationHook(Hook):
    """Scores the validation set every epoch (see :mod:`teacherkit.training.validation`)
    and, on the main process, draws the predictions (:mod:`teacherkit.reporting.pictures`):
    the grid of the same validation images as ``last`` every epoch, as ``best`` with the
    curves when the epoch is the best so far. ``grid`` holds the last grid's pixels for
    the logging hook."""

    def __init__(self, val_set: Any, evaluate: Any) -> None:
        self.val_set = val_set
        self.evaluate = evaluate
        self.predictions: list[dict[str, Any]] | None = None
        self.pictures: Any = None
        self.grid: Any = None

    def score_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        if self.val_set is not None:
            metrics, predictions = validate(loop, self.val_set, self.evaluate)
            row.update(metrics)
            self.predictions = predictions if loop.acc.is_main_process else None

    def after_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        predictions, self.predictions, self.grid = self.predictions, None, None
        if predictions is None or not loop.acc.is_main_process:
            return
        try:
            pictures = self._pictures(loop)
            if pictures is not None:
                self.grid = pictures.write(predictions, tag="last", best=loop.improved, epoch=row["epoch"])
        except Exception as exc:  # a picture that cannot be drawn must not cost the training run
            loop.reporter.warn(f"{loop.teacher.spec.name}: prediction pictures of epoch {row['epoch']} "
                               f"not written: {type(exc).__name__}: {exc}")

    def _pictures(self, loop: TeacherLoop) -> Any:
        if self.pictures is None:
            from teacherkit.reporting.paths import ReportPaths
            from teacherkit.reporting.pictures import EvaluationPictures

            coco, images_dir = getattr(self.val_set, "coco", None), getattr(self.val_set, "images_dir", None)
            if coco is None or images_dir is None:
                return None
            spec = loop.teacher.spec
            self.pictures = EvaluationPictures(ReportPaths(loop.layout.dir), coco.to_dict(), images_dir,
                                               spec.evaluation, spec.name)
        return self.pictures if self.pictures.enabled else None


class EarlyStoppingHook(Hook):
    """Feeds the monitored metric to the loop's :class:`EarlyStopping`; marks the epoch as
    the best when it improves and asks the loop to stop when patience runs out."""

    def score_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        monitor = loop.s.monitor
        if row.get(monitor) is None and row["epoch"] == 0:  # e.g. train_loss: the base never trained,
            loop.improved = False                            # so it cannot be the best by that measure
            row["best"] = loop.stopping.best
            return
        if row.get(monitor) is None:
            raise TrainingAborted(
                f"checkpointing.monitor {monitor!r} is not a metric of {loop.teacher.spec.name}; "
                f"available: {', '.join(k for k in row if k != 'epoch')}"
            )
        loop.improved = loop.stopping.update(float(row[monitor]), row["epoch"])
        row["best"] = loop.stopping.best
        if loop.stopping.should_stop() and row["epoch"] < loop.s.epochs:
            loop.stop_training = True


class CheckpointHook(Hook):
    """Saves ``best`` (with the adapter) and then ``last`` each epoch.

    Order is what keeps them honest after a kill: ``best`` of epoch N and its adapter are
    committed before the ``last`` whose state says "best epoch N"; a kill in between leaves
    a ``last`` of epoch N-1 that still names the old best, and the resumed run redoes epoch
    N. On resume, :func:`~teacherkit.training.best.reconcile_best` repairs what a kill (or a
    hand) left inconsistent.

    Epoch 0 (the base) writes ``best`` and the adapter when it is the best, but no ``last``:
    ``last`` is where training resumes, and nothing has trained yet. A run killed before its
    first ``last`` starts afresh on ``--resume`` and scores the base again."""

    def __init__(self, layout: TeacherLayout) -> None:
        self.layout = layout

    def after_restore(self, loop: TeacherLoop) -> None:
        from teacherkit.training.best import reconcile_best

        if loop.resumed:
            reconcile_best(loop, self.layout)

    def after_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        if loop.improved:
            self.save(loop, self.layout.best, with_adapter=True)
        if row["epoch"] > 0:
            self.save(loop, self.layout.last)

    def save(self, loop: TeacherLoop, final: Path, *, with_adapter: bool = False) -> None:
        """Save the loop's state to ``final`` (every process takes part; the main one writes)."""
        from teacherkit.atomic import atomic_dir
        from teacherkit.training.checkpoint import save_checkpoint

        state = loop.capture_state()
        if loop.acc.is_main_process:
            save_checkpoint(final, loop.teacher.trainable_state_dict(), state.to_state(),
                            state.to_meta(loop.teacher.spec.name))
            if with_adapter:
                with atomic_dir(self.layout.adapter) as tmp:
                    loop.teacher.save_adapter(tmp)
        loop.acc.wait_for_everyone()


class LoggingHook(Hook):
    """Scalars and images to the trackers (``training.trackers``: TensorBoard by default),
    ``results.csv``/``results.png`` and the console's epoch rows.

    The trackers start when the hook is built, before ``--resume`` restores the RNG
    states: starting one (importing tensorboard) draws random numbers, which after the
    restore would shift the resumed run away from the uninterrupted one.

    :param hyperparameters: recorded by the trackers that keep them (MLflow, wandb, aim)."""

    def __init__(self, log_dir: Path | None, trackers: tuple[str, ...] = DEFAULT_TRACKERS,
                 hyperparameters: dict[str, Any] | None = None) -> None:
        self.tb = TrackerLog(log_dir, trackers, config=hyperparameters)

    def after_step(self, loop: TeacherLoop, values: dict[str, float]) -> None:
        step = loop.state.step
        if step % loop.s.log_every == 0:
            self.tb.scalars("train", values, step)
            self.tb.scalars("train", {"lr": loop.scheduler.get_last_lr()[0]}, step)

    def score_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        # where the schedule stands, for results.csv; the base was trained at no rate
        row["lr"] = float(loop.scheduler.get_last_lr()[0]) if row["epoch"] else None

    def after_epoch(self, loop: TeacherLoop, row: dict[str, Any]) -> None:
        board, epoch = self.tb, row["epoch"]
        metrics = {k: v for k, v in row.items() if k not in ("epoch", "seconds", "peak_mem_gib", "best", "lr")
                   and not k.startswith("train_")}
        board.scalars("val", scalar_items(metrics), epoch)
        if row["seconds"] is not None:  # epoch 0 trained nothing: no speed to log
            board.scalars("epoch", {"images_per_second": loop.epoch_images / max(row["seconds"], 1e-9),
                                    "peak_memory_gib": row["peak_mem_gib"]}, epoch)
        for hook in loop.hooks:
            if isinstance(hook, EvaluationHook) and hook.grid is not None:
                board.image("val/predictions", hook.grid, epoch)
        if loop.acc.is_main_process:
            write_results(loop.state.history, loop.layout.dir, title=loop.teacher.spec.name, figure=False)
        loop.reporter.epoch_row(display_row(row))
        if loop.stop_training:
            s, stopping = loop.s, loop.stopping
            base = " (the base)" if stopping.best_epoch == 0 else ""
            loop.reporter.line(
                f"   early stop: {s.monitor} has not improved by {s.min_delta} for {s.patience} epochs "
                f"(best {stopping.best:.4f} at epoch {stopping.best_epoch}{base})"
            )

    def after_train(self, loop: TeacherLoop) -> None:
        self.tb.close()
        if loop.acc.is_main_process and loop.state.history:
            try:  # the figure once, at the end (it takes a second; the CSV is rewritten every epoch)
                write_results(loop.state.history, loop.layout.dir, title=loop.teacher.spec.name, table=False)
            except Exception as exc:  # the run's outcome (or its real error) matters more than a figure
                loop.reporter.warn(f"{loop.teacher.spec.name}: results.png not written: {type(exc).__name__}: {exc}")


def display_row(row: dict[str, Any]) -> dict[str, Any]:
    """The columns of an epoch row worth a console column: position, losses, headline metrics."""
    keep = {"epoch", "train_loss", "seconds", "peak_mem_gib", "best"}
    out = {}
    for key, value in row.items():
        metric_like = key.split("_")[-1] in {"AP", "AP50", "mIoU", "mDice", "loss"}
        if key in keep or (isinstance(value, float) and metric_like):
            out[key] = value
    return out
