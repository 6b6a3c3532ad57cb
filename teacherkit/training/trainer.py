"""``TeacherTrainer``: inspect the data, pick the teachers, train each, leave a folder a
user can trust.

Experiment folder (nothing is written outside it; inputs are never modified)::

    teacher_config.yaml            resolved config; --config of it reproduces the run
    metadata.json                  versions, dataset fingerprints, device, timings, metrics
    dataset_info.json              classes and the category id → index mapping
    teachers/<name>/adapter/       PEFT adapter of the best epoch (what you keep)
    teachers/<name>/base/          base weights when they cannot be re-obtained by name (tiny)
    teachers/<name>/checkpoints/{best,last}/
    logs/<name>/                   TensorBoard scalars
    plots/<name>.png               loss and metric curves
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from teacherkit.atomic import atomic_write_json, atomic_write_text
from teacherkit.errors import DataError, OutputExistsError, TeacherkitError
from teacherkit.training.dataset import REPLAY_STREAM, ReplayMix, replay_count, sample_seed
from teacherkit.training.loop import Interrupted, LoopResult, LoopSettings, StopFlag, TeacherLoop

CONFIG_FILE = "teacher_config.yaml"
METADATA_FILE = "metadata.json"
DATASET_INFO_FILE = "dataset_info.json"


def file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _versions(host: Any) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("teacherkit", "torch", "transformers", "peft", "accelerate", "pycocotools", "albumentations"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    for info in host.infos:
        if info.distribution and info.distribution not in out:
            out[info.distribution] = info.version
    return out


def prepare_output_dir(output: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber: an existing non-empty folder needs --resume or --overwrite, and
    --overwrite only deletes a folder that is a teacherkit experiment."""
    output = Path(output)
    if resume:
        if not (output / CONFIG_FILE).is_file():
            raise DataError(f"--resume: {output} is not a teacherkit experiment (no {CONFIG_FILE})")
        return
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"output folder {output} already exists; use --resume to continue it or --overwrite to replace it"
            )
        if not ((output / CONFIG_FILE).exists() or (output / METADATA_FILE).exists()):
            raise OutputExistsError(
                f"--overwrite: {output} is not empty and is not a teacherkit experiment; refusing to delete it"
            )
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)


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
        self.models = models
        self.resume = resume
        self.overwrite = overwrite
        self.quiet = quiet
        self.stop_after_steps = stop_after_steps
        model = self.host.config_model()
        self.config = config if config is not None else model()

    # -- public --------------------------------------------------------------------------------
    def select_teachers(self, info: Any) -> list[Any]:
        specs = self.host.teachers_for(info.annotation_kinds)
        specs = [s for s in specs if self.config.teacher(s.name).enabled]
        if self.models:
            available = {s.name: s for s in specs}
            chosen = []
            for name in self.models:
                self.host.teacher(name)  # installed? (error lists installed teachers)
                if name not in available:
                    spec = self.host.teacher(name)
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
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from teacherkit.data.coco import load_coco
        from teacherkit.data.inspect import inspect_dataset
        from teacherkit.training.console import Reporter

        cfg = self.config
        if cfg.training.device == "cuda" and not torch.cuda.is_available():
            raise TeacherkitError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        accelerator = Accelerator(
            # accelerate only sets up multi-process CPU training (gloo) when told it is on the CPU
            cpu=cfg.training.device == "cpu" or not torch.cuda.is_available(),
            mixed_precision=self._mixed_precision(),
            kwargs_handlers=[DistributedDataParallelKwargs(
                find_unused_parameters=cfg.training.ddp_find_unused_parameters)],
        )
        main = accelerator.is_main_process
        reporter = Reporter(quiet=self.quiet, enabled=main)
        if not self.resume:
            self._replay_paths()  # a missing replay file fails before --overwrite deletes anything
        if main:
            prepare_output_dir(self.output, resume=self.resume, overwrite=self.overwrite)
        accelerator.wait_for_everyone()
        if self.resume:
            from teacherkit.config import load_config_yaml

            self.config = cfg = load_config_yaml(self.host.config_model(), self.output / CONFIG_FILE)

        started = time.time()
        train_coco = load_coco(self.train_path)
        val_coco = load_coco(self.val_path) if self.val_path else None
        info = inspect_dataset(train_coco, host=self.host)
        if val_coco is None:
            reporter.warn("no --val given: metrics are computed on the training images and will look optimistic")
        else:
            self._check_val_categories(train_coco, val_coco)
        teachers = self.select_teachers(info)
        self._replay = self._load_replay(train_coco)
        if main and not self.resume:
            cfg.save(self.output / CONFIG_FILE)
            atomic_write_json(self.output / DATASET_INFO_FILE, info.to_dict(), indent=2)
        reporter.line(
            f"data: {info.num_images} images, {info.num_annotations} annotations, {info.num_classes} classes; "
            f"kinds: {', '.join(info.annotation_kinds)}; teachers: {', '.join(t.name for t in teachers)}"
        )
        if self._replay is not None:
            replay_cfg = cfg.training.replay
            reporter.line(
                f"replay: {replay_count(info.num_images, replay_cfg.fraction)} images per epoch "
                f"(fraction {replay_cfg.fraction:g}) drawn from {len(self._replay['coco'].images)} in "
                f"{self._replay['path']}; kinds: {', '.join(self._replay['kinds']) or 'none'}"
            )
        results: dict[str, LoopResult] = {}
        reports: dict[str, str] = {}
        self._monitors: dict[str, str] = {}
        status = "finished"
        try:
            with StopFlag(self.stop_after_steps) as stop:
                for spec in teachers:
                    results[spec.name], reports[spec.name] = self._train_teacher(
                        spec, info, train_coco, val_coco, accelerator, reporter, stop)
                    accelerator.free_memory()
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted)) else "failed"
            raise
        finally:
            if main:
                self._write_metadata(info, teachers, results, reports, accelerator, started, status)
        if main:
            reporter.summary_table("results", [self._summary_row(n, r, self._monitors.get(n))
                                               for n, r in results.items()])
            reporter.line(f"experiment saved to {self.output}")
        return results

    # -- one teacher ---------------------------------------------------------------------------
    def _train_teacher(self, spec: Any, info: Any, train_coco: Any, val_coco: Any, accelerator: Any,
                       reporter: Any, stop: StopFlag) -> tuple[LoopResult, str]:
        import torch

        from teacherkit.training.checkpoint import CheckpointManager
        from teacherkit.training.dataset import CocoTrainDataset

        cfg = self.config
        tcfg = cfg.teacher(spec.name)
        teacher_dir = self.output / "teachers" / spec.name
        base_dir = teacher_dir / "base"
        if (base_dir / "config.json").exists() or (self.resume and base_dir.exists()):
            tcfg = tcfg.model_copy(update={"base": str(base_dir)})  # the exact base this run started from
        torch.manual_seed(cfg.training.seed)  # a 'tiny' base is the same random init for a seed
        teacher = self.host.load_model(spec, tcfg, info, teacher_dir)
        if accelerator.is_main_process and tcfg.base == "tiny":
            teacher.save_base(base_dir)
        preprocessor = self.host.make_preprocessor(spec, tcfg, teacher)
        loss_fn = self.host.make_loss(spec, tcfg, teacher)
        augment = self.host.make_augmentation(cfg.augmentation, info) if cfg.augmentation.enabled else None
        with_masks = spec.learns_from == "masks" or (augment is not None and info.has_masks)
        common = {"learns_from": spec.learns_from, "with_masks": with_masks, "seed": cfg.training.seed}
        train_set = CocoTrainDataset(train_coco, self.image_dir, info, preprocessor, train=True, augment=augment,
                                     **common)
        train_set = self._with_replay(spec, train_set, info, preprocessor, augment, common, reporter)
        val_source, val_dir = (val_coco, self.val_image_dir) if val_coco is not None else (train_coco, self.image_dir)
        val_set = CocoTrainDataset(val_source, val_dir, info, preprocessor, train=False,
                                   **{**common, "with_masks": spec.learns_from == "masks"})
        report = teacher.parameter_report()
        monitor = cfg.checkpointing.monitor or spec.primary_metric
        if monitor == "loss":
            monitor = "val_loss"
        mode = cfg.checkpointing.mode or (spec.metric_mode if monitor == spec.primary_metric or
                                          spec.primary_metric == "loss" else "max")
        if monitor.endswith("loss") and cfg.checkpointing.mode is None:
            mode = "min"
        self._monitors[spec.name] = monitor
        settings = LoopSettings(
            epochs=tcfg.epochs or cfg.training.epochs,
            batch_size=tcfg.batch_size or cfg.training.batch_size,
            lr=tcfg.lr or cfg.training.lr,
            weight_decay=cfg.training.weight_decay,
            warmup_ratio=cfg.training.warmup_ratio,
            grad_accumulation=cfg.training.grad_accumulation,
            grad_clip=cfg.training.grad_clip,
            num_workers=cfg.training.num_workers,
            seed=cfg.training.seed,
            max_nonfinite_steps=cfg.training.max_nonfinite_steps,
            log_every=cfg.training.log_every,
            monitor=monitor,
            mode=mode,
            patience=cfg.checkpointing.patience,
            min_delta=cfg.checkpointing.min_delta,
        )
        gt = val_source.to_dict()
        evaluate = _evaluator(spec.evaluation, gt)
        reporter.start_teacher(spec.name, report.summary(), len(train_set), len(val_set), settings.epochs,
                               str(accelerator.device))
        loop = TeacherLoop(
            teacher=teacher, loss_fn=loss_fn, train_set=train_set, val_set=val_set, evaluate=evaluate,
            settings=settings, accelerator=accelerator,
            checkpoints=CheckpointManager(teacher_dir / "checkpoints"),
            adapter_dir=teacher_dir / "adapter", log_dir=self.output / "logs" / spec.name,
            reporter=reporter, stop=stop, resume=self.resume,
        )
        result = loop.run()
        if accelerator.is_main_process and result.history:
            from teacherkit.training.tracking import write_curves

            write_curves(result.history, self.output / "plots" / f"{spec.name}.png",
                         title=f"{spec.name} ({report.mode})", metric=monitor)
        return result, report.summary()

    # -- replay --------------------------------------------------------------------------------
    def _load_replay(self, train_coco: Any) -> dict[str, Any] | None:
        """The replay file of ``training.replay`` with the training file's categories, or
        ``None`` when replay is off."""
        from teacherkit.data.coco import load_coco
        from teacherkit.data.inspect import inspect_dataset
        from teacherkit.training.dataset import remap_replay

        paths = self._replay_paths()
        if paths is None:
            return None
        path, images = paths
        coco = remap_replay(load_coco(path), path, list(train_coco.categories), self.train_path)
        kinds = inspect_dataset(coco, host=self.host).annotation_kinds
        return {"path": path, "images": images, "coco": coco, "kinds": kinds}

    def _replay_paths(self) -> tuple[Path, Path] | None:
        """``(replay JSON, its image folder)``, checked to exist; ``None`` when replay is off."""
        replay_cfg = self.config.training.replay
        if not replay_cfg.data:
            return None
        path = Path(replay_cfg.data)
        if not path.is_file():
            raise DataError(f"training.replay.data {path}: file not found")
        images = Path(replay_cfg.images) if replay_cfg.images else path.parent
        if not images.is_dir():
            raise DataError(f"training.replay.images {images}: folder not found")
        return path, images

    def _with_replay(self, spec: Any, train_set: Any, info: Any, preprocessor: Any, augment: Any,
                     common: dict[str, Any], reporter: Any) -> Any:
        """``train_set`` mixed with the replay images (see :class:`ReplayMix`), when replay is on
        and the replay file has what this teacher learns from."""
        from teacherkit.training.dataset import CocoTrainDataset

        replay = self._replay
        if replay is None:
            return train_set
        if spec.learns_from not in replay["kinds"]:
            reporter.warn(f"replay: {replay['path']} has no '{spec.learns_from}' annotations; "
                          f"{spec.name} trains without replay")
            return train_set
        seed = self.config.training.seed
        replay_set = CocoTrainDataset(replay["coco"], replay["images"], info, preprocessor, train=True,
                                      augment=augment, **{**common, "seed": sample_seed(seed, REPLAY_STREAM, 0)})
        per_epoch = replay_count(len(train_set), self.config.training.replay.fraction)
        return ReplayMix(train_set, replay_set, per_epoch=per_epoch, seed=seed)

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

    def _replay_metadata(self) -> dict[str, Any] | None:
        replay = getattr(self, "_replay", None)
        if replay is None:
            return None
        return {"path": str(replay["path"]), "fingerprint": file_fingerprint(replay["path"]),
                "images": str(replay["images"]), "num_images": len(replay["coco"].images),
                "fraction": self.config.training.replay.fraction}

    @staticmethod
    def _summary_row(name: str, result: LoopResult, monitor: str | None = None) -> dict[str, Any]:
        last = result.history[-1] if result.history else {}
        row: dict[str, Any] = {"teacher": name, "epochs": result.epochs_run}
        if "train_loss" in last:
            row["train loss"] = last["train_loss"]
        if monitor:
            row["metric"] = monitor
            row["last"] = last.get(monitor, "-")
            row["best"] = result.best_metric if result.best_metric is not None else "-"
            row["best epoch"] = result.best_epoch or "-"
        row["img/s"] = round(result.images_per_second, 1)
        return row

    def _write_metadata(self, info: Any, teachers: list[Any], results: dict[str, LoopResult],
                       reports: dict[str, str], accelerator: Any, started: float, status: str) -> None:
        path = self.output / METADATA_FILE
        previous = json.loads(path.read_text()) if path.exists() else {}
        data = {
            "teacherkit_metadata_version": 1,
            "status": status,
            "command": sys.argv,
            "versions": _versions(self.host),
            "device": {"type": accelerator.device.type, "name": _device_name(accelerator.device),
                       "num_processes": accelerator.num_processes,
                       "mixed_precision": accelerator.mixed_precision},
            "data": {
                "train": {"path": str(self.train_path), "fingerprint": file_fingerprint(self.train_path)},
                "val": {"path": str(self.val_path), "fingerprint": file_fingerprint(self.val_path)}
                if self.val_path else None,
                "replay": self._replay_metadata(),
                "num_images": info.num_images, "num_annotations": info.num_annotations,
                "classes": info.class_names, "annotation_kinds": info.annotation_kinds,
            },
            "teachers": {
                spec.name: {
                    "parameters": reports.get(spec.name),
                    **({k: v for k, v in asdict(results[spec.name]).items() if k != "history"}
                       if spec.name in results else {"status": "not run"}),
                    "final_metrics": results[spec.name].history[-1] if spec.name in results and
                    results[spec.name].history else None,
                }
                for spec in teachers
            },
            "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))),
            "seconds_this_run": round(time.time() - started, 2),
        }
        atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def _evaluator(kind: str, gt: dict[str, Any]) -> Any:
    def evaluate(predictions: list[dict[str, Any]]) -> dict[str, Any]:
        if kind == "bbox":
            from teacherkit.evaluation import bbox_metrics

            return bbox_metrics(gt, predictions)
        if kind == "prompted_mask":
            from teacherkit.evaluation import prompted_mask_metrics

            return prompted_mask_metrics(gt, predictions)
        return {}

    return evaluate
