"""Pseudo-labels for a folder of images: box teacher → mask teacher → one COCO file.

Every image of ``--images`` is accounted for in the output: labelled (in ``images``), or
listed in ``info.images_failed`` as ``{"file_name", "reason"}`` (unreadable, too many pixels
to decode safely, a link leaving the folder, ...); ``info.images_total`` counts both.

Several processes (``torchrun``, ``accelerate launch``) share the work: image ``i`` of the
sorted list goes to rank ``i % world_size``. Each process appends one JSON record per image
to its own shard (``<output>.partial.jsonl`` for rank 0, ``<output>.partial-<r>.jsonl`` for
rank ``r``; fsynced per batch), so ``--resume`` continues after a crash, a full disk, Ctrl-C
or a killed process, with any number of processes. A record cut by a crash (and anything
after it) is truncated away, with a warning, before appending; the images it named are
labelled again. When every shard is complete, rank 0 streams them into the COCO file
(:mod:`teacherkit.inference.label_coco`: same ids and order whatever the number of
processes; memory does not grow with the number of images), written atomically, and only
then are the shards removed.

The images are read (and made into the box teacher's inputs) by DataLoader workers
(:mod:`teacherkit.inference.label_loader`); the output is the same whatever their number.
What decides the labels is recorded next to the shards
(:mod:`teacherkit.inference.label_settings`): ``--resume`` with other settings is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teacherkit.errors import (
    DataError,
    OutputError,
    OutputExistsError,
    TeacherkitError,
    check_output_file,
    describe_os_error,
)
from teacherkit.inference.label_batch import Labeller, label_or_explain
from teacherkit.inference.label_coco import write_coco
from teacherkit.inference.label_dist import Ranks, process_group, ranks_from_env, wait_for_all
from teacherkit.inference.label_loader import default_workers, image_batches
from teacherkit.inference.label_partial import (
    PartialLog,
    cut_torn_tails,
    done_names,
    open_shards,
    partial_path,
    read_partial,
    shard_paths,
)
from teacherkit.inference.label_settings import (
    check_resumed_settings,
    label_settings,
    read_settings,
    settings_path,
    write_settings,
)
from teacherkit.inference.label_thresholds import ScoreThresholds

__all__ = ["LabelReport", "PartialLog", "check_label_output", "label_images", "list_images", "partial_path",
           "read_partial"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class LabelReport:
    output: Path
    images: int = 0
    labelled: int = 0
    annotations: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason): info.images_failed
    resumed_from: int = 0
    with_masks: bool = False
    empty_masks: int = 0  # boxes whose SAM mask came out empty (kept as boxes without segmentation)


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--images {folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def check_label_output(output: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse, before any work, an ``--output`` that exists (without ``--overwrite``), is a
    folder, or cannot be written, and a partial run (any shard) not asked to resume."""
    partial = partial_path(output)
    check_output_file(output, "--output")
    if partial.is_dir():
        raise OutputError(f"--output {output}: {partial} is a folder; remove it")
    if output.exists() and not overwrite:
        raise OutputExistsError(f"--output {output} already exists; use --overwrite to replace it")
    partial = partial_files(output)
    if partial and not resume:
        raise OutputExistsError(f"{partial[0]} holds a partial run; continue it with --resume or delete "
                                f"{'it' if len(partial) == 1 else f'it and the other {len(partial) - 1} file(s)'}")


def partial_files(output: Path) -> list[Path]:
    """Every file of a partial run of ``output``: its shards, then its settings file."""
    settings = settings_path(output)
    return shard_paths(output) + ([settings] if settings.exists() else [])


def outside_links(files: list[Path], folder: Path) -> set[Path]:
    """Files under ``folder`` that are links to files outside it (refused unless allowed)."""
    from teacherkit.data.image_files import outside_images_allowed

    if outside_images_allowed():
        return set()
    root = Path(folder).resolve()
    return {f for f in files if not f.resolve().is_relative_to(root)}


