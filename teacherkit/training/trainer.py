"""``TeacherTrainer``: inspect the data, pick the teachers, train each, leave a folder a
user can trust. It orchestrates; the jobs live next to it:

- :mod:`teacherkit.training.loop` trains one teacher (hooks: evaluation, early stopping,
  checkpoints, logging), :mod:`teacherkit.training.settings` resolves its settings;
- :mod:`teacherkit.training.replay` loads and mixes replay data;
- :mod:`teacherkit.training.metadata` writes ``metadata.json``;
- :class:`teacherkit.layout.ExperimentLayout` names every path of the experiment folder.

Every input is loaded and checked before the experiment folder is created or replaced.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_json
from teacherkit.data.view_records import run_view_records
from teacherkit.errors import DataError, TeacherkitError
from teacherkit.layout import CONFIG_FILE, DATASET_INFO_FILE, METADATA_FILE, ExperimentLayout
from teacherkit.training.experiment_folder import check_output_dir, prepare_output_dir
from teacherkit.training.experiment_lock import ExperimentLock
from teacherkit.training.loop import Interrupted, LoopResult, LoopSettings, StopFlag, TeacherLoop
from teacherkit.training.metadata import data_section, file_fingerprint, summary_row, teacher_section, write_metadata
from teacherkit.training.metadata import versions as _versions
from teacherkit.training.replay import ReplaySource, replay_paths

__all__ = ["CONFIG_FILE", "DATASET_INFO_FILE", "METADATA_FILE", "TeacherTrainer", "file_fingerprint",
           "prepare_output_dir", "_versions"]


class TeacherTrainer:
    """Train every teacher the data can train (seed API).

    :param train_data_path: COCO JSON of the training set.
    :param val_data_path: COCO JSON evaluated each epoch; ``None`` evaluates on the training
        set (and says so).
    :param image_dir: folder the training ``file_name`` values are relative to (default: the
        JSON's folder).
    :param output_dir: the experiment folder.
    :param config: a resolved config (``host.config_model()`` instance), or ``None`` for the
        defaults.
    :param models: narrow the teachers to these names (never widen past what the data allows).
    """

    def __init__(
        self,
        train_data_path: str | Path,
        val_data_path: str | Path | None = None,
        image_dir: str | Path | None = None,
        output_dir: str | Path = "runs/experiment",
        config: Any = None,
        *,
        val_image_dir: str | Path | None = None,
        models: list[str] | None = None,
        resume: bool = False,
        overwrite: bool = False,
        quiet: bool = False,
        host: Any = None,
        stop_after_steps: int | None = None,
    ) -> None:
        from teacherkit.plugins import get_plugin_manager

        self.host = host or get_plugin_manager()
        self.train_path = Path(train_data_path)
        self.val_path = Path(val_data_path) if val_data_path else None
        self.image_dir = Path(image_dir) if image_dir else self.train_path.parent
        self.val_image_dir = Path(val_image_dir) if val_image_dir else (
            self.val_path.parent if self.val_path else self.image_dir)
        if image_dir and not val_image_dir and self.val_path:
            self.val_image_dir = Path(image_dir)
        self.output = Path(output_dir)
        self.layout = ExperimentLayout(self.output)
        self.models = models
        self.resume = resume
        self.overwrite = overwrite
        self.quiet = quiet
        self.stop_after_steps = stop_after_steps
        self.config = config if config is not None else self.host.config_model()()
        self.replay: ReplaySource | None = None
        self.monitors: dict[str, str] = {}
        self.fingerprints: dict[str, str | None] = {}
        self.selection: list[str] | None = None  # the teachers chosen, recorded for --resume
        self._main = True  # whether this process reports (set by train())

    # -- public --------------------------------------------------------------------------------
    def select_teachers(self, info: Any) -> list[Any]:
        specs = self.host.teachers_for(info.annotation_kinds)
        specs = [s for s in specs if self.config.teacher(s.name).enabled]
        if self.models:
            available = {s.name: s for s in specs}
            chosen = []
            for name in self.models:
                spec = self.host.teacher(name)  # installed? (error lists installed teachers)
                if name not in available:
                    raise TeacherkitError(
                        f"--models {name}: the training data has no '{spec.learns_from}' annotations "
                        f"(kinds present: {', '.join(info.annotation_kinds) or 'none'}), so {name} cannot train"
                    )
                chosen.append(available[name])
            specs = chosen
        if not specs:
            raise TeacherkitError(
                f"{self.train_path}: no installed teacher learns from the annotation kinds present "
                f"({', '.join(info.annotation_kinds) or 'none'}); installed: "
                + ", ".join(f"{s.name} ({s.learns_from})" for s in self.host.teachers().values())
            )
        return specs

    def train(self) -> dict[str, LoopResult]:
        """Check every input, then (holding the folder's lock) create or replace the
        experiment and train each teacher. A refusal leaves the folder as it was."""
        from teacherkit.training.console import Reporter

        accelerator = self._accelerator()
        main = accelerator.is_main_process
        reporter = Reporter(quiet=self.quiet, enabled=main)
        self._main = main
        check_output_dir(self.output, resume=self.resume, overwrite=self.overwrite)  # cheap: before any load
        if self.resume:
            from teacherkit.config import load_config_yaml

            self.config = load_config_yaml(self.host.config_model(), self.layout.config)
        started = time.time()
        train_coco, val_coco, info, teachers = self._load_inputs(reporter)
        lock = ExperimentLock(self.output)
        wrote = False
        try:
            if main:  # every input is checked: only now create (or replace) the experiment folder
                lock.acquire()
                wrote = True
                self._write_experiment_files(info, teachers, accelerator, started)
            accelerator.wait_for_everyone()
            return self._train_all(train_coco, val_coco, info, teachers, accelerator, reporter, started)
        finally:
            lock.release()
            if lock.created_folder and not wrote and self.output.is_dir() and not any(self.output.iterdir()):
                self.output.rmdir()  # refused before writing: leave no empty folder behind

    def _train_all(self, train_coco: Any, val_coco: Any, info: Any, teachers: list[Any], accelerator: Any,
                   reporter: Any, started: float) -> dict[str, LoopResult]:
        main = accelerator.is_main_process
        reporter.line(
            f"data: {info.num_images} images, {info.num_annotations} annotations, {info.num_classes} classes; "
            f"kinds: {', '.join(info.annotation_kinds)}; teachers: {', '.join(t.name for t in teachers)}"
        )
        if self.replay is not None:
            reporter.line(self.replay.describe(info.num_images))
        results: dict[str, LoopResult] = {}
        reports: dict[str, str] = {}
        status = "finished"
        try:
            with StopFlag(self.stop_after_steps) as stop:
                for spec in teachers:
                    if stop.requested:  # a signal between two teachers: the next one does not start
                        raise stop.interrupted(f"stopped before training {spec.name}; continue with --resume")
                    results[spec.name], reports[spec.name] = self._train_teacher(
                        spec, info, train_coco, val_coco, accelerator, reporter, stop)
                    accelerator.free_memory()
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
            raise
        finally:
            if main:
                self._write_metadata(info, teachers, accelerator, started, status,
                                     teacher_section(teachers, results, reports))
        if main:
            reporter.summary_table("results", [summary_row(n, r, self.monitors.get(n)) for n, r in results.items()])
            reporter.line(f"experiment saved to {self.output}")
        return results

    # -- set-up --------------------------------------------------------------------------------
    def _accelerator(self) -> Any:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        training = self.config.training
        if training.device == "cuda" and not torch.cuda.is_available():
            raise TeacherkitError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        return Accelerator(
            # accelerate only sets up multi-process CPU training (gloo) when told it is on the CPU
            cpu=training.device == "cpu" or not torch.cuda.is_available(),
            mixed_precision=self._mixed_precision(),
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=training.ddp_find_unused_parameters)],
        )

    def _load_inputs(self, reporter: Any) -> tuple[Any, Any, Any, list[Any]]:
        """Load and check the data (``teacherkit validate``'s checks), the teachers it
        selects, what ``--resume`` recorded, the base weights and the replay file; nothing is
        written yet."""
        from teacherkit.data.coco import load_coco
        from teacherkit.data.inspect import inspect_dataset
        from teacherkit.training.preflight import (
            check_dataset,
            check_resume_data,
            check_resume_selection,
        )
        from teacherkit.training.tracking import check_trackers, configured_trackers

        replay_paths(self.config.training.replay)  # a missing replay file fails before the big loads
        check_trackers(configured_trackers(self.config.training))  # a named tracker must be installed

        def warn(text: str) -> None:  # one line, unwrapped, from the main process only
            if self._main:
                print(f"warning: {text}", file=sys.stderr, flush=True)

        check_dataset(self.train_path, self.image_dir, "--data", warn)
        if self.val_path:
            check_dataset(self.val_path, self.val_image_dir, "--val", warn)
        train_coco = load_coco(self.train_path)
        val_coco = load_coco(self.val_path) if self.val_path else None
        info = inspect_dataset(train_coco, host=self.host)
        if val_coco is None:
            reporter.warn("no --val given: metrics are computed on the training images and will look optimistic")
        else:
            self._check_val_categories(train_coco, val_coco)
        self.fingerprints = {"train": file_fingerprint(self.train_path),
                             "val": file_fingerprint(self.val_path) if self.val_path else None}
        recorded = None
        if self.resume:
            recorded = check_resume_data(self.layout, class_names=list(info.class_names), given={
                "train": (self.train_path, self.fingerprints["train"]),
                "val": (self.val_path, self.fingerprints["val"])})
        models_flag = self.models
        if self.resume and not models_flag and recorded is not None:
            self.models = recorded  # a teacher excluded at the start stays excluded
        teachers = self.select_teachers(info)
        if self.resume and models_flag:
            check_resume_selection(recorded, [t.name for t in teachers], models_flag)
        self.selection = [t.name for t in teachers]
        for spec in teachers:  # base weights reachable: the plugin looks for files, loads nothing
            self.host.check_base(spec, self._teacher_config(spec, saved_base=False))
        self.replay = ReplaySource.load(self.config.training.replay, train_coco, self.train_path, self.host)
        return train_coco, val_coco, info, teachers

    def _write_experiment_files(self, info: Any, teachers: list[Any], accelerator: Any, started: float) -> None:
        """The first writes of a run: the folder (old experiment's files replaced on
        --overwrite), marker, config, dataset info, and metadata.json with status
        ``running`` (its fingerprints and selection are what --resume checks)."""
        from teacherkit.config import with_dataset_facts

        prepare_output_dir(self.output, resume=self.resume, overwrite=self.overwrite)
        if not self.resume:
            self.config = with_dataset_facts(self.config, info)
            self.config.save(self.layout.config)
            atomic_write_json(self.layout.dataset_info, info.to_dict(), indent=2)
        self._write_metadata(info, teachers, accelerator, started, "running",
                             teacher_section(teachers, {}, {}))

    def _write_metadata(self, info: Any, teachers: list[Any], accelerator: Any, started: float, status: str,
                        section: dict[str, Any]) -> None:
        write_metadata(self.layout.metadata, host=self.host, accelerator=accelerator, started=started,
                       status=status, teachers=section, selection=None if self.resume else self.selection,
                       data=data_section(self.train_path, self.val_path, self.replay, info, self.fingerprints,
                                         images={"train": self.image_dir, "val": self.val_image_dir}))

    # -- one teacher ---------------------------------------------------------------------------
    def _train_teacher(self, spec: Any, info: Any, train_coco: Any, val_coco: Any, accelerator: Any,
                       reporter: Any, stop: StopFlag) -> tuple[LoopResult, str]:
        from teacherkit.evaluation.run import evaluator
        from teacherkit.out_of_memory import is_out_of_memory

        teacher, tcfg = self._load_teacher(spec, info, accelerator)
        train_set, val_set, val_source = self._datasets(spec, tcfg, teacher, info, train_coco, val_coco, reporter,
                                                        rank=accelerator.process_index)
        report = teacher.parameter_report()
        loss_fn = self.host.make_loss(spec, tcfg, teacher)
        found = self._auto_batch_size(spec, tcfg, teacher, loss_fn, train_set, accelerator, reporter)
        settings = LoopSettings.from_config(self.config, spec, batch_size=found, processes=accelerator.num_processes)
        self.monitors[spec.name] = settings.monitor
        reporter.start_teacher(spec.name, report.summary(), len(train_set), len(val_set), settings.epochs,
                               str(accelerator.device))
        if self.config.training.scale_lr:
            reporter.line(f"   lr {settings.lr:.3g} (training.scale_lr: {tcfg.lr or self.config.training.lr:.3g} "
                          f"x {settings.batch_size * settings.grad_accumulation * accelerator.num_processes} images "
                          f"per update / {self.config.training.scale_lr_reference})")
        layout = self.layout.teacher(spec.name)
        loop = TeacherLoop(
            teacher=teacher, loss_fn=loss_fn, train_set=train_set,
            val_set=val_set, evaluate=evaluator(spec, val_source.to_dict()), settings=settings,
            accelerator=accelerator, layout=layout, reporter=reporter, stop=stop, resume=self.resume,
        )
        try:
            result = loop.run()
        except Exception as exc:  # one message with what to try instead of the allocator's statistics
            if not is_out_of_memory(exc):
                raise
            from teacherkit.out_of_memory import kept_checkpoint, out_of_memory_error, training_advice

            raise out_of_memory_error(
                spec.name, settings.batch_size, accelerator.device, doing=f"training (epoch {loop.state.epoch + 1})",
                advice=training_advice(spec.name, tcfg, settings.batch_size), kept=kept_checkpoint(layout.last),
            ) from exc
        finally:  # the loop has stopped its workers: nothing writes records any more
            run_view_records(layout.dir, accelerator.process_index).remove()
        if accelerator.is_main_process and result.history:
            from teacherkit.training.tracking import write_curves

            write_curves(result.history, layout.plot, title=f"{spec.name} ({report.mode})", metric=settings.monitor)
        return result, report.summary()

    def _auto_batch_size(self, spec: Any, tcfg: Any, teacher: Any, loss_fn: Any, train_set: Any, accelerator: Any,
                         reporter: Any) -> int | None:
        """With ``--batch-size auto``: the largest batch that fits, recorded as the teacher's
        ``batch_size`` in the saved config (so ``--resume`` trains with it); else ``None``."""
        from teacherkit.training.settings import configured_batch_size

        if configured_batch_size(self.config, spec.name) != "auto":
            return None
        from teacherkit.out_of_memory import out_of_memory_error, training_advice
        from teacherkit.training.batch_size import search_batch_size

        search = search_batch_size(teacher, loss_fn, train_set, accelerator)
        if not search.chosen:
            raise out_of_memory_error(spec.name, 1, accelerator.device, doing="looking for a batch size that fits "
                                      "(--batch-size auto)", advice=training_advice(spec.name, tcfg, 1),
                                      kept="Nothing was trained or saved for this teacher.")
        reporter.line(f"{spec.name}: --batch-size auto chose {search.chosen} ({search.describe()})")
        setattr(self.config.teachers, spec.name, self.config.teacher(spec.name).model_copy(
            update={"batch_size": search.chosen}))
        if self._main:
            self.config.save(self.layout.config)
        return search.chosen

    def _teacher_config(self, spec: Any, saved_base: bool) -> Any:
        """The teacher's config section, with ``base`` pointing at the base folder this
        experiment saved when it has one (``saved_base``, or any on ``--resume``)."""
        tcfg = self.config.teacher(spec.name)
        base = self.layout.teacher(spec.name).base
        if saved_base or (self.resume and base.exists()):
            tcfg = tcfg.model_copy(update={"base": str(base)})  # the exact base this run started from
        return tcfg

    def _load_teacher(self, spec: Any, info: Any, accelerator: Any) -> tuple[Any, Any]:
        import torch

        tcfg = self._teacher_config(spec, (self.layout.teacher(spec.name).base / "config.json").exists())
        layout = self.layout.teacher(spec.name)
        torch.manual_seed(self.config.training.seed)  # a 'tiny' base is the same random init for a seed
        teacher = self.host.load_model(spec, tcfg, info, layout.dir)
        if accelerator.is_main_process and tcfg.base == "tiny":
            teacher.save_base(layout.base)
        return teacher, tcfg

    def _datasets(self, spec: Any, tcfg: Any, teacher: Any, info: Any, train_coco: Any, val_coco: Any,
                  reporter: Any, rank: int = 0) -> tuple[Any, Any, Any]:
        """``(training set, with replay when on; validation set; the COCO it scores against)``."""
        from teacherkit.training.dataset import CocoTrainDataset

        cfg = self.config
        preprocessor = self.host.make_preprocessor(spec, tcfg, teacher)
        augment = self.host.make_augmentation(cfg.augmentation, info) if cfg.augmentation.enabled else None
        # the records are used only with augmented views and a preprocessor that can do
        # without pixels: SampleDataset decides, in one place
        kwargs = {"info": info, "preprocessor": preprocessor, "learns_from": spec.learns_from, "train": True,
                  "augment": augment, "seed": cfg.training.seed, "augment_views": _views(teacher),
                  "with_masks": spec.learns_from == "masks" or (augment is not None and info.has_masks),
                  "view_records": run_view_records(self.layout.teacher(spec.name).dir, rank, preprocessor)}
        train_set = CocoTrainDataset(train_coco, self.image_dir, **kwargs)
        if self.replay is not None:
            train_set = self.replay.mix(spec, train_set, kwargs, reporter)
        val_source, val_dir = (val_coco, self.val_image_dir) if val_coco is not None else (train_coco, self.image_dir)
        val_set = CocoTrainDataset(val_source, val_dir, **{**kwargs, "train": False, "augment": None,
                                                           "with_masks": spec.learns_from == "masks"})
        return train_set, val_set, val_source

    # -- helpers -------------------------------------------------------------------------------
    def _mixed_precision(self) -> str:
        import torch

        choice = self.config.training.mixed_precision
        if choice != "auto":
            return choice
        on_cuda = self.config.training.device != "cpu" and torch.cuda.is_available()
        return "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "no"

    def _check_val_categories(self, train: Any, val: Any) -> None:
        train_ids = {c.id for c in train.categories}
        unknown = sorted({c.id for c in val.categories} - train_ids)
        if unknown:
            raise DataError(
                f"{self.val_path}: categories {unknown} are not in the training file {self.train_path}; "
                f"the teachers can only be scored on classes they were trained on"
            )


def _views(teacher: Any) -> int | None:
    """:meth:`teacherkit.teachers.Teacher.augmentation_views` of a teacher that has it (a
    plugin's teacher need not derive from :class:`~teacherkit.teachers.Teacher`)."""
    views = getattr(teacher, "augmentation_views", None)
    return views() if callable(views) else None
