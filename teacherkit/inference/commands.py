"""``teacherkit label`` and ``teacherkit export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from teacherkit.errors import TeacherkitError


def check_fraction(flag: str, value: float | None, *, zero_allowed: bool = True) -> None:
    """Refuse a threshold outside [0, 1] (or (0, 1] where 0 means nothing), before any work."""
    if value is None:
        return
    low_ok = value >= 0.0 if zero_allowed else value > 0.0
    if not (low_ok and value <= 1.0):  # also refuses NaN
        domain = "[0, 1]" if zero_allowed else "(0, 1]"
        raise TeacherkitError(f"{flag} {value}: must be in {domain}")


_Format = Annotated[str, typer.Option(
    "--format", help="coco (the COCO file only), yolo or yolo-seg (also an Ultralytics dataset: <stem>-yolo/).")]
_ValFraction = Annotated[float, typer.Option(
    "--val-fraction", help="Share of the images in the YOLO dataset's val split (by sorted name, seeded).")]
_Workers = Annotated[int | None, typer.Option(
    "--workers", min=0, help="Processes reading and preprocessing the images, per labelling process "
    "(default: 2, or 1 with one CPU; 0: read in the labelling process).")]
_LinkImages = Annotated[str, typer.Option(
    "--link-images", help="How the YOLO dataset holds the images: symlink, hardlink or copy.")]


def label_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder written by 'teacherkit train'.")],
    images: Annotated[Path, typer.Option("--images", help="Folder of images to label (searched recursively).")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="COCO JSON to write (default: runs/label/exp<N>/labels.json).")] = None,
    classes: Annotated[str | None, typer.Option("--classes", help="Comma-separated class names to keep.")] = None,
    box_threshold: Annotated[float | None, typer.Option("--box-threshold", help="Minimum box score.")] = None,
    text_threshold: Annotated[float | None, typer.Option("--text-threshold", help="Minimum phrase score.")] = None,
    nms: Annotated[float | None, typer.Option("--nms", help="Per-class NMS IoU threshold.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 4,
    adapter_scale: Annotated[
        float, typer.Option("--adapter-scale", min=0.0, max=1.0, help="0 = base model, 1 = fine-tuned.")
    ] = 1.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a partial run of the same --output.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output.")] = False,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu or cuda (default: cuda when available; cuda:LOCAL_RANK in several processes).")] = None,
    score_threshold: Annotated[str | None, typer.Option(
        "--score-threshold", help="Keep detections scoring at least this: 0.3, per class cat=0.4,dog=0.2, or both "
        "(default: the best-F1 threshold training recorded on val, else none).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Ground truth of some of the images: score the pseudo-labels against it.")] = None,
    output_format: _Format = "coco",
    val_fraction: _ValFraction = 0.0,
    link_images: _LinkImages = "symlink",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no threshold line.")] = False,
    workers: _Workers = None,
) -> None:
    """Pseudo-label a folder of images: boxes from the box teacher, masks from SAM when the
    experiment has it, written as one COCO file with scores (and as a YOLO dataset with
    --format yolo|yolo-seg). Runs under torchrun or accelerate launch too: the processes
    share the images and rank 0 writes the files."""
    from teacherkit.cli import get_host
    from teacherkit.inference.experiment import Experiment
    from teacherkit.inference.label import label_images
    from teacherkit.inference.label_dist import device_for, ranks_from_env
    from teacherkit.inference.label_formats import FormatRequest, check_format_output, write_format
    from teacherkit.run_folders import output_or_run_dir

    request = FormatRequest(output_format, val_fraction, link_images)
    _check_label_flags(output, resume=resume, overwrite=overwrite, box_threshold=box_threshold,
                       text_threshold=text_threshold, nms=nms, data=data)
    ranks = ranks_from_env()
    exp = Experiment(experiment, host=get_host(), device=device_for(ranks, device))
    thresholds = _score_thresholds(exp, score_threshold, say=ranks.main and not quiet)
    overrides: dict[str, Any] = {k: v for k, v in {"box_threshold": box_threshold, "text_threshold": text_threshold,
                                                   "nms_iou": nms}.items() if v is not None}
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    with output_or_run_dir(output, "label", file_name="labels.json") as target, \
            _progress(quiet or not ranks.main) as update:
        check_format_output(request, target, overwrite=overwrite)
        report = label_images(exp, images, target, classes=names, overrides=overrides, batch_size=batch_size,
                              resume=resume, overwrite=overwrite, adapter_scale=adapter_scale, progress=update,
                              score_thresholds=thresholds, ranks=ranks, workers=workers)
        if not ranks.main:
            return  # the other processes labelled their share; rank 0 merged and reports
        yolo = write_format(request, report.output, images, overwrite=overwrite)
    _print_report(report, yolo)
    if data is not None:
        _score(report.output, data, exp.info)


def _score(output: Path, data: Path, info: Any) -> None:
    """``--data``: score the labels written, print it, keep it next to them."""
    from teacherkit.atomic import atomic_write_json
    from teacherkit.inference.label_scores import describe_scores, score_labels, scores_path

    scores = score_labels(output, data, info)
    for line in describe_scores(scores):
        typer.echo(line)
    atomic_write_json(scores_path(output), scores, indent=2)


def _score_thresholds(exp: Any, spec: str | None, *, say: bool) -> Any:
    """``--score-threshold`` over the recorded default; the default is named on stderr."""
    from teacherkit.inference.label_thresholds import describe_default, resolve_score_thresholds

    thresholds = resolve_score_thresholds(exp, spec)
    said = describe_default(thresholds)
    if said and say:
        typer.echo(said, err=True)
    return thresholds


def _check_label_flags(output: Path | None, *, resume: bool, overwrite: bool, box_threshold: float | None,
                       text_threshold: float | None, nms: float | None, data: Path | None) -> None:
    if data is not None and not data.is_file():
        raise TeacherkitError(f"--data {data}: file not found")
    check_fraction("--box-threshold", box_threshold)
    check_fraction("--text-threshold", text_threshold)
    check_fraction("--nms", nms, zero_allowed=False)
    if output is None and (resume or overwrite):
        raise TeacherkitError(f"--{'resume' if resume else 'overwrite'} needs --output: the file to "
                              f"{'continue' if resume else 'replace'}")
    if output is not None:  # again in label_images; here before any model is loaded
        from teacherkit.inference.label import check_label_output

        check_label_output(output, overwrite=overwrite, resume=resume)


def _print_report(report: Any, yolo: Any = None) -> None:
    """What rank 0 (or the one process) says at the end: skipped images, empty masks, counts
    (and the YOLO dataset, when one was written)."""
    for file_name, reason in report.skipped:
        typer.echo(f"warning: skipped {file_name}: {reason}", err=True)
    kind = "boxes and masks" if report.with_masks else "boxes"
    if report.empty_masks:
        typer.echo(f"warning: {report.empty_masks} boxes got an empty SAM mask and are kept without one", err=True)
    typer.echo(f"labelled {report.labelled} of {report.images} images ({report.annotations} {kind}"
               f"{f', {len(report.skipped)} skipped' if report.skipped else ''}) -> {report.output}")
    if yolo is not None:
        from teacherkit.inference.label_formats import describe

        typer.echo(describe(yolo))


class _progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def __enter__(self) -> Any:
        import sys

        if self.quiet or not sys.stderr.isatty():
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task("labelling", total=None)

        def update(done: int, total: int) -> None:
            self.bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def export_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder written by 'teacherkit train'.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Folder to write, one sub-folder per teacher (default: runs/export/exp<N>).")] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Merge LoRA into full models loadable by from_pretrained.")
    ] = False,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated teachers to export.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output.")] = False,
) -> None:
    """Export adapter bundles (default) or merged full models (--merge)."""
    from teacherkit.cli import get_host
    from teacherkit.errors import check_output_dir
    from teacherkit.inference.experiment import Experiment
    from teacherkit.inference.export import export_experiment
    from teacherkit.run_folders import output_or_run_dir

    if output is None and overwrite:
        raise TeacherkitError("--overwrite needs --output: the folder to replace")
    if output is not None:
        check_output_dir(output, "--output")
    exp = Experiment(experiment, host=get_host(), device="cpu")
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    with output_or_run_dir(output, "export") as target:
        written = export_experiment(exp, target, merge=merge, overwrite=overwrite, teachers=names)
    for name, path in written.items():
        typer.echo(f"{name}: {'merged model' if merge else 'adapter bundle'} -> {path}")


def register(app: typer.Typer) -> None:
    app.command("label")(label_command)
    app.command("export")(export_command)