def label_images(
    experiment: Any,
    images_dir: Path,
    output: Path,
    *,
    classes: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 4,
    resume: bool = False,
    overwrite: bool = False,
    adapter_scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    score_thresholds: ScoreThresholds | None = None,
    ranks: Ranks | None = None,
    workers: int | None = None,
) -> LabelReport:
    """Label every image under ``images_dir`` and write a COCO file to ``output`` (see the
    module docstring for what it holds and how ``resume`` works). ``score_thresholds``:
    the cut applied to the box teacher's scores (``None``: none). ``ranks``: this process
    among several (default: from the launcher's environment); every process calls this
    with the same arguments, and only rank 0's report has the merged counts. ``workers``:
    processes reading the images (0: this one; default: :func:`default_workers`).

    :raises OutputError: ``output`` cannot be written (checked before any work; a write
        failing later keeps the shards for ``--resume``).
    :raises SettingsChangedError: ``resume`` with settings other than the partial run's.
    """
    from teacherkit.data.image_files import refuse_decompression_bombs

    ranks = ranks or ranks_from_env()
    output, images_dir = Path(output), Path(images_dir)
    with process_group(ranks):
        check_label_output(output, overwrite=overwrite, resume=resume)
        files = list_images(images_dir)
        rel = {f: f.relative_to(images_dir).as_posix() for f in files}
        wanted = _class_filter(experiment, classes)
        settings = _checked_settings(experiment, output, resume, adapter_scale=adapter_scale, classes=classes,
                                     thresholds=score_thresholds, overrides=overrides)
        refuse_decompression_bombs()
        boxes = experiment.teacher(experiment.box_teacher_name("labelling"), adapter_scale=adapter_scale,
                                   overrides=overrides)
        job = Labeller(experiment, boxes, experiment.mask_teacher(adapter_scale=adapter_scale), rel,
                       outside_links(files, images_dir), wanted, score_thresholds)
        report = LabelReport(output=output, images=len(files), with_masks=job.masks is not None)
        done = _start_shards(output, settings, ranks, resume=resume)
        mine = [f for i, f in enumerate(files) if ranks.owns(i)]
        todo = [f for f in mine if rel[f] not in done]
        report.resumed_from = len(mine) - len(todo)
        try:
            _label_shard(job, todo, partial_path(output, ranks.rank), batch_size,
                         progress and (lambda n: progress(report.resumed_from + n, len(mine))), workers)
            wait_for_all(ranks)  # every shard is complete
            if ranks.main:
                _merge(job, output, [rel[f] for f in files], report)
        except OSError as exc:
            kept = shard_paths(output)
            more = f" and {len(kept) - 1} more shard(s)" if len(kept) > 1 else ""
            where = f"; the images labelled so far are kept in {kept[0]}{more}: continue with --resume" if kept else ""
            raise OutputError(f"--output {output}: {describe_os_error(exc)}{where}") from None
    return report


def _checked_settings(experiment: Any, output: Path, resume: bool, **given: Any) -> dict[str, Any]:
    """The settings that decide this run's labels; on ``resume``, checked against the
    partial run's (before any model is loaded)."""
    settings = label_settings(experiment, **given)
    if resume:
        check_resumed_settings(output, settings, partial_files(output))
    return settings


def _start_shards(output: Path, settings: dict[str, Any], ranks: Ranks, *, resume: bool) -> set[str]:
    """Before any shard grows: each process cuts its torn tail (``resume``), rank 0 records
    the settings; the images some shard already holds."""
    if resume:
        cut_torn_tails(output, ranks.rank, ranks.world)
    wait_for_all(ranks)  # every process checked the output and the recorded settings
    if ranks.main and read_settings(output) != settings:
        write_settings(output, settings)  # a fresh run, or one resumed from shards without a record
    wait_for_all(ranks)  # the settings are on disk before any shard
    return done_names(output) if resume else set()


def _label_shard(job: Labeller, todo: list[Path], shard: Path, batch_size: int,
                 progress: Callable[[int], None] | None, workers: int | None) -> None:
    """Label ``todo`` in batches (read by ``workers`` processes), appending each batch's
    records to ``shard`` and syncing them to disk before the next batch starts."""
    shard.parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else workers
    batches = image_batches(todo, job.refused, batch_size, workers=workers, preprocessor=job.boxes.preprocessor)
    with closing(batches), open(shard, "a", encoding="utf-8") as out:  # closing: the readers stop at once
        done = 0
        for chunk in batches:
            for record in label_or_explain(job, chunk, batch_size, shard):
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            done += len(chunk)
            if progress:
                progress(done)


def _merge(job: Labeller, output: Path, names: list[str], report: LabelReport) -> None:
    """Stream every shard into the COCO file (rank 0, after all shards are complete), then
    remove the shards."""
    experiment = job.experiment
    info = {"description": f"pseudo-labels by teacherkit from {experiment.path}",
            "experiment": str(experiment.path), "teachers": experiment.teacher_names,
            "score_thresholds": job.thresholds.record() if job.thresholds else None}
    with open_shards(output, set(names)) as reader:
        counts = write_coco(output, names, reader.get, list(experiment.info.categories), info)
    report.labelled, report.annotations, report.empty_masks = counts.labelled, counts.annotations, counts.empty_masks
    report.skipped = counts.failed
    for shard in shard_paths(output):
        shard.unlink(missing_ok=True)
    settings_path(output).unlink(missing_ok=True)  # last: while a shard is left, so is its record


def _class_filter(experiment: Any, classes: list[str] | None) -> set[int] | None:
    if not classes:
        return None
    import difflib

    by_name = {str(c["name"]): int(c["id"]) for c in experiment.info.categories}
    wanted = set()
    for name in classes:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TeacherkitError(f"--classes {name!r}: not a class of this experiment{hint}; classes: "
                                  f"{', '.join(by_name)}")
        wanted.add(by_name[name])
    return wanted


