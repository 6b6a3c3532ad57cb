"""Metric history, experiment trackers (TensorBoard by default; wandb, MLflow, aim, ...
through accelerate's tracker classes), and the tables and figures of one teacher's epochs
(drawn by :mod:`teacherkit.reporting.results`)."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from teacherkit.errors import TeacherkitError

#: ``training.trackers`` when the config does not name any.
DEFAULT_TRACKERS = ("tensorboard",)
#: The package a tracker needs, where its pip name differs from the tracker's name.
TRACKER_PACKAGES = {"comet_ml": "comet-ml", "mlflow": "mlflow (or mlflow-skinny)"}
#: Characters MLflow refuses in a metric name (a class name such as "cup (red)" has some).
_MLFLOW_REFUSED = re.compile(r"[^\w\-. :/]")


class TrackerError(TeacherkitError):
    """``training.trackers`` names a tracker accelerate does not know, or one whose package
    is not installed."""


def configured_trackers(training: Any) -> list[str]:
    """``training.trackers`` of a training config section, ``["tensorboard"]`` when the
    section has no such field."""
    names = getattr(training, "trackers", None)
    return list(DEFAULT_TRACKERS if names is None else names)


def check_trackers(names: Sequence[str]) -> list[str]:
    """``names`` (repeats dropped), after checking accelerate has a tracker of each name and
    its package is installed; call it before anything is written.

    :raises TrackerError: naming the tracker, and the known ones or the package to install.
    """
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    out: list[str] = []
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise TrackerError(f"training.trackers: {name!r} is not a tracker accelerate knows "
                               f"(known: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))})")
        if name not in available:
            package = TRACKER_PACKAGES.get(name, name)
            raise TrackerError(f"training.trackers: {name!r} needs the package {package}, which is not "
                               f"installed (pip install {package.split()[0]}), or remove it from the list")
        if name not in out:
            out.append(name)
    return out


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


class TrackerLog:
    """The trackers of one teacher's run; a no-op when ``directory`` is ``None`` (every
    process but the main one).

    :param directory: ``logs/<teacher>/``: TensorBoard's event files go straight in it,
        other trackers keep their local files there (wandb) or beside it (aim's repository).
    :param trackers: accelerate tracker names (``training.trackers``).
    :param project: the project (wandb, comet) or MLflow experiment; default the
        experiment folder's name. Each teacher is one run named after the teacher.
    :param config: hyperparameters for trackers that record them; not TensorBoard, whose
        hparams would add a second run folder (the config is in ``teacher_config.yaml``).

    The trackers start here, when the logging hook is built: starting one (importing
    tensorboard) draws random numbers, which must happen before ``--resume`` restores the
    RNG states. A tracker that fails while logging (a server gone away) is named once on
    stderr and dropped; training goes on with the others.
    """

    def __init__(self, directory: Path | None, trackers: Sequence[str] = DEFAULT_TRACKERS, *,
                 project: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.trackers: list[Any] = []
        if directory is None:
            return
        names = check_trackers(trackers)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        project = project or directory.parent.parent.name or "teacherkit"
        for name in names:
            try:
                tracker = _make_tracker(name, directory, project)
                tracker.start()
                if config and name != "tensorboard":
                    tracker.store_init_configuration(config)
            except Exception as exc:  # a tracker the user named must work from the start, or say why
                self.close()
                raise TrackerError(f"training.trackers: {name} could not start: {type(exc).__name__}: {exc}") from exc
            self.trackers.append(tracker)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.trackers]

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        """``values`` as ``<prefix>/<key>`` at ``step``."""
        if values:
            self._each(_log_scalars, {f"{prefix}/{key}": value for key, value in values.items()}, step)

    def image(self, tag: str, pixels: Any, step: int) -> None:
        """An RGB ``[H, W, 3]`` uint8 picture (a prediction grid) under ``tag``, for the
        trackers that take pictures (TensorBoard, wandb, MLflow, aim)."""
        self._each(_log_image, tag, pixels, step)

    def close(self) -> None:
        """Finish every tracker (flush and close files, end the remote run); safe twice."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.finish()
            except Exception as exc:  # one tracker's failure must not hide the run's outcome
                _tracker_warning(tracker, exc)

    def _each(self, call: Any, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker, *args)
            except Exception as exc:  # a tracker is an observer: it never stops training
                self.trackers.remove(tracker)
                _tracker_warning(tracker, exc)


#: The name the training hooks know it by.
TensorBoardLog = TrackerLog


def _tracker_warning(tracker: Any, exc: BaseException) -> None:
    print(f"warning: tracker {tracker.name}: {type(exc).__name__}: {exc}; it records nothing more in this run",
          file=sys.stderr, flush=True)


def _make_tracker(name: str, directory: Path, project: str) -> Any:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    cls, run = LOGGER_TYPE_TO_CLASS[name], directory.name
    if name == "tensorboard":  # accelerate writes to <logging_dir>/<run name>, i.e. logs/<teacher>/
        return cls(run, directory.parent)
    if name == "mlflow":  # the store is MLflow's own (MLFLOW_TRACKING_URI)
        return cls(experiment_name=project, run_name=run)
    if name == "wandb":
        return cls(project, name=run, dir=str(directory))
    if name == "aim":  # one aim repository for the experiment's teachers
        return cls(f"{project}/{run}", directory.parent)
    return cls(project, directory) if cls.requires_logging_directory else cls(project)


def _log_scalars(tracker: Any, values: dict[str, float], step: int) -> None:
    if tracker.name == "mlflow":
        values = {_MLFLOW_REFUSED.sub("_", key): value for key, value in values.items()}
    tracker.log(values, step=step)


def _log_image(tracker: Any, tag: str, pixels: Any, step: int) -> None:
    import numpy as np

    pixels = np.asarray(pixels)
    if tracker.name == "tensorboard":
        tracker.log_images({tag: pixels[None]}, step=step, dataformats="NHWC")
    elif tracker.name == "wandb":
        tracker.log_images({tag: [pixels]}, step=step)
    elif tracker.name == "aim":
        tracker.log_images({tag: pixels}, step=step)
    elif tracker.name == "mlflow":
        import mlflow

        mlflow.log_image(pixels, key=_MLFLOW_REFUSED.sub("_", tag), step=step)


def write_results(history: list[dict[str, Any]], teacher_dir: Path, *, title: str, table: bool = True,
                  figure: bool = True) -> None:
    """``results.csv`` (``table``) and ``results.png`` (``figure``) of one teacher's epoch
    rows, in its folder (:class:`teacherkit.reporting.paths.ReportPaths`)."""
    from teacherkit.reporting.paths import ReportPaths
    from teacherkit.reporting.results import plot_results, write_results_csv

    paths = ReportPaths(Path(teacher_dir))
    if table:
        write_results_csv(history, paths.results_csv)
    if figure:
        plot_results(history, paths.results_png, title=title)


def write_curves(history: list[dict[str, Any]], path: Path, *, title: str, metric: str) -> None:
    """The epoch figure of ``results.png`` at ``path`` (``metric``, the monitored one, is
    named in the title)."""
    from teacherkit.reporting.results import plot_results

    plot_results(history, path, title=f"{title}; monitored: {metric}")
