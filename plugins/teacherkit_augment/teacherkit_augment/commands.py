"""The ``teacherkit augment`` command group: ``list`` and ``preview``.

Registered through ``teacherkit_register_commands``; albumentations, PIL and the COCO
loader are imported inside the commands so ``teacherkit --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from teacherkit_augment.characteristics import INTENSITIES


def _host() -> Any:
    from teacherkit.plugins import current_host

    return current_host()


def parse_names(raw: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def parse_environment(items: list[str] | None) -> dict[str, str]:
    """``["lighting=variable,camera=fixed", "weather=rain"]`` → a dict; each flag may
    hold several comma-separated pairs."""
    from teacherkit_augment.registry import AugmentationError

    env: dict[str, str] = {}
    for item in items or []:
        for pair in parse_names(item):
            key, sep, value = pair.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise AugmentationError(f"--environment {pair!r}: expected KEY=VALUE, e.g. lighting=variable")
            env[key.strip()] = value.strip()
    return env


def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """List every augmentation characteristic and environment fact, with why it helps."""
    from teacherkit_augment.registry import DEFAULT_ENVIRONMENT, get_augmentation_registry

    registry = get_augmentation_registry(_host())
    rows = [
        {"name": s.name, "group": s.group, "values": list(s.values), "why": s.why, "plugin": s.plugin}
        for s in registry.specs
    ]
    if as_json:
        typer.echo(json.dumps({"characteristics": rows, "intensities": list(INTENSITIES),
                               "default_environment": DEFAULT_ENVIRONMENT}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="augmentation characteristics")
    for column in ("name", "kind", "values", "why it helps", "plugin"):
        table.add_column(column, overflow="fold")
    for row in rows:
        kind = "object trait" if row["group"] == "object" else "environment"
        table.add_row(row["name"], kind, "|".join(row["values"]) or "-", row["why"], row["plugin"])
    console = Console()
    console.print(table)
    default = ", ".join(f"{k}={v}" for k, v in DEFAULT_ENVIRONMENT.items())
    console.print(f"intensity: {' | '.join(INTENSITIES)} (default medium). "
                  f"With nothing configured, training uses {default}.", highlight=False)


def preview_command(
    data: Annotated[Path, typer.Argument(help="COCO annotation file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.", show_default=False)],
    images: Annotated[
        Path | None,
        typer.Option("--images", help="Folder the images' file_name is relative to; default: DATA's folder."),
    ] = None,
    characteristics: Annotated[
        str | None, typer.Option("--characteristics", "-c", help="Comma-separated object traits, e.g. rigid,moving.")
    ] = None,
    environment: Annotated[
        list[str] | None,
        typer.Option("--environment", "-e", help="KEY=VALUE scene facts, comma-separated or repeated, "
                     "e.g. lighting=variable,camera=handheld."),
    ] = None,
    intensity: Annotated[str, typer.Option("--intensity", help="low, medium or high.")] = "medium",
    n: Annotated[int, typer.Option("--n", min=1, max=256, help="Number of augmented tiles.")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first tile (tile i uses seed + i).")] = 0,
    tile: Annotated[int, typer.Option("--tile", min=32, max=2048, help="Tile size in pixels.")] = 256,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write a PNG grid of augmented samples with boxes and masks drawn, to look at
    before training. With no characteristics and no environment it shows the default
    training augmentation."""
    from teacherkit.errors import OutputExistsError
    from teacherkit_augment.preview import load_samples, render_grid, write_png
    from teacherkit_augment.registry import get_augmentation_registry, with_defaults

    if out.exists() and not overwrite:  # fail before any work
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    registry = get_augmentation_registry(_host())
    chars, env = with_defaults(parse_names(characteristics), parse_environment(environment))
    pipeline = registry.get_pipeline(chars, env, intensity, source="cli")
    from teacherkit_augment.pipeline import SampleAugmenter

    source = load_samples(data, images, limit=n)
    grid = render_grid(source, SampleAugmenter(pipeline), n=n, tile=tile, seed=seed)
    write_png(grid, out, overwrite=overwrite)
    typer.echo(f"wrote {out} ({grid.width}x{grid.height}, {n} samples; {pipeline!r})")


def register(app: typer.Typer) -> None:
    """Add the ``augment`` group to the root app."""
    group = typer.Typer(name="augment", no_args_is_help=True, add_completion=False,
                        help="Characteristic-based augmentation: list what exists, preview a pipeline.")
    group.command("list")(list_command)
    group.command("preview")(preview_command)
    app.add_typer(group, name="augment")
