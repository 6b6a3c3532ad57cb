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
    data: Annotated[Path, typer.Option("--data", help="COCO JSON to evaluate on (a test split).")],
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
    """Score each teacher on --data next to its base model (adapter off), and on --reference."""
    from teacherkit.cli import fail, get_host
    from teacherkit.evaluation.run import evaluate_experiment
    from teacherkit.inference.experiment import Experiment

    for path, flag in ((data, "--data"), (reference, "--reference")):
        if path is not None and not path.is_file():
            fail(f"{flag} {path}: file not found")
    exp = Experiment(experiment, host=get_host(), device=device)
    names = [m.strip() for m in models.split(",")] if models else None
    result = evaluate_experiment(exp, data, images, reference=reference, reference_images=reference_images,
                                 adapter_scale=adapter_scale, batch_size=batch_size, teachers=names)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    print_tables(result)


def print_tables(result: dict[str, Any]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    scale = result["adapter_scale"]
    for name, entry in result["teachers"].items():
        table = Table(title=f"{name}: base vs fine-tuned" + (f" (adapter scale {scale})" if scale != 1.0 else ""))
        table.add_column("metric")
        columns = [("data", "base"), ("data", "tuned")]
        if "reference" in entry:
            columns += [("reference", "base"), ("reference", "tuned")]
        for key, variant in columns:
            table.add_column(variant if key == "data" else f"ref {variant}", justify="right")
        table.add_column("gain", justify="right")
        if "reference" in entry:
            table.add_column("retention", justify="right")
        table.caption = "base = adapter off; gain = tuned - base on --data" + (
            "; ref = on --reference; retention = ref tuned / ref base" if "reference" in entry else "")
        metrics = [m for m in TABLE_METRICS if m in entry["data"]["tuned"]]
        for metric in metrics:
            row = [metric] + [f"{entry[k][v].get(metric, 0.0):.4f}" for k, v in columns]
            row.append(f"{entry['data']['tuned'][metric] - entry['data']['base'][metric]:+.4f}")
            if "reference" in entry:
                base = entry["reference"]["base"][metric]
                row.append(f"{100 * entry['reference']['tuned'][metric] / base:.0f}%" if base > 0 else "-")
            table.add_row(*row)
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
