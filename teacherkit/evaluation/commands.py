"""``teacherkit evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

#: Metrics shown in the table (all of them go to --json).
TABLE_METRICS = ("bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "mIoU", "mDice",
                 "segm_AP", "segm_AP50")


def evaluate_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder written by 'teacherkit train'.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="COCO JSON to evaluate on (a test split; default: the test or validation "
                                    "file the experiment recorded when it was trained)."),
    ] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Image folder (default: the JSON's folder).")] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="A second COCO JSON (e.g. the source domain) to measure retention."),
    ] = None,
    reference_images: Annotated[
        Path | None, typer.Option("--reference-images", help="Image folder of --reference.")
    ] = None,
    adapter_scale: Annotated[
        float,
        typer.Option("--adapter-scale", min=0.0, max=1.0,
                     help="0 = base model, 1 = fine-tuned; in between interpolates."),
    ] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 4,
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated teachers to evaluate.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu or cuda (default: cuda when available).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every metric as JSON.")] = False,
) -> None:
    """Score each teacher on --data next to its base model (adapter off), and on --reference.

    Categories are matched to the experiment's by name. The result (what --json prints) is
    also written to EXPERIMENT/evaluation.json for 'teacherkit report', and the base and
    tuned prediction grids to EXPERIMENT/evaluation/<teacher>/pictures/."""
    from teacherkit.atomic import atomic_write_json
    from teacherkit.cli import fail, get_host
    from teacherkit.evaluation.run import evaluate_experiment, recorded_data
    from teacherkit.inference.experiment import Experiment
    from teacherkit.reporting.report import EVALUATION_PICTURES

    for path, flag in ((data, "--data"), (reference, "--reference")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: file not found")
    exp = Experiment(experiment, host=get_host(), device=device)
    if data is None:
        split, data, recorded_images = recorded_data(exp)
        images = images or recorded_images
        _notice(f"no --data given: evaluating on the experiment's recorded {split} file {data}")
    names = [m.strip() for m in models.split(",")] if models else None
    result = evaluate_experiment(exp, data, images, reference=reference, reference_images=reference_images,
                                 adapter_scale=adapter_scale, batch_size=batch_size, teachers=names,
                                 pictures=exp.path / EVALUATION_PICTURES, notice=_notice)
    result["seed"] = exp.config.training.seed
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_tables(result)
        typer.echo(f"one training run, seed {result['seed']}: another seed moves these figures by a few "
                   "hundredths; compare runs over several seeds (--seed)")
    # after the output: a read-only experiment folder fails here, with the scores already shown
    atomic_write_json(exp.layout.evaluation, result, indent=2)




def _notice(line: str) -> None:
    """A line for the person running the command, on stderr (stdout may be --json)."""
    typer.echo(f"note: {line}", err=True)


#: Shown where a metric is undefined (COCOeval's -1: no ground truth of that class), never as 0.
UNDEFINED = "\u2013"


def _fmt(value: Any) -> str:
    return UNDEFINED if value is None else f"{value:.4f}"


def _columns(entry: dict[str, Any]) -> list[tuple[str, str]]:
    columns = [("data", "base"), ("data", "tuned")]
    if "reference" in entry:
        columns += [("reference", "base"), ("reference", "tuned")]
    return columns


def _shown_metrics(metrics: dict[str, Any]) -> list[str]:
    """The table rows: the built-in headline metrics, or, for a teacher that scores itself
    (a plugin's ``TeacherSpec.metric``), every number it returned."""
    shown = [m for m in TABLE_METRICS if m in metrics]
    if shown:
        return shown
    return [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _metric_table(name: str, entry: dict[str, Any], scale: float) -> Any:
    from rich.table import Table

    table = Table(title=f"{name}: base vs fine-tuned" + (f" (adapter scale {scale})" if scale != 1.0 else ""))
    table.add_column("metric")
    columns = _columns(entry)
    for key, variant in columns:
        table.add_column(variant if key == "data" else f"ref {variant}", justify="right")
    table.add_column("gain", justify="right")
    if "reference" in entry:
        table.add_column("retention", justify="right")
    table.caption = "base = adapter off; gain = tuned - base on --data" + (
        "; ref = on --reference; retention = ref tuned / ref base" if "reference" in entry else "")
    for metric in _shown_metrics(entry["data"]["tuned"]):
        row = [metric] + [_fmt(entry[k][v].get(metric)) for k, v in columns]
        tuned, base = entry["data"]["tuned"][metric], entry["data"]["base"][metric]
        row.append(UNDEFINED if tuned is None or base is None else f"{tuned - base:+.4f}")
        if "reference" in entry:
            ref_base, ref_tuned = entry["reference"]["base"][metric], entry["reference"]["tuned"][metric]
            row.append(f"{100 * ref_tuned / ref_base:.0f}%" if ref_base and ref_tuned is not None else "-")
        table.add_row(*row)
    return table


def _per_class_table(name: str, entry: dict[str, Any], key: str) -> Any:
    """AP per class of one COCO metric (``bbox_per_class_AP``); undefined shows as a dash."""
    from rich.table import Table

    table = Table(title=f"{name}: {key.replace('_per_class_AP', '')} AP per class")
    table.add_column("class")
    columns = _columns(entry)
    for data_key, variant in columns:
        table.add_column(variant if data_key == "data" else f"ref {variant}", justify="right")
    table.caption = f"{UNDEFINED} = no ground truth of the class in that file (AP undefined)"
    for cls in entry["data"]["tuned"][key]:
        table.add_row(cls, *[_fmt(entry[k][v].get(key, {}).get(cls)) for k, v in columns])
    return table


def print_tables(result: dict[str, Any]) -> None:
    import sys

    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    for name, entry in result["teachers"].items():
        console.print(_metric_table(name, entry, result["adapter_scale"]))
        for key in ("bbox_per_class_AP", "segm_per_class_AP"):
            if entry["data"]["tuned"].get(key):
                console.print(_per_class_table(name, entry, key))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
