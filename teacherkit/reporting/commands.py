"""``teacherkit report``: the experiment as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    experiment: Annotated[Path, typer.Argument(help="Experiment folder written by 'teacherkit train'.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the page (default: EXPERIMENT/report.html).")
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", help="Output of 'teacherkit evaluate --json' to show base vs tuned "
                                          "(default: EXPERIMENT/evaluation.json when present)."),
    ] = None,
) -> None:
    """Write one HTML page (pictures inlined, no network) with the run's config, data,
    metrics per teacher, curves and prediction grids."""
    import json

    from teacherkit.atomic import atomic_write_text
    from teacherkit.cli import fail
    from teacherkit.layout import ExperimentLayout
    from teacherkit.reporting.report import build_report

    layout = ExperimentLayout(experiment)
    if not layout.root.is_dir():
        fail(f"{experiment}: folder not found")
    if not (layout.config.is_file() or layout.metadata.is_file()):
        fail(f"{experiment}: not a teacherkit experiment (no {layout.config.name} or {layout.metadata.name})")
    result = None
    if evaluation is not None:
        try:
            result = json.loads(evaluation.read_text(encoding="utf-8"))
        except FileNotFoundError:
            fail(f"--evaluation {evaluation}: file not found")
        except (OSError, ValueError) as exc:
            fail(f"--evaluation {evaluation}: not the JSON of 'teacherkit evaluate --json': {exc}")
        if not isinstance(result, dict) or not isinstance(result.get("teachers"), dict):
            fail(f"--evaluation {evaluation}: not the JSON of 'teacherkit evaluate --json' (no 'teachers')")
    target = output or layout.root / "report.html"
    atomic_write_text(target, build_report(layout.root, result))
    typer.echo(f"report written to {target}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
