"""``teacherkit inspect`` and ``teacherkit validate``.

Exit codes of ``validate``: 0 no errors (warnings allowed), 1 errors, 2 the file cannot be
read or a flag is invalid. Nothing here imports torch; rich and the data modules load
inside the commands so ``teacherkit --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from teacherkit.errors import DataError, OutputExistsError, check_output_file

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from teacherkit.data.findings import Report


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``validate`` to the CLI."""
    app.command("inspect")(inspect_command)
    app.command("validate")(validate_command)


def _console() -> Console:
    import sys

    from rich.console import Console

    # piped output (CI logs, tests) gets a wide fixed width instead of rich's 80 columns
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


# --------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------


def inspect_command(
    data: Annotated[Path, typer.Argument(help="COCO annotation file (.json).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Summarise a COCO dataset (kinds of annotation, classes, counts) and name the
    teachers that would train on it."""
    from teacherkit.cli import get_host
    from teacherkit.data.inspect import describe, inspect_dataset

    host = get_host()
    info = inspect_dataset(data, host=host)
    summary = describe(info, host=host)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{data}[/bold]: {info.num_images} images, {info.num_annotations} annotations, "
                  f"{info.num_classes} classes; {info.images_without_annotations} images without annotations")
    console.print(f"annotation kinds: {', '.join(info.annotation_kinds) or 'none'}")
    teachers = summary["teachers"]
    chosen = ", ".join(teachers) or "none (no installed teacher learns from these kinds)"
    console.print(f"teachers that would train: {chosen}")
    table = Table(title="classes")
    for column, justify in (("index", "right"), ("category id", "right"), ("name", "left"), ("annotations", "right")):
        table.add_column(column, justify=justify)
    for index, (cat, name) in enumerate(zip(info.categories, info.class_names, strict=True)):
        table.add_row(str(index), str(cat["id"]), name, str(info.per_class_counts.get(name, 0)))
    console.print(table)


# --------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------


def validate_command(
    data: Annotated[Path, typer.Argument(help="COCO annotation file (.json).", show_default=False)],
    images: Annotated[Path | None, typer.Option("--images", help="Folder the image file names are relative to "
                                                "[default: the annotation file's folder].", show_default=False)] = None,
    fix: Annotated[Path | None, typer.Option("--fix", metavar="OUT.json", help="Write a repaired copy to OUT.json "
                                             "(never the input) and list each repair.", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", metavar="NAME:FRAC,...", help="Also write a seeded split, "
                                              "e.g. train:0.7,val:0.15,test:0.15 (fractions sum to 1).",
                                              show_default=False)] = None,
    stratify: Annotated[bool, typer.Option("--stratify/--no-stratify", help="Stratify the split by the classes in "
                                           "each image (iterative multi-label stratification).")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split; the same seed gives identical files.")] = 42,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Folder for the split files NAME.json "
                                             "[default: the annotation file's folder].", show_default=False)] = None,
    no_images: Annotated[bool, typer.Option("--no-images", help="Skip the image-file checks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing --fix / --split outputs.")] = False,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Examples listed per check.")] = 3,
) -> None:
    """Check a COCO dataset: every problem with a stable code, its place and whether
    --fix repairs it. Optionally write a repaired copy and a stratified split.
    Exit 0: no errors; 1: errors; 2: unreadable file or invalid flag."""
    from teacherkit.data.fix import read_python
    from teacherkit.data.split import parse_fractions
    from teacherkit.data.validate import validate_coco

    fractions = parse_fractions(split) if split is not None else None
    images_dir = images if images is not None else data.parent
    if not no_images and not images_dir.is_dir():
        raise DataError(f"--images {images_dir}: not a folder")
    split_dir = out if out is not None else data.parent
    _check_outputs(data, fix, [split_dir / f"{name}.json" for name in fractions or {}], force)

    report = validate_coco(data, images_dir=images_dir, check_images=not no_images, split_fractions=fractions)
    result: dict[str, Any] = {"report": report.to_dict(examples=None if as_json else examples)}
    console = None if as_json else _console()
    if console:
        _print_report(console, report, examples)
    final = report
    coco_dict = None
    if report.fatal:
        _finish(result, as_json, 2)
    if fix is not None:
        coco_dict, final = _write_fixed(data, fix, images_dir, not no_images, fractions, result, console, examples,
                                        as_json)
    if fractions is not None:
        if final.errors:
            if console:
                console.print(f"[red]not splitting[/red]: {len(final.errors)} error(s) remain"
                              f"{'' if fix is not None else '; fix them or use --fix OUT.json'}")
            _finish(result, as_json, 1)
        result["splits"] = _write_splits(coco_dict if coco_dict is not None else read_python(data, []), fractions,
                                         seed, stratify, split_dir, console)
        if console and split_dir.resolve() != images_dir.resolve():
            console.print(f"note: image file names stay relative to {images_dir}; pass --images {images_dir} "
                          "when using the split files")
    _finish(result, as_json, final.exit_code)


def _write_fixed(data: Path, fix: Path, images_dir: Path, check_images: bool, fractions: dict[str, float] | None,
                 result: dict[str, Any], console: Any, examples: int, as_json: bool) -> tuple[dict[str, Any], Any]:
    """Repair ``data``, write the copy to ``fix`` and validate it again; the repaired dict
    and its report (repairs and the new report go into ``result`` and on the console)."""
    from teacherkit.atomic import atomic_write_text
    from teacherkit.data.fix import fix_coco
    from teacherkit.data.validate import validate_coco

    coco_dict, repairs = fix_coco(data)
    final = validate_coco(coco_dict, images_dir=images_dir, check_images=check_images, split_fractions=fractions)
    atomic_write_text(fix, json.dumps(coco_dict, ensure_ascii=False) + "\n")
    result["repairs"] = [r.to_dict() for r in repairs]
    result["fixed"] = {"path": str(fix), "report": final.to_dict(examples=None if as_json else examples)}
    if console:
        _print_repairs(console, repairs, fix, examples)
        console.print(f"[bold]after --fix[/bold]: {_summary(final)}")
        if final.findings:
            _print_report(console, final, examples, title="remaining")
    return coco_dict, final


def _check_outputs(data: Path, fix: Path | None, split_files: list[Path], force: bool) -> None:
    """Refuse outputs that are the input, or exist without --force, before any work."""
    source = data.resolve()
    targets = ([("--fix", fix)] if fix is not None else []) + [("--split", p) for p in split_files]
    for flag, target in targets:
        if target.resolve() == source:
            raise DataError(f"{flag} {target}: that is the input file; teacherkit never overwrites its input")
        check_output_file(target, flag)  # a folder there, a parent that is a file, no permission
        if target.exists() and not force:
            raise OutputExistsError(f"{flag} {target} exists; pass --force to overwrite it")
    if fix is not None and any(fix.resolve() == p.resolve() for p in split_files):
        raise DataError(f"--fix {fix} is also a --split output; choose another name")


def _finish(result: dict[str, Any], as_json: bool, code: int) -> None:
    if as_json:
        result["exit_code"] = code
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    # SystemExit, not typer.Exit: in standalone_mode=False click *returns* an Exit's code,
    # which teacherkit.cli.run discards; SystemExit reaches run()'s handler intact.
    raise SystemExit(code)


def _summary(report: Report) -> str:
    state = "[green]ok[/green]" if report.ok else "[red]errors[/red]"
    checks = len(report.by_code())
    return (f"{state}: {len(report.errors)} error(s), {len(report.warnings)} warning(s) in {checks} check(s); "
            f"{report.num_images} images, {report.num_annotations} annotations, {report.num_categories} categories"
            f"{f', {report.images_checked} image files read' if report.images_checked else ''} "
            f"({report.seconds:.2f} s)")


def _print_report(console: Console, report: Report, examples: int, title: str = "findings") -> None:
    from rich.markup import escape
    from rich.table import Table

    if report.source and title == "findings":
        console.print(f"[bold]{escape(report.source)}[/bold]")
    groups = report.by_code()
    if groups:
        table = Table(title=title, show_lines=True)
        table.add_column("check", no_wrap=True)
        for column in ("severity", "count", "fixable"):
            table.add_column(column, no_wrap=True)
        table.add_column("first examples", overflow="fold")
        for code, items in groups.items():
            colour = "red" if items[0].severity == "error" else "yellow"
            shown = "\n".join(escape(f"{f.location}: {f.message}") for f in items[:examples])
            if len(items) > examples:
                shown += f"\n… and {len(items) - examples} more"
            table.add_row(code, f"[{colour}]{items[0].severity}[/{colour}]", str(len(items)),
                          str(sum(f.fixable for f in items)), shown)
        console.print(table)
    console.print(_summary(report))


def _print_repairs(console: Console, repairs: list[Any], path: Path, examples: int) -> None:
    from rich.markup import escape

    console.print(f"[bold]--fix[/bold]: wrote {escape(str(path))} with {len(repairs)} repair(s)")
    groups: dict[str, list[Any]] = {}
    for repair in repairs:
        groups.setdefault(repair.code, []).append(repair)
    for code, items in groups.items():
        console.print(f"  {code}: {len(items)}")
        for repair in items[:examples]:
            console.print(f"    {escape(str(repair.location))}: {escape(repair.action)}")
        if len(items) > examples:
            console.print(f"    … and {len(items) - examples} more")


def _write_splits(coco: dict[str, Any], fractions: dict[str, float], seed: int, stratify: bool, out_dir: Path,
                  console: Console | None) -> dict[str, Any]:
    import os

    import msgspec

    from teacherkit.atomic import atomic_write_bytes
    from teacherkit.data.split import missing_classes, split_class_counts, split_coco

    splits = split_coco(coco, fractions, seed=seed, stratify=stratify)
    written: dict[str, Any] = {}
    staged: list[tuple[Path, Path]] = []
    try:  # every split aside first, then all renamed in: a full disk leaves no split of a set behind
        for name, part in splits.items():
            path = out_dir / f"{name}.json"
            staged.append((path.with_name(f".{path.name}.split.tmp"), path))
            atomic_write_bytes(staged[-1][0], msgspec.json.encode(part) + b"\n")
            written[name] = {"path": str(path), "images": len(part["images"]),
                             "annotations": len(part["annotations"])}
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _path in staged:
            tmp.unlink(missing_ok=True)
    counts = split_class_counts(splits)
    missing = missing_classes(splits)
    for name in splits:
        written[name]["per_class"] = {str(k): v for k, v in counts[name].items()}
    if console:
        from rich.markup import escape
        from rich.table import Table

        names = {c["id"]: c.get("name") for c in coco.get("categories", [])}
        console.print(f"split (seed {seed}, {'stratified' if stratify else 'random'}): annotations per class")
        table = Table()
        table.add_column("class")
        for name in splits:
            table.add_column(f"{name}\n{written[name]['images']} img", justify="right")
        for cid in names:
            table.add_row(escape(f"{names[cid]} ({cid})"), *(str(counts[n].get(cid, 0)) for n in splits))
        console.print(table)
        for name in splits:
            console.print(f"wrote {escape(written[name]['path'])}")
        for split_name, cid, cname in missing:
            console.print(f"[yellow]warning[/yellow]: class {escape(repr(cname))} (id {cid}) has no annotation in "
                          f"split {split_name!r}")
    written["missing_classes"] = [{"split": s, "category_id": c, "name": n} for s, c, n in missing]
    return written
